"""The shipped networks' tensors as an inference server sees them (Triton: export.triton, engines.serve,
engines.triton_runner share this, so the exported repository, the local server and the client agree).

Contracts are the typed ones of models.spec.CONTRACTS (the sidecars beside each exported `.onnx` are
written from them): every tensor is float32 with the faces on axis 0. Triton declares shapes without the
batch axis; a per-face scalar such as the inpainter's `gender` (shape `N`) travels as `[N, 1]`, because
Triton needs at least one dimension (a stock server reshapes it back to `N` for ONNX Runtime).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import ModelError
from models.spec import CONTRACTS, WEIGHTS_DIR, TensorSpec

SHIPPED_MODELS = ("analyser", "inpainter_fast")
TRITON_DTYPE = "FP32"


@dataclass(frozen=True)
class ModelContract:
    name: str
    onnx_path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def wire_dims(spec: TensorSpec) -> tuple[int, ...]:
    """Triton dims (batch axis left out) of a faces-first tensor: (N,) -> (1,), (N,3,H,W) -> (3,H,W)."""
    return tuple(spec.shape[1:]) or (1,)


def to_wire(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """The array as sent: float32, C-contiguous, per-face scalars as (N, 1)."""
    a = np.ascontiguousarray(array, np.float32)
    return a.reshape(len(a), 1) if len(spec.shape) == 1 else a


def from_wire(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """An array as received, back in the contract's shape ((N, 1) -> (N,) for per-face scalars)."""
    return array.reshape(len(array)) if len(spec.shape) == 1 else array


def load_contract(name: str, weights_dir: Path | None = None) -> ModelContract:
    """The contract of a shipped network (models.spec.CONTRACTS) and its .onnx in `weights_dir`."""
    folder = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    onnx_path = folder / f"{name}.onnx"
    if name not in CONTRACTS:
        raise ModelError(f"unknown model {name!r}: expected one of {', '.join(CONTRACTS)}")
    if not onnx_path.exists():
        raise ModelError(f"model {name!r} not found in {folder} (needs {name}.onnx; "
                         f"python -m export.onnx --models {name})")
    c = CONTRACTS[name]
    return ModelContract(name, onnx_path, tuple(c.inputs), tuple(c.outputs))


def shipped_contracts(weights_dir: Path | None = None) -> list[ModelContract]:
    return [load_contract(n, weights_dir) for n in SHIPPED_MODELS]
