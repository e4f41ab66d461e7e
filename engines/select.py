"""Choosing and opening an inference backend.

`backend="auto"` takes, from what is installed and the hardware:

1. TensorRT   - `tensorrt` imports, a CUDA binding for buffers (cuda-python, pycuda
                or CUDA PyTorch), a CUDA GPU, and an up-to-date engine for this model
                in engines_cache/ (built by `python -m export.build_engines`);
2. PyTorch    - CUDA PyTorch with a GPU, and the `<name>.pt` weights beside the .onnx;
3. ONNX Runtime - its CUDA provider when onnxruntime-gpu sees a GPU, else the CPU.

`device="cpu"` skips the GPU backends. An explicitly requested backend that
cannot run raises BackendUnavailable whose one line says what to install.
The decision itself (`choose_backend`) is a pure function of a `Capabilities`
snapshot, so it is tested without GPUs.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from engines.base import (PRECISIONS, BackendUnavailable, ModelError, Runner, UnknownBackend, model_name_of,
                          resolve_model)

BACKENDS = ("auto", "tensorrt", "torch", "onnxruntime", "triton")   # triton: only when asked for, never auto
TRITON_URL_ENV = "UNMASK_TRITON_URL"   # the server for backend="triton" when no triton_url is passed
ALIASES = {"trt": "tensorrt", "pytorch": "torch", "ort": "onnxruntime", "onnx": "onnxruntime"}

log = logging.getLogger("unmask.engines")

INSTALL = {
    "tensorrt": "TensorRT is not installed: pip install .[gpu] (tensorrt + cuda-python) on a machine with an "
                "NVIDIA GPU",
    "tensorrt-cuda": "TensorRT needs a CUDA binding for its buffers: pip install cuda-python (or pycuda)",
    "tensorrt-gpu": "TensorRT is installed but no NVIDIA GPU / driver is visible: use --backend onnxruntime",
    "torch": "PyTorch is not installed: pip install torch (a CUDA build for GPU inference)",
    "torch-cuda": "PyTorch has no CUDA GPU here: install a CUDA build of PyTorch (pip install torch --index-url "
                  "https://download.pytorch.org/whl/cu126) on a machine with an NVIDIA GPU, or use --device cpu",
    "onnxruntime": "ONNX Runtime is not installed: pip install onnxruntime (or onnxruntime-gpu)",
    "triton": "the Triton backend needs tritonclient: pip install .[triton]",
    "onnxruntime-cuda": "ONNX Runtime has no CUDA provider: pip uninstall onnxruntime && pip install "
                        "onnxruntime-gpu (needs an NVIDIA GPU), or use --device cpu",
}


@dataclass(frozen=True)
class Capabilities:
    """What this process can use; `probe()` fills it, tests build it by hand."""

    tensorrt: bool = False                 # `import tensorrt` works
    cuda_binding: str | None = None        # "cuda-python" | "pycuda" | "torch" | None
    cuda_gpus: int = 0                     # visible CUDA devices
    torch: bool = False                    # `import torch` works
    torch_cuda: bool = False               # torch.cuda.is_available()
    onnxruntime: bool = False
    ort_providers: tuple = field(default_factory=tuple)
    # (package, "ExceptionType: message") for packages that are installed but fail to import:
    # a broken install must say what failed, not claim the package is missing.
    broken: tuple = field(default_factory=tuple)

    def import_error(self, package: str) -> str | None:
        return dict(self.broken).get(package)


def driver_gpu_count() -> int:
    """CUDA devices seen by the NVIDIA driver (libcuda through ctypes: no Python package needed)."""
    import ctypes
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        try:
            if cuda.cuInit(0) != 0:
                return 0
            n = ctypes.c_int(0)
            return n.value if cuda.cuDeviceGetCount(ctypes.byref(n)) == 0 else 0
        except Exception:
            return 0
    return 0


def _torch_is_cpu_only_build() -> bool:
    """True for wheels such as 2.13.0+cpu: no need to import torch to know it has no CUDA."""
    try:
        from importlib.metadata import version
        return version("torch").endswith("+cpu")
    except Exception:
        return False


def probe(torch_cuda: bool = True) -> Capabilities:
    """Look at what is installed; imports only packages that are present. `torch_cuda=False` skips
    importing torch (slow) when the caller cannot use PyTorch anyway."""
    has = lambda mod: importlib.util.find_spec(mod) is not None  # noqa: E731
    broken = []
    trt_ok = False
    if has("tensorrt"):
        try:
            import tensorrt  # noqa: F401
            trt_ok = True
        except Exception as exc:  # ImportError, or OSError for missing native libraries
            broken.append(("tensorrt", _failure(exc)))
    torch_ok = has("torch")
    torch_has_cuda = False
    if torch_ok and torch_cuda and not _torch_is_cpu_only_build():
        try:
            import torch
            torch_has_cuda = bool(torch.cuda.is_available())
        except Exception as exc:
            torch_ok = False
            broken.append(("torch", _failure(exc)))
    ort_ok, providers = False, ()
    if has("onnxruntime"):
        try:
            import onnxruntime as ort
            ort_ok, providers = True, tuple(ort.get_available_providers())
        except Exception as exc:
            broken.append(("onnxruntime", _failure(exc)))
    binding = None
    if trt_ok:
        from engines.tensorrt_runner import cuda_binding_available
        binding = cuda_binding_available()
    gpus = driver_gpu_count() if (trt_ok or torch_has_cuda or "CUDAExecutionProvider" in providers) else 0
    if torch_has_cuda:
        import torch
        gpus = max(gpus, torch.cuda.device_count())
    return Capabilities(tensorrt=trt_ok, cuda_binding=binding, cuda_gpus=gpus, torch=torch_ok,
                        torch_cuda=torch_has_cuda, onnxruntime=ort_ok, ort_providers=providers,
                        broken=tuple(broken))


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _broken_install(package: str, caps: Capabilities) -> str | None:
    error = caps.import_error(package)
    if error is None:
        return None
    return (f"{package} is installed but failed to import ({error}): repair the install "
            f"(pip install --force-reinstall {package}) or choose another backend")


def normalise_backend(backend: str) -> str:
    b = ALIASES.get(str(backend).lower().strip(), str(backend).lower().strip())
    if b not in BACKENDS:
        raise UnknownBackend(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    return b


def _check_device(device: str | None) -> None:
    if device is None or device == "cpu" or device == "cuda" or \
            (device.startswith("cuda:") and device[5:].isdigit()):
        return
    raise ModelError(f"unknown device {device!r}: use cpu, cuda or cuda:N")


def unavailable_reason(backend: str, caps: Capabilities, device: str | None) -> str | None:
    """None when `backend` can run on `device` with `caps`; else the one line saying what to install
    (or, for a broken install, what failed)."""
    broken = _broken_install(backend, caps) if backend != "tensorrt" or device != "cpu" else None
    if broken:
        return broken
    if backend == "tensorrt":
        if device == "cpu":
            return "TensorRT runs on an NVIDIA GPU only: use --backend onnxruntime for --device cpu"
        if not caps.tensorrt:
            return INSTALL["tensorrt"]
        if not caps.cuda_binding:
            return INSTALL["tensorrt-cuda"]
        if caps.cuda_gpus < 1:
            return INSTALL["tensorrt-gpu"]
        return None
    if backend == "torch":
        if not caps.torch:
            return INSTALL["torch"]
        if device is not None and device.startswith("cuda") and not caps.torch_cuda:
            return INSTALL["torch-cuda"]
        return None
    if backend == "onnxruntime":
        if not caps.onnxruntime:
            return INSTALL["onnxruntime"]
        if device is not None and device.startswith("cuda") and "CUDAExecutionProvider" not in caps.ort_providers:
            return INSTALL["onnxruntime-cuda"]
        return None
    if backend == "triton":
        return None if importlib.util.find_spec("tritonclient") is not None else INSTALL["triton"]
    raise UnknownBackend(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")


@dataclass(frozen=True)
class Choice:
    backend: str
    device: str
    reason: str            # why this one (for logs: "auto: no TensorRT engine for analyser; ...")


def choose_backend(backend: str, device: str | None, caps: Capabilities, *,
                   has_engine: bool = False, has_torch_weights: bool = False) -> Choice:
    """Pure decision. `has_engine`: an up-to-date TensorRT engine is cached for this model;
    `has_torch_weights`: `<name>.pt` exists next to the .onnx."""
    backend = normalise_backend(backend)
    _check_device(device)
    gpu_device = "cuda:0" if device in (None, "cuda") else device
    if backend != "auto":
        why = unavailable_reason(backend, caps, device)
        if why:
            raise BackendUnavailable(why)
        if backend == "onnxruntime":
            if device is None:
                ort_gpu = "CUDAExecutionProvider" in caps.ort_providers and caps.cuda_gpus > 0
                return Choice("onnxruntime", "cuda:0" if ort_gpu else "cpu", "requested")
            return Choice("onnxruntime", gpu_device if device == "cuda" else device, "requested")
        if backend == "torch":
            if device is None:
                return Choice("torch", "cuda:0" if caps.torch_cuda else "cpu", "requested")
            return Choice("torch", gpu_device if device == "cuda" else device, "requested")
        return Choice("tensorrt", gpu_device, "requested")

    skipped = []
    if device != "cpu":
        why = unavailable_reason("tensorrt", caps, device)
        if why is None and not has_engine:
            why = "no up-to-date TensorRT engine (python -m export.build_engines)"
        if why is None:
            return Choice("tensorrt", gpu_device, "auto: TensorRT")
        skipped.append(f"tensorrt: {why}")
        why = None if caps.torch_cuda else "no CUDA PyTorch"
        if why is None and not has_torch_weights:
            why = "no .pt weights beside the .onnx"
        if why is None:
            return Choice("torch", gpu_device, "auto: " + "; ".join(skipped))
        skipped.append(f"torch: {why}")
        if caps.onnxruntime and "CUDAExecutionProvider" in caps.ort_providers and \
                (caps.cuda_gpus > 0 or device is not None):
            return Choice("onnxruntime", gpu_device, "auto: " + "; ".join(skipped))
    if not caps.onnxruntime:
        raise BackendUnavailable(_broken_install("onnxruntime", caps) or INSTALL["onnxruntime"])
    if device is not None and device.startswith("cuda"):
        raise BackendUnavailable(f"no backend can run on {device} here ({'; '.join(skipped)}): "
                                 f"use --device cpu or install the GPU extras (pip install .[gpu])")
    return Choice("onnxruntime", "cpu", "auto: " + ("; ".join(skipped) or "cpu requested"))


def cached_engine_precision(onnx_path: Path, precisions: tuple, device: str) -> str | None:
    """The first of `precisions` with an up-to-date TensorRT engine cached for this model, TensorRT
    version and GPU, or None (imports TensorRT and a CUDA binding; only called when both are there)."""
    try:
        import tensorrt as trt
        from engines.cache import EngineCache, file_sha256
        from engines.tensorrt_runner import make_memory
        mem = make_memory(device)
        try:
            gpu, cc = mem.device_info()
        finally:
            mem.close()
        cache, name, sha = EngineCache(), model_name_of(onnx_path), file_sha256(onnx_path)
        for p in precisions:
            if cache.find(name, onnx_sha256=sha, tensorrt_version=trt.__version__, gpu_name=gpu,
                          compute_capability=cc, precision=p) is not None:
                return p
    except Exception as e:  # an unusable GPU stack is "no engine": auto falls through to the next backend
        # A warning, not INFO: someone who built engines wants to know why they are not used.
        log.warning("TensorRT engine lookup failed (%s: %s); not using TensorRT",
                    type(e).__name__, " ".join(str(e).split()))
    return None


def create_runner(model: str | Path, backend: str = "auto", device: str | None = None,
                  threads: int | None = None, precision: str = "fp32",
                  caps: Capabilities | None = None, triton_url: str | None = None) -> Runner:
    """Open `model` (a name such as "analyser", or a path to an .onnx) on `backend`.

    backend: "auto" | "tensorrt" | "torch" | "onnxruntime" (aliases trt, pytorch, ort).
    device: None (best available), "cpu", "cuda" or "cuda:N".
    threads: CPU intra-op threads (ONNX Runtime; PyTorch on the CPU); default tuned for 2 cores.
    precision: "fp32", "fp16" (TensorRT engine / PyTorch on CUDA; CPU backends always compute in fp32),
        or "auto": fp16 on a GPU (a cached fp16 TensorRT engine, else an fp32 one), fp32 on the CPU.
    triton_url: the server for backend "triton" (grpc://host:port; default $UNMASK_TRITON_URL); the
        server chooses device and precision.
    """
    backend = normalise_backend(backend)
    if backend == "triton":
        why = unavailable_reason("triton", caps or Capabilities(), device)
        if why:
            raise BackendUnavailable(why)
        from engines.triton_runner import TritonRunner
        runner = TritonRunner(model, url=triton_url or os.environ.get(TRITON_URL_ENV, ""))
        runner.selection_reason = "requested"
        return runner
    if precision not in PRECISIONS + ("auto",):
        raise ModelError(f"unknown precision {precision!r}: choose fp32, fp16 or auto")
    _check_device(device)
    onnx_path = resolve_model(model)
    has_pt = onnx_path.with_suffix(".pt").exists()
    if caps is None:  # importing torch only pays off when PyTorch could be chosen
        caps = probe(torch_cuda=backend == "torch" or (backend == "auto" and device != "cpu" and has_pt))
    engine_precision = None
    if backend in ("auto", "tensorrt") and device != "cpu" and \
            unavailable_reason("tensorrt", caps, device) is None:
        wanted = ("fp16", "fp32") if precision == "auto" else (precision,)
        engine_precision = cached_engine_precision(onnx_path, wanted, "cuda:0" if device in (None, "cuda")
                                                   else device)
    choice = choose_backend(backend, device, caps, has_engine=engine_precision is not None,
                            has_torch_weights=has_pt)
    log.info("%s: %s on %s (%s)", onnx_path.stem, choice.backend, choice.device, choice.reason)
    on_gpu = choice.device != "cpu"
    if choice.backend == "tensorrt":
        from engines.tensorrt_runner import TensorRTRunner
        p = engine_precision or ("fp16" if precision == "auto" else precision)
        runner = TensorRTRunner(onnx_path, device=choice.device, precision=p)
    elif choice.backend == "torch":
        from engines.torch_runner import TorchRunner
        p = ("fp16" if on_gpu else "fp32") if precision == "auto" else precision
        runner = TorchRunner(onnx_path, device=choice.device, threads=threads, precision=p)
    else:
        from engines.onnxruntime_runner import OnnxRuntimeRunner
        p = ("fp16" if on_gpu else "fp32") if precision == "auto" else precision
        runner = OnnxRuntimeRunner(onnx_path, device=choice.device, threads=threads, precision=p)
    runner.selection_reason = choice.reason
    return runner


def available_backends(caps: Capabilities | None = None) -> dict[str, str | None]:
    """backend -> None if it can run here (on its best device), else why not (for `--help` / diagnostics)."""
    caps = caps or probe()
    out = {}
    for b in BACKENDS[1:]:
        dev = "cpu" if b == "onnxruntime" or (b == "torch" and not caps.torch_cuda) else None
        out[b] = unavailable_reason(b, caps, dev)
    return out
