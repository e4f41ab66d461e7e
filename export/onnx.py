"""Export Unmask's networks to ONNX with sidecars and a parity check.

    python -m export.onnx [--models analyser inpainter_fast] [--out models/weights]

Each network is loaded from its training checkpoint (runs/<name>/last.pt,
`weights_only=True`), exported with opset 17, named inputs / outputs and a
dynamic batch (faces) dimension, checked with `onnx.checker`, compared with
PyTorch on random and on real inputs (max abs error; fp32 must agree within
1e-4), and described by `<name>.json` next to it: input sizes, normalisation,
output meanings, sha256, parity.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OPSET = 17
PARITY_TOL = 1e-4

# The I/O contract of every network: what the stream feeds and reads back.
CONTRACTS = {
    "analyser": {
        "inputs": {"image": "N,3,128,128 float32 BGR in [0,1]: the aligned canonical crop resized to 128"},
        "outputs": {
            "mask_logits": "N,1,128,128 logits of the face covering (sigmoid -> probability)",
            "gender_logit": "N logit of P(female)",
            "landmarks": "N,468,2 mediapipe mesh points as fractions of the crop side",
        },
    },
    "inpainter_fast": {
        "inputs": {
            "image": "N,3,128,128 float32 BGR in [0,1]: the lower-face window (models.spec.INPAINT_WINDOW)",
            "hole": "N,1,128,128 float32, 1 where pixels are redrawn",
            "landmark_map": "N,1,128,128 float32 guide curves (models.spec.draw_landmark_map)",
            "gender": "N float32, 0 male .. 1 female (0.5 unknown)",
        },
        "outputs": {"output": "N,3,128,128 float32 BGR in [0,1]; pixels outside the hole equal the input"},
    },
}
CONTRACTS["inpainter_hq"] = json.loads(json.dumps(CONTRACTS["inpainter_fast"]).replace("128", "256"))


def example_inputs(name: str, batch: int = 2, seed: int = 0):
    import torch
    g = torch.Generator().manual_seed(seed)
    if name == "analyser":
        return (torch.rand(batch, 3, 128, 128, generator=g),)
    size = 256 if name.endswith("hq") else 128
    hole = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
    return (torch.rand(batch, 3, size, size, generator=g), hole,
            torch.rand(batch, 1, size, size, generator=g), torch.rand(batch, generator=g))


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_model(name: str, model, path: Path, real_inputs=None) -> dict:
    """Export `model` (eval mode, CPU) to `path`; returns the sidecar dict it wrote."""
    import onnx
    import onnxruntime as ort
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contract = CONTRACTS[name]
    in_names, out_names = list(contract["inputs"]), list(contract["outputs"])
    dyn = {n: {0: "faces"} for n in in_names + out_names}
    args = example_inputs(name)
    tmp = path.with_suffix(".onnx.tmp")
    with torch.no_grad():
        torch.onnx.export(model, args, str(tmp), opset_version=OPSET, input_names=in_names,
                          output_names=out_names, dynamic_axes=dyn, dynamo=False)
    onnx.checker.check_model(onnx.load(str(tmp)))
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    parity = {}
    cases = {"random": args}
    if real_inputs is not None:
        cases["real"] = real_inputs
    for case, inputs in cases.items():
        with torch.no_grad():
            ref = model(*inputs)
        ref = ref if isinstance(ref, (tuple, list)) else (ref,)
        got = sess.run(out_names, {n: t.numpy() for n, t in zip(in_names, inputs)})
        parity[case] = max(float(np.abs(r.numpy() - o).max()) for r, o in zip(ref, got))
    if max(parity.values()) > PARITY_TOL:
        tmp.unlink()
        raise RuntimeError(f"{name}: ONNX Runtime differs from PyTorch by {parity} (> {PARITY_TOL})")
    tmp.replace(path)
    sidecar = {"name": name, "opset": OPSET, **contract,
               "normalisation": "pixels / 255, BGR channel order, no mean/std",
               "sha256": sha256(path), "parity_max_abs_err": parity,
               "params": int(sum(p.numel() for p in model.parameters()))}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def load_from_checkpoint(name: str):
    import torch
    from models.networks import build
    ckpt = ROOT / "runs" / name / "last.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    model = build(name)
    model.load_state_dict(state["model"] if "model" in state else state["G"])
    return model.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Export Unmask's networks to ONNX.")
    ap.add_argument("--models", nargs="+", default=["analyser", "inpainter_fast"])
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "weights")
    args = ap.parse_args(argv)
    for name in args.models:
        if name not in CONTRACTS:
            print(f"error: unknown model {name!r} (choose from {', '.join(CONTRACTS)})", file=sys.stderr)
            return 2
        ckpt = ROOT / "runs" / name / "last.pt"
        if not ckpt.exists():
            print(f"error: no checkpoint {ckpt}; train it first (python -m training.train)", file=sys.stderr)
            return 2
        side = export_model(name, load_from_checkpoint(name), args.out / f"{name}.onnx")
        print(f"{name}: {args.out / (name + '.onnx')} parity {side['parity_max_abs_err']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
