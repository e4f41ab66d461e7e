"""The one place that decides between the CPU and the GPU composition of `Unmasker`.

    from stream.factory import create_unmasker
    um = create_unmasker(device="cuda")       # GpuUnmasker: frames stay on the GPU
    um = create_unmasker()                    # Unmasker: ONNX Runtime (or the best backend) on the CPU

The GPU-resident path (`stream.gpu.GpuUnmasker`) runs when the models are used (`method` "model"),
`device` is CUDA and the backend is "auto" or "torch"; everything else is the numpy / OpenCV
`Unmasker` around an `engines` runner. `device="auto"` means CUDA when torch sees one.
"""
from __future__ import annotations

import importlib.util

from stream.errors import ModelError
from stream.unmasker import Unmasker, models_available

# Keyword arguments only the GPU path takes; dropped for the CPU one.
GPU_ONLY = ("precision", "cuda_graphs", "defer_download")


def _cuda_visible() -> bool:
    if importlib.util.find_spec("torch") is None:      # the inference install has no torch
        return False
    import torch
    return torch.cuda.is_available()


def choose_path(method: str = "auto", backend: str = "auto", device: str | None = None, tracker: str = "auto",
                preset: str = "fast", weights_dir=None) -> tuple[bool, str, str | None]:
    """(GPU-resident?, the method, the device) for these settings; ModelError / ValueError on settings
    that cannot go together. Cheap (loads nothing): the CLI checks its flags with it first."""
    if device == "auto":
        device = "cuda" if _cuda_visible() else None
    if method == "auto":
        method = "model" if models_available(preset, weights_dir) else "classical"
    gpu_resident = method == "model" and (device or "").startswith("cuda") and backend in ("auto", "torch")
    if tracker not in ("auto", "torch", "mediapipe"):
        raise ValueError(f"unknown tracker {tracker!r}: use 'auto', 'torch' or 'mediapipe'")
    if tracker == "torch" and not gpu_resident:
        raise ModelError("--tracker torch runs in the GPU pipeline: add --device cuda "
                         "(with --method model and --backend auto or torch)")
    return gpu_resident, method, device


def create_unmasker(method: str = "auto", backend: str = "auto", device: str | None = None,
                    tracker: str = "auto", preset: str = "fast", **kwargs) -> Unmasker:
    """An `Unmasker` (CPU stages) or a `stream.gpu.GpuUnmasker` (device stages) for these settings.

    `tracker`: "auto" (torch on the GPU path, mediapipe elsewhere), "torch" (GPU path only) or
    "mediapipe". Other keyword arguments go to the chosen class (GPU-only ones are dropped for the CPU).
    """
    gpu_resident, method, device = choose_path(method, backend, device, tracker, preset, kwargs.get("weights_dir"))
    if gpu_resident:
        try:
            from stream.gpu import GpuUnmasker
        except ImportError as exc:
            raise ModelError(f"--device {device} needs PyTorch with CUDA (pip install .[train]): {exc}") from None
        return GpuUnmasker(device=device, tracker="torch" if tracker == "auto" else tracker, preset=preset,
                           **kwargs)
    for k in GPU_ONLY:
        kwargs.pop(k, None)
    return Unmasker(method=method, backend=backend, device=device, preset=preset, **kwargs)
