"""The README's grid of real outputs (training.real_grid) on one real pair of photos (CC BY / public domain)."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from stream.unmasker import models_available
from training.real_grid import PHOTOS, _drawn_by, run


def test_the_covered_person_is_the_face_whose_covering_overlaps_the_true_one():
    truth = np.zeros((50, 50), bool)
    truth[30:45, 10:30] = True
    mask = lambda y0, y1, x0, x1: np.pad(np.full((y1 - y0, x1 - x0), 255, np.uint8),
                                         ((y0, 50 - y1), (x0, 50 - x1)))
    faces = [SimpleNamespace(mask=mask(0, 10, 40, 50), reconstruction=None),       # someone behind
             SimpleNamespace(mask=mask(28, 46, 8, 32), reconstruction="reference")]
    assert _drawn_by(faces, truth) == "reference"
    assert _drawn_by(faces[:1], truth) is None and _drawn_by([], truth) is None


@pytest.mark.skipif(not models_available(), reason="shipped models missing from models/weights")
def test_a_real_person_covered_gets_their_own_face_from_their_other_photo(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("obama3.jpg", "obama1_reference.jpg"):
        shutil.copy(PHOTOS / name, photos / name)
    result = run(photos, tmp_path / "out")
    (row,) = result["rows"]
    assert row["drawn_by"] == "generative" and row["drawn_by_own_face"] == "reference"
    # The hole's mean colour against the true, uncovered photo (CIEDE2000): measured 2.1 for the own
    # face (the relit reference) and 4.7 for the generative fill.
    assert row["de_own_face"] < 3.5
    assert (tmp_path / "out" / "real_grid_own_face.jpg").stat().st_size > 10_000
