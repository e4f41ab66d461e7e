"""Inference backends for Unmask's exported networks.

    from engines import create_runner
    runner = create_runner("analyser")            # auto: TensorRT > PyTorch CUDA > ONNX Runtime
    out = runner.run({"image": batch})            # numpy in, numpy out, faces on axis 0
    runner.close()

Backends import lazily: importing this package needs neither torch, TensorRT nor CUDA.
"""
from engines.base import BackendUnavailable, InputMismatch, Runner, TensorSpec, UnknownBackend, resolve_model
from engines.select import BACKENDS, create_runner

__all__ = ["BACKENDS", "BackendUnavailable", "InputMismatch", "Runner", "TensorSpec", "UnknownBackend",
           "create_runner", "resolve_model"]
