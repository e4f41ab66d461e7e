"""PyTorch backend: rebuilds the network from `models.networks.build(name)` and `<name>.pt`.

`<name>.pt` is the plain state dict `export.onnx.export_model` writes next to
the ONNX file; `models.checkpoints` loads it with `weights_only=True`, so no
pickled code runs. mediapipe's networks come from `models.face_nets`.
On CUDA the network runs in fp16 by default (channels-last, its own CUDA
stream per runner, optional CUDA graphs per batch size); on the CPU in fp32.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from engines.base import (PRECISIONS, BackendUnavailable, ModelError, Runner, contract_specs, model_name_of,
                          resolve_model)
from models.checkpoints import load_network, load_state_dict
from models.spec import FACE_MODELS

__all__ = ["TorchRunner", "load_state_dict", "weights_path"]


def _import_torch():
    try:
        import torch
    except ImportError:
        raise BackendUnavailable("PyTorch is not installed: pip install torch "
                                 "(a CUDA build for --backend torch on a GPU)") from None
    return torch


def weights_path(onnx_path: Path) -> Path:
    return Path(onnx_path).with_suffix(".pt")


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, model: str | Path, device: str | None = None, precision: str | None = None,
                 threads: int | None = None, cuda_graphs: bool = False, max_batch: int = 16):
        torch = _import_torch()
        self._torch = torch
        self.model_path = resolve_model(model)
        self.model_name = model_name_of(self.model_path)
        self.input_specs, self.output_specs = contract_specs(self.model_name)

        if device is None:
            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(
                f"PyTorch has no CUDA device for {device}: install a CUDA build of PyTorch (pip install torch "
                f"--index-url https://download.pytorch.org/whl/cu126) on a machine with an NVIDIA GPU, "
                f"or use --device cpu")
        if device != "cpu" and not device.startswith("cuda"):
            raise ModelError(f"unknown device {device!r}: use cpu or cuda[:N]")
        if precision is None:
            precision = "fp16" if device.startswith("cuda") else "fp32"
        if precision not in PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}: choose {' or '.join(PRECISIONS)}")
        if device == "cpu":
            precision = "fp32"  # fp16 convolutions on the CPU are slower and less exact
        self.device, self.precision = device, precision
        self.max_batch = int(max_batch)
        if device == "cpu":
            # Process-wide. torch's default (one thread per core) oversubscribes
            # the pipeline's other threads and ran ~10x slower under load on 2
            # cores (benchmarks.models); match ONNX Runtime's default instead.
            from engines.onnxruntime_runner import default_threads
            torch.set_num_threads(int(threads or default_threads()))

        if self.model_name in FACE_MODELS:
            # mediapipe's networks: rebuilt from the wheel's .tflite (the export kept no .pt)
            from models.face_nets import load_face_net
            net = load_face_net(self.model_name)
        else:
            net = self._load_network()
        net.eval()
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.tdevice = torch.device(device)
        net = net.to(self.tdevice, dtype=self.dtype)
        if self.tdevice.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
            self.stream = torch.cuda.Stream(self.tdevice)
        else:
            self.stream = None
        self.net = net
        self.cuda_graphs = bool(cuda_graphs) and self.tdevice.type == "cuda"
        self._graphed = None
        if self.cuda_graphs:
            # One graph per batch size up to max_batch (run() splits larger batches), captured on first use
            # on this runner's stream (run() makes it the current one).
            from engines.cuda_graph import CudaGraphed
            self._graphed = CudaGraphed(self._forward, max_graphs=self.max_batch, warmup=3)

    def _load_network(self):
        side = self.model_path.with_suffix(".json")
        expected = None
        if side.exists():
            try:
                expected = json.loads(side.read_text()).get("state_dict", {}).get("sha256")
            except ValueError:
                expected = None
        return load_network(self.model_name, weights_path(self.model_path), expected)

    # -----------------------------------------------------------------------------------------

    def _to_device(self, a: np.ndarray):
        t = self._torch.from_numpy(np.ascontiguousarray(a))
        if self.tdevice.type == "cuda":
            t = t.pin_memory().to(self.tdevice, non_blocking=True)
        return t.to(self.dtype)

    def _forward(self, *tensors):
        out = self.net(*tensors)
        return out if isinstance(out, (tuple, list)) else (out,)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.net is None:
            raise ModelError(f"{self._label()}: runner is closed")
        torch = self._torch
        n = self.check_inputs(inputs)
        if n == 0:
            return self.empty_outputs()
        results: dict[str, list] = {k: [] for k in self.output_names}
        step = self.max_batch if self.cuda_graphs else n
        with torch.inference_mode():
            if self.stream is not None:
                ctx = torch.cuda.stream(self.stream)
            else:
                ctx = contextlib.nullcontext()
            with ctx:
                for start in range(0, n, step):
                    tensors = [self._to_device(inputs[k][start:start + step]) for k in self.input_names]
                    if self.tdevice.type == "cuda":
                        tensors = [t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t
                                   for t in tensors]
                    outs = self._graphed(*tensors) if self.cuda_graphs else self._forward(*tensors)
                    for k, o in zip(self.output_names, outs):
                        results[k].append(o.float().cpu().numpy())
            if self.stream is not None:
                self.stream.synchronize()
        return {k: (v[0] if len(v) == 1 else np.concatenate(v)) for k, v in results.items()}

    def close(self) -> None:
        self.net = None
        if self._graphed is not None:
            self._graphed.reset()
