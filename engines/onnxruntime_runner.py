"""ONNX Runtime backend: the CPU default, and CUDA / TensorRT execution providers with onnxruntime-gpu.

CPU sessions are tuned for the small machines Unmask targets (2 cores shared
with decoding, alignment and encoding threads): `intra_op_num_threads`
defaults to min(2, cores), one inter-op thread, sequential execution, every
graph optimisation, and no busy-wait spinning of the worker threads (a
spinning pool steals the cores the other pipeline stages need).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engines.base import (PRECISIONS, BackendUnavailable, ModelError, Runner, TensorSpec, fill_from_contract,
                          model_name_of, resolve_model)

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def default_threads() -> int:
    """Intra-op threads for a CPU session: 2 on the 2-core target, never more than the machine has."""
    return max(1, min(2, os.cpu_count() or 1))


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - onnxruntime is a core dependency
        raise BackendUnavailable(f"ONNX Runtime is not installed: pip install onnxruntime ({e})") from None
    return ort


def _spec(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    dtype = _ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise ModelError(f"unsupported tensor type {arg.type} for {arg.name}")
    return TensorSpec(arg.name, np.dtype(dtype), shape)


def _device_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, model: str | Path, device: str = "cpu", threads: int | None = None,
                 precision: str = "fp32", spinning: bool = False, tensorrt_ep: bool | None = None):
        ort = _import_ort()
        if precision not in PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}: choose {' or '.join(PRECISIONS)}")
        self.model_path = resolve_model(model)
        self.device = device
        self.threads = int(threads) if threads else default_threads()
        if self.threads < 1:
            raise ModelError(f"threads must be at least 1, got {threads}")

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if not spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session_options = so
        self.providers = self._providers(ort, device, precision, tensorrt_ep)
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=so, providers=self.providers)
        except Exception as e:  # corrupt / foreign file: one line, not an ORT traceback
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"cannot load {self.model_path} with ONNX Runtime: {msg}") from None
        active = self.session.get_providers()
        if device.startswith("cuda") and "CUDAExecutionProvider" not in active \
                and "TensorrtExecutionProvider" not in active:
            self.session = None
            raise BackendUnavailable(
                f"ONNX Runtime could not start its CUDA provider on {device}: install onnxruntime-gpu "
                f"matching your CUDA / cuDNN, or use --device cpu")
        # fp16 only changes anything through the TensorRT provider; the graph itself is fp32.
        self.precision = precision if "TensorrtExecutionProvider" in active else "fp32"
        self.model_name = model_name_of(self.model_path)
        self.input_specs = fill_from_contract([_spec(a) for a in self.session.get_inputs()], self.model_name)
        self.output_specs = fill_from_contract([_spec(a) for a in self.session.get_outputs()], self.model_name)

    @staticmethod
    def _providers(ort, device: str, precision: str, tensorrt_ep: bool | None) -> list:
        if device == "cpu":
            return ["CPUExecutionProvider"]
        if not device.startswith("cuda"):
            raise ModelError(f"unknown device {device!r}: use cpu or cuda[:N]")
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailable(
                f"ONNX Runtime has no CUDA provider for {device}: pip uninstall onnxruntime && "
                f"pip install onnxruntime-gpu (needs an NVIDIA GPU)")
        idx = _device_index(device)
        providers = []
        if tensorrt_ep is None:  # only when TensorRT's libraries are really there
            import importlib.util
            tensorrt_ep = importlib.util.find_spec("tensorrt") is not None
        if tensorrt_ep and "TensorrtExecutionProvider" in available:
            from engines.cache import DEFAULT_CACHE_DIR
            providers.append(("TensorrtExecutionProvider", {
                "device_id": idx, "trt_fp16_enable": precision == "fp16",
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(DEFAULT_CACHE_DIR / "onnxruntime-trt"),
                "trt_timing_cache_enable": True}))
        providers.append(("CUDAExecutionProvider", {"device_id": idx}))
        providers.append("CPUExecutionProvider")
        return providers

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.session is None:
            raise ModelError(f"{self._label()}: runner is closed")
        n = self.check_inputs(inputs)
        if n == 0:
            return self.empty_outputs()
        feed = {s.name: inputs[s.name] for s in self.input_specs}
        outs = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, outs))

    def close(self) -> None:
        self.session = None
