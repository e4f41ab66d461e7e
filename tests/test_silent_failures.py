"""Failures that used to be silent: a broken (not missing) backend install, a failed TensorRT
engine-cache lookup, build_engines on the documented [gpu] install."""
from __future__ import annotations

import configparser
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BROKEN = "libcublasLt.so.12: cannot open shared object file: No such file or directory"


def broken_package(folder: Path, name: str, exc: str = "ImportError") -> Path:
    """A package `name` in `folder` that is installed but fails to import, like a wheel whose
    native libraries are missing."""
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(f"raise {exc}({BROKEN!r})\n")
    return folder


def run_python(code: str, *paths: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, paths), str(ROOT)]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.parametrize("package, exc", [("onnxruntime", "ImportError"), ("tensorrt", "OSError"),
                                          ("torch", "RuntimeError")])
def test_a_broken_install_says_what_failed(tmp_path, package, exc):
    fakes = broken_package(tmp_path, package, exc)
    backend = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt", "torch": "torch"}[package]
    device = "cpu" if package == "onnxruntime" else "cuda"
    proc = run_python(
        "from engines import select\n"
        "select._torch_is_cpu_only_build = lambda: False  # the real wheel's metadata says +cpu\n"
        f"print(select.unavailable_reason({backend!r}, select.probe(), {device!r}))", fakes)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert "not installed" not in line and "failed to import" in line
    assert BROKEN in line and exc in line


def test_cli_names_the_import_error_of_a_broken_backend(tmp_path):
    from faces import make_face_clip
    clip = make_face_clip(tmp_path / "in.mp4", n=2, audio=False)
    fakes = broken_package(tmp_path / "fakes", "onnxruntime")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fakes), str(ROOT)]))
    proc = subprocess.run([sys.executable, str(ROOT / "run_stream.py"), "--source", str(clip),
                           "--no-display", "--backend", "onnxruntime"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and BROKEN in errors[0] and "not installed" not in errors[0]


def test_a_failed_engine_cache_lookup_is_a_visible_warning(tmp_path, monkeypatch, caplog):
    from engines import select
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.0"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    model = tmp_path / "analyser.onnx"
    model.write_bytes(b"not a real model")
    import engines.tensorrt_runner as trt_runner

    def no_gpu(device):
        raise RuntimeError("cuInit failed: CUDA_ERROR_NO_DEVICE")
    monkeypatch.setattr(trt_runner, "make_memory", no_gpu)
    with caplog.at_level(logging.WARNING, logger="unmask.engines"):
        assert select.cached_engine_precision(model, ("fp16",), "cuda:0") is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "CUDA_ERROR_NO_DEVICE" in warnings[0].getMessage()


def test_the_cli_shows_library_warnings_on_one_redacted_line():
    proc = run_python(
        "import logging, run_stream\n"
        "run_stream.configure_logging(verbose=False)\n"
        "logging.getLogger('unmask.engines').warning('lookup failed for rtsp://a:p@ss@cam/x')\n"
        "logging.getLogger('unmask.engines').info('chatter')\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "warning: lookup failed for rtsp://***@cam/x"


def test_the_gpu_extra_installs_what_build_engines_imports():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    gpu = config["options.extras_require"]["gpu"]
    names = {line.split(">")[0].split("=")[0].split("<")[0].strip() for line in gpu.splitlines() if line.strip()}
    assert {"tensorrt", "cuda-python", "onnx"} <= names


def test_build_engines_without_onnx_is_one_line(tmp_path):
    fakes = tmp_path / "fakes"
    (fakes / "tensorrt").mkdir(parents=True)
    (fakes / "tensorrt" / "__init__.py").write_text("__version__ = '10.9.0'\n")
    broken_package(fakes, "onnx", "ModuleNotFoundError")
    proc = run_python("import sys; from export import build_engines; sys.exit(build_engines.main([]))", fakes)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "onnx" in proc.stderr and "pip install" in proc.stderr


def test_build_engines_with_a_broken_tensorrt_says_what_failed(tmp_path):
    fakes = broken_package(tmp_path, "tensorrt", "OSError")
    proc = run_python("import sys; from export import build_engines; sys.exit(build_engines.main([]))", fakes)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and BROKEN in proc.stderr
