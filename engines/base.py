"""The inference-runner interface shared by every backend.

A `Runner` executes one exported network on a batch of faces (dimension 0 of
every input and output) and speaks numpy on both sides, whatever runs inside
(ONNX Runtime, TensorRT, PyTorch). Runners are cheap to hold but not
thread-safe: the stream creates one per pipeline thread.

`engines.select.create_runner` picks the backend. The errors raised here are
`models.errors.ModelError`s, so the CLI prints them as one line; the tensor
contracts are `models.spec.CONTRACTS`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from models.errors import ModelError
from models.spec import CONTRACTS, WEIGHTS_DIR, TensorSpec

__all__ = ["PRECISIONS", "WEIGHTS_DIR", "BackendUnavailable", "InputMismatch", "ModelError", "Runner", "TensorSpec",
           "UnknownBackend", "contract_specs", "fill_from_contract", "model_name_of", "resolve_model"]

PRECISIONS = ("fp32", "fp16")


class BackendUnavailable(ModelError):
    """A requested backend is not installed or has no usable device; the message names what to install."""


class UnknownBackend(ModelError, ValueError):
    """The backend name is not one of engines.select.BACKENDS."""


class InputMismatch(ModelError, ValueError):
    """The arrays handed to Runner.run do not match the model's inputs."""


def contract_specs(name: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs of network `name` (models.spec.CONTRACTS)."""
    if name not in CONTRACTS:
        raise ModelError(f"unknown model {name!r}: expected one of {', '.join(CONTRACTS)}")
    c = CONTRACTS[name]
    return list(c.inputs), list(c.outputs)


def fill_from_contract(specs: list[TensorSpec], name: str) -> list[TensorSpec]:
    """Replace symbolic non-batch dims (ONNX Runtime reports e.g. "Resizemask_logits_dim_2") by the
    contract's sizes when `name` is a known network; dimension 0 stays the faces axis (None)."""
    try:
        ins, outs = contract_specs(name)
    except ModelError:
        ins, outs = [], []
    known = {s.name: s for s in ins + outs}
    filled = []
    for s in specs:
        c = known.get(s.name)
        shape = list(s.shape)
        if shape:
            shape[0] = None
        if c is not None and len(c.shape) == len(shape):
            shape = [None if i == 0 else (d if d is not None else c.shape[i]) for i, d in enumerate(shape)]
        filled.append(TensorSpec(s.name, s.dtype, tuple(shape), c.description if c is not None else s.description))
    return filled


def resolve_model(model: str | Path) -> Path:
    """A model name ("analyser") -> models/weights/analyser.onnx; a path is taken as is.

    Raises ModelError naming the file and how to produce it when it is missing.
    """
    p = Path(model)
    is_name = isinstance(model, str) and p.suffix == "" and len(p.parts) == 1
    if is_name:
        p = WEIGHTS_DIR / f"{model}.onnx"
    if p.is_dir():
        raise ModelError(f"model path {p} is a folder; pass an .onnx file or a model name")
    if not p.exists():
        stem = p.stem
        raise ModelError(
            f"model file {p} not found: train the network (python -m training.train) and export it "
            f"(python -m export.onnx --models {stem}), or pass the path of an exported .onnx")
    return p


def model_name_of(path: Path) -> str:
    """The network name of an exported file: the sidecar's "name", else the file stem."""
    import json
    side = Path(path).with_suffix(".json")
    if side.exists():
        try:
            return str(json.loads(side.read_text())["name"])
        except (ValueError, KeyError, OSError):
            pass
    return Path(path).stem


class Runner(ABC):
    """Runs one network on a batch of faces; numpy float32 in, numpy float32 out."""

    name: str = ""          # "onnxruntime" | "tensorrt" | "torch"
    device: str = "cpu"     # "cpu" | "cuda:0" ...
    precision: str = "fp32"
    model_path: Path | None = None
    selection_reason: str = ""  # set by create_runner: why this backend
    input_specs: list[TensorSpec]
    output_specs: list[TensorSpec]

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.input_specs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.output_specs]

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: every input shares dimension 0 (the faces); returns every output by name."""

    def close(self) -> None:
        """Release sessions, device buffers and streams (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} {self.device} {self.precision} {self.model_path}>"

    # -- helpers shared by the backends -------------------------------------------------------

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> int:
        """Validate names, dtypes and shapes; returns the batch size. Raises InputMismatch."""
        if not isinstance(inputs, dict):
            raise InputMismatch(f"{self._label()}: inputs must be a dict name -> array, "
                                f"got {type(inputs).__name__}")
        want = self.input_names
        missing = [n for n in want if n not in inputs]
        extra = [n for n in inputs if n not in want]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected {', '.join(map(str, extra))}")
            raise InputMismatch(f"{self._label()}: {'; '.join(parts)} (expects {', '.join(want)})")
        batch = None
        for spec in self.input_specs:
            a = inputs[spec.name]
            if not isinstance(a, np.ndarray):
                raise InputMismatch(f"{self._label()}: input {spec.name!r} must be a numpy array, "
                                    f"got {type(a).__name__}")
            if a.dtype != spec.dtype:
                raise InputMismatch(f"{self._label()}: input {spec.name!r} must be {spec.dtype}, got {a.dtype}")
            ok = a.ndim == len(spec.shape) and all(w is None or w == g for w, g in zip(spec.shape, a.shape))
            if not ok:
                want_s = "(" + ", ".join("N" if d is None else str(d) for d in spec.shape) + ")"
                raise InputMismatch(f"{self._label()}: input {spec.name!r} must have shape {want_s}, "
                                    f"got {tuple(a.shape)}")
            if batch is None:
                batch = a.shape[0]
            elif a.shape[0] != batch:
                raise InputMismatch(f"{self._label()}: inputs disagree on the number of faces "
                                    f"({spec.name!r} has {a.shape[0]}, expected {batch})")
        return int(batch or 0)

    def empty_outputs(self) -> dict[str, np.ndarray]:
        """The outputs of a batch of zero faces (no backend is asked to run an empty batch)."""
        return {s.name: np.zeros(tuple(0 if d is None else d for d in s.shape), s.dtype)
                for s in self.output_specs}

    def _label(self) -> str:
        model = self.model_path.stem if self.model_path else "model"
        return f"{model} ({self.name})"
