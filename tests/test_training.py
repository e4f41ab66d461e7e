"""training.train end to end on a tiny cache built from public-domain test photos: steps run (in
bfloat16 autocast too), an improving validation exports a loadable ONNX, and --resume continues
from the checkpoint's step with its optimiser state, as on a lent GPU."""
import json

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from stream.alignment import align_face
from tests.faces import ROOT, astronaut, astronaut_landmarks

TEMPLATES = ROOT / "assets" / "mask_templates"


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """Six training and two validation crops: the astronaut aligned to the canonical crop, shifted,
    brightened and mirrored a little (the real cache has the same layout: crops/*.jpg + meta.npz)."""
    cache = tmp_path_factory.mktemp("cache")
    (cache / "crops").mkdir()
    image, lm = astronaut(), astronaut_landmarks()
    keys, splits, marks = [], [], []
    for i in range(8):
        shift = np.array([(i % 3 - 1) * 3.0, (i // 3 - 1) * 3.0])
        alignment = align_face(lm + shift)
        crop = np.clip(alignment.crop(image).astype(np.float32) * (0.8 + 0.05 * i), 0, 255).astype(np.uint8)
        key = f"astronaut_{i}"
        cv2.imwrite(str(cache / "crops" / f"{key}.jpg"), crop)
        keys.append(key)
        splits.append("val" if i >= 6 else "train")
        marks.append(alignment.to_crop(lm))
    n = len(keys)
    np.savez(cache / "meta.npz", keys=np.array(keys), split=np.array(splits),
             dataset=np.array(["astronaut"] * n), gender=np.ones(n, np.int8), age=np.full(n, 40, np.int16),
             race=np.full(n, -1, np.int8), has_parsing=np.zeros(n, bool),
             landmarks=np.stack(marks).astype(np.float32))
    return cache


def train(cache, run_dir, export_dir, *extra):
    from training.train import main
    export_dir.mkdir(exist_ok=True)
    return main(["--task", "inpainter", "--preset", "fast", "--cache", str(cache), "--templates", str(TEMPLATES),
                 "--run-dir", str(run_dir), "--export-dir", str(export_dir), "--batch", "2", "--val-every", "2",
                 "--val-size", "2", "--gan-start", "0", "--lr", "1e-3", *extra])


def test_the_inpainter_trains_exports_and_resumes_in_bfloat16(tiny_cache, tmp_path):
    run, exported = tmp_path / "run", tmp_path / "candidates"
    assert train(tiny_cache, run, exported, "--steps", "3", "--amp") == 0
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 3
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    vals = [r["val"] for r in log if "val" in r]
    assert len(vals) == 2 and all(np.isfinite(v["psnr_hole"]) for v in vals)   # steps 2 and 3
    # The first validation always beats -inf: an ONNX with its sidecar, runnable on the CPU.
    onnx_path = exported / "inpainter_fast.onnx"
    assert onnx_path.exists() and json.loads(onnx_path.with_suffix(".json").read_text())["name"] == "inpainter_fast"
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"image": np.full((1, 3, 128, 128), 0.5, np.float32),
                          "hole": np.zeros((1, 1, 128, 128), np.float32),
                          "landmark_map": np.zeros((1, 1, 128, 128), np.float32),
                          "gender": np.array([0.5], np.float32)})[0]
    np.testing.assert_allclose(out, 0.5, atol=1e-6)       # nothing to redraw: the input passes through
    # Resumed (float32 this time): from step 3 with the saved optimiser, to step 5.
    adam_steps = state["opt_g"]["state"][0]["step"]
    assert train(tiny_cache, run, exported, "--steps", "5", "--resume") == 0
    resumed = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert resumed["step"] == 5 and resumed["opt_g"]["state"][0]["step"] == adam_steps + 2
    assert not torch.equal(resumed["G"]["out.weight"], state["G"]["out.weight"])
