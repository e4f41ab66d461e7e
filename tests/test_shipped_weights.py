"""The shipped weights in models/weights are what their sidecars say, and load: a broken release
fails the suite (the tests that use the weights never skip or substitute random ones)."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from engines.base import WEIGHTS_DIR

torch = pytest.importorskip("torch")   # the inference install has no torch
NAMES = ("analyser", "inpainter_fast")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", NAMES)
def test_shipped_files_match_their_sidecar_and_load(name):
    sidecar = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    assert sha256(WEIGHTS_DIR / f"{name}.onnx") == sidecar["sha256"]
    assert sidecar["state_dict"]["file"] == f"{name}.pt"
    assert sha256(WEIGHTS_DIR / f"{name}.pt") == sidecar["state_dict"]["sha256"]
    from test_gpu_path import _load_error
    assert _load_error(WEIGHTS_DIR / f"{name}.pt", name) is None


def test_a_broken_pt_is_reported_not_replaced(tmp_path):
    from test_gpu_path import _load_error
    broken = tmp_path / "analyser.pt"
    broken.write_bytes((WEIGHTS_DIR / "analyser.pt").read_bytes()[:1000])   # truncated
    assert _load_error(broken, "analyser") is not None


def test_a_sidecar_hash_mismatch_is_an_error(tmp_path):
    from stream.errors import ModelError
    from stream.gpu import load_module
    for ext in ("onnx", "json", "pt"):
        shutil.copyfile(WEIGHTS_DIR / f"analyser.{ext}", tmp_path / f"analyser.{ext}")
    with open(tmp_path / "analyser.pt", "ab") as pt:
        pt.write(b"\0")                      # the .pt no longer matches the sidecar
    with pytest.raises(ModelError, match="sha256"):
        load_module("analyser", "cpu", "fp32", tmp_path)
