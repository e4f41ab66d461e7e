"""Reading weights files, once for every layer: a file's sha256, a plain state dict loaded with
`weights_only=True` (no pickled code runs), and a network of `models.networks` filled from one.

torch is imported inside the functions: `file_sha256` serves the torch-free inference install.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from models.errors import ModelError


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ModelError("PyTorch is not installed: pip install torch "
                         "(a CUDA build for --backend torch on a GPU)") from None
    return torch


def load_state_dict(path: Path, expected_sha256: str | None = None) -> dict:
    """Load a plain state dict with weights_only=True; ModelError on anything else (or on a sha256 that
    differs from `expected_sha256`, the one the ONNX sidecar recorded)."""
    torch = _import_torch()
    path = Path(path)
    if not path.exists():
        raise ModelError(f"PyTorch weights {path} not found: re-export the model "
                         f"(python -m export.onnx --models {path.stem}) to write it next to the .onnx")
    if expected_sha256 and file_sha256(path) != expected_sha256:
        raise ModelError(f"{path} does not belong to {path.with_suffix('.onnx').name} (sha256 differs from "
                         f"the sidecar): re-export with python -m export.onnx --models {path.stem}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"cannot load {path} as plain tensors (weights_only=True): {first}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} is not a state dict of tensors")
    return state


def load_network(name: str, pt_path: Path, expected_sha256: str | None = None):
    """`models.networks.build(name)` with the state dict at `pt_path` (strict), on the CPU in fp32, in
    training mode as built (callers call .eval())."""
    from models.networks import build

    state = load_state_dict(pt_path, expected_sha256)
    try:
        net = build(name)
    except KeyError:
        raise ModelError(f"{pt_path}: no network called {name!r} in models.networks") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{pt_path} does not fit {name}: {str(e).strip().splitlines()[0]}") from None
    return net
