"""The real-world evaluation's pieces against values known by construction."""
from __future__ import annotations

import numpy as np
import pytest

from training.data.prepare import REAL_SHARE, split_of

skimage_color = pytest.importorskip("skimage.color")


def test_the_real_split_is_a_fixed_share_of_the_extra_faces_only():
    keys = [f"utkx_{a}_{g}_{r}_2017{n:06d}" for a in range(1, 60) for g in (0, 1) for r in range(5)
            for n in range(4)]
    splits = [split_of(k, "utkface_extra") for k in keys]
    share = splits.count("real") / len(splits)
    assert abs(share - REAL_SHARE / 100) < 0.04
    assert splits == [split_of(k, "utkface_extra") for k in keys]          # decided by the name alone
    assert {"train", "val", "test"} <= set(splits)
    for dataset in ("utkface", "celebahq", "ffhq"):
        assert "real" not in {split_of(k, dataset) for k in keys}


def _patch_of_lab(L: float, a: float, b: float) -> np.ndarray:
    rgb = skimage_color.lab2rgb(np.array([[[L, a, b]]], np.float64))
    return np.full((256, 256, 3), np.round(rgb[0, 0, ::-1] * 255), np.uint8)   # BGR


@pytest.mark.parametrize("L,b,expected_bin", [(75, 12, "1 very light"), (60, 16, "3 intermediate"), (55, 20, "4 tan"),
                                              (45, 20, "5 brown"), (30, 15, "6 dark")])
def test_ita_of_a_uniform_skin_patch(L, b, expected_bin):
    from training.evaluate_real import ita_bin, ita_degrees
    lm = np.full((468, 2), 128.0, np.float32)
    ita = ita_degrees(_patch_of_lab(L, 10, b), lm)
    truth = np.degrees(np.arctan((L - 50) / b))
    assert abs(ita - truth) < 2.0
    assert ita_bin(ita) == expected_bin


def test_delta_e_and_mean_lab():
    from training.evaluate_real import delta_e, mean_lab
    a = _patch_of_lab(60, 12, 18)
    where = np.ones(a.shape[:2], bool)
    np.testing.assert_allclose(mean_lab(a, where), [60, 12, 18], atol=0.6)
    assert delta_e(mean_lab(a, where), mean_lab(a, where)) == 0.0
    # CIEDE2000 of a pure lightness step of 5 at L=60 is 5 / S_L (S_L = 1 + 0.015 (L-50)^2 / sqrt(20 + (L-50)^2)).
    s_l = 1 + 0.015 * 100 / np.sqrt(20 + 100)
    d = delta_e(np.array([62.5, 12, 18.0]), np.array([57.5, 12, 18.0]))
    assert abs(d - 5 / s_l) < 0.02


def test_top1_counts_faces_nearest_to_their_own_truth():
    from training.evaluate_real import _top1
    eye = np.eye(4, dtype=np.float32)
    rows = [dict(emb_true=eye[i], emb_x=eye[i if i < 3 else 0]) for i in range(4)]
    assert _top1(rows, "x") == 0.75
