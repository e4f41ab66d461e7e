"""models.spec: the typed contracts, the hole rule and the file locations every layer reads."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from models.spec import (CANONICAL_FACE_PATH, CANONICAL_SIZE, CONTRACTS, HOLE_DILATE_PX, INPAINTER_PRESETS,
                         TRAINING_HOLE_DILATE_PX, WEIGHTS_DIR, contract, decode_analyser, dilate_hole,
                         hole_kernel_size, inpainter_contract, load_canonical_face)


@pytest.mark.parametrize("name", ["analyser", "inpainter_fast"])
def test_contracts_describe_themselves_as_the_shipped_sidecars_do(name):
    side = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    assert CONTRACTS[name].describe() == {"inputs": side["inputs"], "outputs": side["outputs"]}
    assert CONTRACTS[name].normalisation == side["normalisation"]


def test_inpainter_contracts_are_built_from_the_window_size():
    for preset, p in INPAINTER_PRESETS.items():
        c = contract(f"inpainter_{preset}")
        s = p["size"]
        assert [x.shape for x in c.inputs] == [(None, 3, s, s), (None, 1, s, s), (None, 1, s, s), (None,)]
        assert c.outputs[0].with_batch(5) == (5, 3, s, s)
    assert inpainter_contract(64).inputs[1].describe() == "N,1,64,64 float32, 1 where pixels are redrawn"
    assert contract("face_mesh").outputs[0].shape == (None, 468, 3)
    with pytest.raises(KeyError, match="analyser"):
        contract("nope")


def test_one_hole_rule_with_the_stream_and_training_margins():
    assert HOLE_DILATE_PX == 4 and TRAINING_HOLE_DILATE_PX == 2
    assert hole_kernel_size(128) == 9 and hole_kernel_size(256) == 17      # the stream: 9x9 at 128 px
    assert hole_kernel_size(128, TRAINING_HOLE_DILATE_PX) == 5                # training: 5x5 at 128 px
    covered = np.zeros((128, 128), np.uint8)
    covered[60, 60] = 1
    hole = dilate_hole(covered, 128)
    assert hole.sum() == 81 and hole[56:65, 56:65].all()
    assert np.array_equal(dilate_hole(covered, 128, 2), cv2.dilate(covered, np.ones((5, 5), np.uint8)))


def test_analyser_decoding():
    logits = np.array([[[[0.0, 100.0]]]], np.float32)
    probs, female, lms = decode_analyser(logits, np.array([[0.0]], np.float32), np.full((1, 468, 2), 0.5, np.float32))
    assert probs.shape == (1, 1, 2) and probs[0, 0, 0] == 0.5 and probs[0, 0, 1] == pytest.approx(1.0)
    assert female.tolist() == [0.5] and np.all(lms == CANONICAL_SIZE / 2)


def test_canonical_face_file():
    face = load_canonical_face()
    assert CANONICAL_FACE_PATH.exists() and face.shape == (468, 2) and face.dtype == np.float32
    assert 0 < face.min() and face.max() < CANONICAL_SIZE
