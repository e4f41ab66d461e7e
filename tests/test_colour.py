"""The inpainter's skin-tone correction (models.colour): features, the Lab shift, numpy / torch parity,
the fit, and the shipped coefficients on a face with a known true lower face."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import torch

from models.colour import (FEATURES, RING_PX, ColourCorrection, bgr_to_lab, colour_path, file_sha256,
                           lab_features, lab_from_bgr_torch)
from training.fit_colour import fit_ridge

SIZE = 128


def _lab_to_bgr(lab) -> np.ndarray:
    px = cv2.cvtColor(np.array([[lab]], np.float32), cv2.COLOR_Lab2BGR)[0, 0] * 255
    return np.clip(px + 0.5, 0, 255).astype(np.uint8)


def _hole(size=SIZE) -> np.ndarray:
    hole = np.zeros((size, size), np.float32)
    cv2.ellipse(hole, (size // 2, int(size * 0.62)), (40, 30), 0, 0, 360, 1.0, -1)
    return hole


def _picker(feature: str, sign: float = 1.0) -> np.ndarray:
    """Weights whose shift is sign * (that feature) - mean_generated: "make the hole that colour"."""
    w = np.zeros((len(FEATURES) * 3 + 1, 3))
    for c in range(3):
        w[FEATURES.index(feature) * 3 + c, c] = sign
        w[FEATURES.index("mean_generated") * 3 + c, c] = -1.0
    return w


def test_the_hole_takes_the_colour_the_weights_predict_from_the_skin_around_it():
    skin, fill = (62.0, 14.0, 20.0), (70.0, 19.0, 12.0)    # a fill lighter, pinker, less yellow than the skin
    window = np.full((1, SIZE, SIZE, 3), _lab_to_bgr(skin), np.uint8)
    window[0, :10] = (30, 200, 30)                         # far from the hole: not in the 6 px ring
    hole = _hole()[None]
    generated = window.copy()
    generated[0][hole[0] > 0.5] = _lab_to_bgr(fill)
    out = ColourCorrection(_picker("mean_ring6"), {}).correct(window, hole, generated)
    got = bgr_to_lab(out)[0][hole[0] > 0.5].mean(0)
    want = bgr_to_lab(window)[0][hole[0] > 0.5].mean(0)     # the skin's colour, as uint8 pixels hold it
    assert np.abs(got - want).max() < 0.6
    # Every pixel outside the hole is the generated window's, bit for bit.
    assert np.array_equal(out[0][hole[0] <= 0.5], generated[0][hole[0] <= 0.5])


def test_features_are_the_region_statistics_they_are_named_after():
    """Rings by square dilation at the window's resolution; statistics on the sampled grid [::2, ::2]."""
    rng = np.random.default_rng(1)
    lab = rng.normal((60, 10, 15), 3, (1, SIZE, SIZE, 3)).astype(np.float32)
    hole = _hole()[None] > 0.5
    f = lab_features(lab, lab, hole)[0].reshape(-1, 3)
    grid = np.zeros_like(hole[0])
    grid[::2, ::2] = True
    ring6 = (cv2.dilate(hole[0].astype(np.uint8), np.ones((13, 13), np.uint8)) > 0) & ~hole[0] & grid
    assert np.allclose(f[FEATURES.index("mean_ring6")], lab[0][ring6].mean(0), atol=1e-4)
    values = np.sort(lab[0][ring6], axis=0)
    assert np.allclose(f[FEATURES.index("median_ring6")], values[(len(values) - 1) // 2])
    assert np.allclose(f[FEATURES.index("mean_generated")], lab[0][hole[0] & grid].mean(0), atol=1e-4)
    top = np.zeros_like(hole[0])
    top[: SIZE // 3] = True
    assert np.allclose(f[FEATURES.index("mean_top_third")], lab[0][top & ~hole[0] & grid].mean(0), atol=1e-4)
    # The sampled statistics are those of all pixels within noise (what makes a quarter enough).
    full_ring6 = (cv2.dilate(hole[0].astype(np.uint8), np.ones((13, 13), np.uint8)) > 0) & ~hole[0]
    assert np.abs(f[FEATURES.index("mean_ring6")] - lab[0][full_ring6].mean(0)).max() < 0.3


def test_a_face_without_visible_skin_or_without_a_hole_is_left_alone():
    window = np.full((2, SIZE, SIZE, 3), 128, np.uint8)
    holes = np.stack([np.ones((SIZE, SIZE), np.float32), np.zeros((SIZE, SIZE), np.float32)])
    generated = np.full_like(window, 90)
    w = np.zeros((len(FEATURES) * 3 + 1, 3))
    w[-1] = (10.0, 5.0, -5.0)                  # a bias: any face with features would be shifted
    assert np.array_equal(ColourCorrection(w, {}).correct(window, holes, generated), generated)


def _natural_windows(n=3, seed=0):
    """Smooth skin-like windows with texture, holes of different shapes, and a fill unlike the skin."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    windows, holes, generated = [], [], []
    for i in range(n):
        base = rng.uniform(60, 200, 3)
        img = base + 40 * yy[..., None] * rng.uniform(-1, 1, 3) + rng.normal(0, 6, (SIZE, SIZE, 3))
        windows.append(np.clip(img, 0, 255).astype(np.uint8))
        h = np.zeros((SIZE, SIZE), np.float32)
        cv2.ellipse(h, (64 + 8 * i, 80), (30 + 10 * i, 25 + 5 * i), 10 * i, 0, 360, 1.0, -1)
        holes.append(h)
        g = windows[-1].copy()
        g[h > 0.5] = np.clip(base[::-1] + rng.normal(0, 5, (int((h > 0.5).sum()), 3)), 0, 255)
        generated.append(g)
    return np.stack(windows), np.stack(holes), np.stack(generated)


def test_the_torch_path_corrects_as_the_numpy_path(one_torch_thread):
    windows, holes, generated = _natural_windows()
    correction = ColourCorrection.for_inpainter("inpainter_fast")
    assert correction is not None
    want = correction.correct(windows, holes, generated).astype(np.float32)
    t = lambda a: torch.from_numpy(a.astype(np.float32)).permute(0, 3, 1, 2)
    got = correction.correct_torch(t(windows), torch.from_numpy(holes)[:, None], t(generated))
    got = got.permute(0, 2, 3, 1).numpy()
    diff = np.abs(got - want)
    assert np.abs(want - generated).max() > 3       # the correction did move these fills
    assert diff.max() <= 2.5 and diff.mean() < 0.6
    outside = holes <= 0.5
    assert np.array_equal(got[outside], generated[outside].astype(np.float32))


def test_a_hole_of_one_odd_row_is_corrected_from_its_own_pixels_on_both_paths(one_torch_thread):
    """No pixel of a 1-px sliver on an odd row lies on the sampled grid: both paths use all of it."""
    windows, _, _ = _natural_windows(1)
    hole = np.zeros((1, SIZE, SIZE), np.float32)
    hole[0, 81, 30:90] = 1.0
    generated = windows.copy()
    generated[0, 81, 30:90] = (40, 60, 200)
    w = _picker("mean_ring3")
    want = ColourCorrection(w, {}).correct(windows, hole, generated)
    assert np.abs(want[0, 81, 30:90].astype(int) - windows[0, 80, 30:90].astype(int)).mean() < 25  # recoloured
    t = lambda a: torch.from_numpy(a.astype(np.float32)).permute(0, 3, 1, 2)
    got = ColourCorrection(w, {}).correct_torch(t(windows), torch.from_numpy(hole)[:, None], t(generated))
    assert np.abs(got.permute(0, 2, 3, 1).numpy() - want).max() <= 2.5


def test_the_torch_lab_is_opencvs():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    got = lab_from_bgr_torch(torch.from_numpy(x).permute(0, 3, 1, 2).double()).permute(0, 2, 3, 1).numpy()
    assert np.abs(got - bgr_to_lab(x)).max() < 0.4


def test_the_fit_recovers_a_known_linear_relation():
    rng = np.random.default_rng(3)
    X = rng.normal(50, 10, (3000, 6))
    W = rng.normal(0, 0.5, (7, 3))
    Y = np.hstack([X, np.ones((3000, 1))]) @ W + rng.normal(0, 0.05, (3000, 3))
    assert np.abs(fit_ridge(X, Y, lam=1.0) - W).max() < 0.02


def test_the_shipped_correction_was_fitted_on_the_shipped_inpainter():
    path = colour_path("inpainter_fast")
    spec = json.loads(path.read_text())
    assert spec["inpainter_sha256"] == file_sha256(path.with_name("inpainter_fast.onnx"))
    assert spec["state_dict_sha256"] == file_sha256(path.with_name("inpainter_fast.pt"))
    assert tuple(spec["features"]) == FEATURES and tuple(spec["ring_px"]) == RING_PX
    assert spec["fitted"]["split"] == "train"
    # It made the held-out real faces' colour better in every skin-tone bin it measured.
    real = spec["measured"]["real"]
    for b, de in real["corrected"]["by_ita"].items():
        assert de < real["uncorrected"]["by_ita"][b], b


def test_a_correction_fitted_on_another_inpainter_is_not_applied(tmp_path, caplog):
    shipped = colour_path("inpainter_fast")
    (tmp_path / "inpainter_fast.onnx").write_bytes(b"a retrained inpainter")
    (tmp_path / "inpainter_fast_colour.json").write_text(shipped.read_text())
    with caplog.at_level(logging.WARNING):
        assert ColourCorrection.for_inpainter(tmp_path / "inpainter_fast.onnx") is None
    assert "fitted on another inpainter_fast.onnx" in caplog.text
    # A folder with the torch state dict only (the GPU path's) is checked on the .pt.
    (tmp_path / "inpainter_fast.onnx").unlink()
    (tmp_path / "inpainter_fast.pt").write_bytes(b"retrained weights")
    assert ColourCorrection.for_inpainter(tmp_path / "inpainter_fast.onnx") is None
    (tmp_path / "inpainter_fast.pt").write_bytes(shipped.with_name("inpainter_fast.pt").read_bytes())
    assert ColourCorrection.for_inpainter(tmp_path / "inpainter_fast.onnx") is not None
    assert ColourCorrection.for_inpainter(tmp_path / "inpainter_absent.onnx") is None


def test_the_shipped_correction_brings_the_astronauts_redrawn_skin_closer_to_hers():
    """End to end on a face whose true lower face is known (the product's window, hole and fill):
    the mean colour of the redrawn covering against her own skin there, in CIEDE2000."""
    from skimage.color import deltaE_ciede2000
    from stream import Unmasker
    from tests.faces import astronaut, masked_astronaut
    from training.metrics import mean_lab

    img, gt = masked_astronaut()
    truth = mean_lab(astronaut(), gt > 0)
    with Unmasker() as u:
        reconstructor = u.compositor.reconstructor
        assert reconstructor.colour is not None            # the product corrects by default
        corrected = deltaE_ciede2000(mean_lab(u.process(img).image, gt > 0), truth)
        reconstructor.colour = None
        uncorrected = deltaE_ciede2000(mean_lab(u.process(img).image, gt > 0), truth)
    assert corrected < uncorrected - 0.5, (corrected, uncorrected)


# -- the own-face render's correction (stream.reference) ---------------------------------------------

def test_the_ramped_offset_moves_the_holes_mean_by_the_shift_and_leaves_its_border_alone():
    fill_lab, shift = np.array([55.0, 12.0, 18.0]), np.array([3.0, -2.0, 1.5])
    hole = _hole() > 0.5
    fill = np.full((SIZE, SIZE, 3), _lab_to_bgr(fill_lab), np.uint8)
    out = np.clip(fill + ColourCorrection.ramped_offset(fill, hole, shift) + 0.5, 0, 255).astype(np.uint8)
    moved = bgr_to_lab(out)[hole].mean(0) - bgr_to_lab(fill)[hole].mean(0)
    # A BGR offset (linear in BGR, not in Lab, stronger inside than at the ramp): within 0.75 of a
    # 3-unit shift; training.fit_colour measures the correction applied this way.
    assert np.abs(moved - shift).max() < 0.75
    # Outside the hole nothing moves; on its outermost pixels a quarter of what moves inside (the
    # relighting matched that border).
    edge = hole & ~cv2.erode(hole.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    core = cv2.erode(hole.astype(np.uint8), np.ones((21, 21), np.uint8)).astype(bool)
    assert np.array_equal(out[~hole], fill[~hole])
    at_edge = np.abs(out[edge].astype(int) - fill[edge].astype(int)).max()
    inside = np.abs(out[core].astype(int) - fill[core].astype(int)).max()
    assert inside >= 4 and at_edge <= 0.35 * inside + 1


def test_the_shipped_own_face_correction_was_fitted_on_the_training_split_and_helped_held_out_faces():
    from models.colour import REFERENCE_COLOUR_PATH
    spec = json.loads(REFERENCE_COLOUR_PATH.read_text())
    assert spec["fitted"]["split"] == "train" and "--path own-face" in spec["fitted"]["command"]
    assert ColourCorrection.for_reference() is not None
    real = spec["measured"]["real"]
    assert real["corrected"]["mean"] < real["uncorrected"]["mean"] - 0.3


def test_the_own_face_render_is_recoloured_inside_the_hole_only():
    """The astronaut's own photo as her reference, over her masked photo's window."""
    from stream.alignment import align_face, load_canonical_shape, transform_points
    from stream.reconstruct import frame_to_window
    from stream.reference import ReferenceFace
    from tests.faces import astronaut, astronaut_landmarks, masked_astronaut
    img, gt = masked_astronaut()
    lm = astronaut_landmarks()
    m = frame_to_window(align_face(lm, load_canonical_shape()), SIZE)
    window = cv2.warpAffine(img, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    hole = (cv2.warpAffine(gt, m, (SIZE, SIZE)) > 127).astype(np.float32)
    renders = []
    for on in (False, True):
        ref = ReferenceFace(astronaut(), lm)
        ref.correct_colour = on
        renders.append(ref.render(transform_points(lm, m), window, hole, window.copy())[0])
    off, on = renders
    inside = hole > 0.5
    assert np.array_equal(off[~inside], on[~inside])
    assert np.abs(off[inside].astype(int) - on[inside].astype(int)).max() >= 1   # it did act


def test_skin_balance_gives_every_bin_the_same_weight_up_to_the_cap():
    from training.fit_colour import MAX_BALANCE, skin_balance
    bins = np.array(["light"] * 900 + ["brown"] * 90 + ["dark"] * 10)
    w = skin_balance(bins, cap=100.0)
    totals = {b: w[bins == b].sum() for b in ("light", "brown", "dark")}
    assert np.allclose(list(totals.values()), len(bins) / 3) and np.isclose(w.mean(), 1.0)
    capped = skin_balance(bins)
    assert np.isclose(capped.mean(), 1.0) and capped.max() <= MAX_BALANCE * 1.001
    assert capped[bins == "dark"][0] >= capped[bins == "brown"][0] > capped[bins == "light"][0]


def test_a_weighted_fit_follows_the_faces_it_weighs():
    # Two groups whose shifts differ by a constant the features cannot see: the plain fit lands near the
    # many, a fit that weighs the few up lands between them, nearer the few.
    from training.fit_colour import fit_ridge, skin_balance
    rng = np.random.default_rng(4)
    X = rng.normal(50, 10, (1000, 3))
    group = np.array(["many"] * 950 + ["few"] * 50)
    Y = np.where(group[:, None] == "few", 3.0, 0.0) + np.zeros((1000, 3))
    A = np.hstack([X, np.ones((1000, 1))])
    plain = (A @ fit_ridge(X, Y, lam=1e-6))[:, 0].mean()
    balanced = (A @ fit_ridge(X, Y, lam=1e-6, weights=skin_balance(group, cap=100.0)))[:, 0].mean()
    # Over all faces the plain fit predicts the faces' mean shift (0.15), the balanced one the
    # groups' mean (1.5); lower on the many faces, nearer the few.
    assert abs(plain - 0.15) < 0.05 and abs(balanced - 1.5) < 0.1
