"""Runners (ONNX Runtime, PyTorch, TensorRT with fakes), backend selection and the engine cache.

GPU tests carry `@pytest.mark.gpu` and skip with a reason where CUDA / TensorRT are absent.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engines import BackendUnavailable, InputMismatch, UnknownBackend, create_runner
from engines.base import ModelError
from engines.cache import EngineCache, EngineKey, file_sha256, profile_for
from engines.onnxruntime_runner import OnnxRuntimeRunner, default_threads
from engines.select import Capabilities, choose_backend, probe
from engines.tensorrt_runner import (CudaMemory, HostBuffer, TensorRTRunner, batch_slices, io_bindings,
                                     max_batch_of)
from engines.torch_runner import TorchRunner
from export.onnx import CONTRACTS, example_inputs, export_model, real_inputs_np
from models.networks import build

NAMES = ["analyser", "inpainter_fast"]


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
        return True
    except Exception:
        return False


HAS_CUDA = torch.cuda.is_available()
HAS_TRT = _tensorrt_importable()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU with CUDA PyTorch")
needs_trt = pytest.mark.skipif(not (HAS_TRT and HAS_CUDA),
                               reason="needs TensorRT (pip install .[gpu]) and an NVIDIA GPU")


@pytest.fixture(scope="module", autouse=True)
def _few_threads(one_torch_thread):
    """torch on one thread for this module (see conftest)."""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> .onnx path of a freshly initialised export (with .pt and .json beside it)."""
    out = tmp_path_factory.mktemp("weights")
    paths = {}
    for i, name in enumerate(NAMES):
        torch.manual_seed(7 + i)
        net = build(name).eval()
        export_model(name, net, out / f"{name}.onnx")
        paths[name] = out / f"{name}.onnx"
    return paths


def _astronaut_inputs(name: str) -> dict[str, np.ndarray] | None:
    """A real photo (scikit-image's astronaut wearing a mask template) shaped for `name`, or None."""
    try:
        import cv2
        from models.spec import ANALYSER, draw_landmark_map, window_matrix
        from stream.alignment import align_face
        from tests.faces import astronaut_landmarks, masked_astronaut
        image, covering = masked_astronaut()
        al = align_face(astronaut_landmarks())
        crop, cov = al.crop(image), al.crop(covering)
    except Exception:
        return None
    if name == "analyser":
        n = ANALYSER["input_size"]
        x = cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)[None] / 255.0
        return {"image": np.ascontiguousarray(x, np.float32)}
    m = window_matrix(128)
    win = cv2.warpAffine(crop, m, (128, 128), flags=cv2.INTER_AREA)
    hole = (cv2.warpAffine(cov, m, (128, 128), flags=cv2.INTER_NEAREST) > 127).astype(np.float32)
    lm = al.to_crop(astronaut_landmarks()) @ m[:, :2].T + m[:, 2]
    return {"image": np.ascontiguousarray(win.transpose(2, 0, 1)[None] / 255.0, np.float32),
            "hole": hole[None, None], "landmark_map": draw_landmark_map(lm, 128)[None, None],
            "gender": np.array([1.0], np.float32)}


def _random(name: str, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {k: t.numpy() for k, t in zip(CONTRACTS[name]["inputs"], example_inputs(name, batch, seed))}


# -- selection -----------------------------------------------------------------------------------

NOTHING = Capabilities(onnxruntime=True, ort_providers=("CPUExecutionProvider",), torch=True)
TRT_BOX = Capabilities(tensorrt=True, cuda_binding="cuda-python", cuda_gpus=1, torch=True, torch_cuda=True,
                       onnxruntime=True, ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))


@pytest.mark.parametrize("caps, device, engine, pt, want", [
    (TRT_BOX, None, True, True, ("tensorrt", "cuda:0")),
    (TRT_BOX, "cuda:1", True, True, ("tensorrt", "cuda:1")),
    (TRT_BOX, None, False, True, ("torch", "cuda:0")),           # no engine built yet
    (TRT_BOX, None, False, False, ("onnxruntime", "cuda:0")),    # no engine, no .pt: ORT CUDA
    (replace(TRT_BOX, cuda_binding=None), None, True, True, ("torch", "cuda:0")),
    (replace(TRT_BOX, tensorrt=False), None, True, True, ("torch", "cuda:0")),
    (replace(TRT_BOX, tensorrt=False, torch_cuda=False), None, False, True, ("onnxruntime", "cuda:0")),
    (replace(TRT_BOX, tensorrt=False, torch_cuda=False, ort_providers=("CPUExecutionProvider",)), None,
     False, True, ("onnxruntime", "cpu")),
    (TRT_BOX, "cpu", True, True, ("onnxruntime", "cpu")),         # --device cpu skips every GPU backend
    (NOTHING, None, False, True, ("onnxruntime", "cpu")),
])
def test_auto_picks_tensorrt_then_torch_cuda_then_onnxruntime(caps, device, engine, pt, want):
    c = choose_backend("auto", device, caps, has_engine=engine, has_torch_weights=pt)
    assert (c.backend, c.device) == want
    assert c.reason


def test_auto_here_is_onnxruntime_on_the_cpu(models):
    caps = probe()
    if caps.torch_cuda or (caps.tensorrt and caps.cuda_gpus):
        pytest.skip("this machine has a GPU backend")
    with create_runner(models["analyser"]) as r:
        assert isinstance(r, OnnxRuntimeRunner) and (r.name, r.device) == ("onnxruntime", "cpu")
        assert r.input_names == ["image"] and r.output_names == list(CONTRACTS["analyser"]["outputs"])


class _Stub:
    def __init__(self, path, device=None, precision=None, threads=None, **kw):
        self.path, self.device, self.precision, self.threads = path, device, precision, threads


@pytest.mark.parametrize("precision, cached, want", [
    ("auto", {"fp16", "fp32"}, ("tensorrt", "fp16")),
    ("auto", {"fp32"}, ("tensorrt", "fp32")),       # only an fp32 engine was built
    ("fp32", {"fp32"}, ("tensorrt", "fp32")),
    ("fp32", {"fp16"}, ("torch", "fp32")),          # no engine of the requested precision: next backend
    ("auto", set(), ("torch", "fp16")),             # PyTorch on CUDA computes in fp16 under "auto"
])
def test_create_runner_wires_precision_to_the_engine_lookup(models, monkeypatch, precision, cached, want):
    import engines.select as sel
    import engines.tensorrt_runner as tr
    import engines.torch_runner as trch
    asked = []

    def lookup(path, precisions, device):
        asked.append((Path(path).name, precisions, device))
        return next((p for p in precisions if p in cached), None)

    monkeypatch.setattr(sel, "cached_engine_precision", lookup)
    monkeypatch.setattr(tr, "TensorRTRunner", type("T", (_Stub,), {"name": "tensorrt"}))
    monkeypatch.setattr(trch, "TorchRunner", type("P", (_Stub,), {"name": "torch"}))
    r = sel.create_runner(models["analyser"], precision=precision, caps=TRT_BOX)
    assert (r.name, r.precision, r.device) == (*want, "cuda:0")
    assert asked == [("analyser.onnx", ("fp16", "fp32") if precision == "auto" else (precision,), "cuda:0")]
    assert r.selection_reason


@pytest.mark.parametrize("backend, caps, device, words", [
    ("tensorrt", NOTHING, None, ["pip install .[gpu]", "tensorrt", "NVIDIA GPU"]),
    ("tensorrt", replace(TRT_BOX, cuda_binding=None), None, ["cuda-python"]),
    ("tensorrt", replace(TRT_BOX, cuda_gpus=0), None, ["GPU"]),
    ("tensorrt", TRT_BOX, "cpu", ["GPU"]),
    ("torch", replace(NOTHING, torch=False), None, ["pip install torch"]),
    ("torch", NOTHING, "cuda", ["CUDA build of PyTorch"]),
    ("onnxruntime", NOTHING, "cuda:0", ["onnxruntime-gpu"]),
    ("onnxruntime", Capabilities(), None, ["pip install onnxruntime"]),
])
def test_explicit_missing_backend_is_one_line_naming_the_package(backend, caps, device, words):
    with pytest.raises(BackendUnavailable) as e:
        choose_backend(backend, device, caps)
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, ModelError)
    for w in words:
        assert w in msg, (w, msg)


def test_explicit_backends_that_exist_here(models):
    with create_runner(models["analyser"], backend="ort", device="cpu", threads=1) as r:
        assert r.name == "onnxruntime" and r.threads == 1
    with create_runner(models["analyser"], backend="torch", device="cpu") as r:
        assert r.name == "torch" and r.device == "cpu"


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_tensorrt_requested_without_tensorrt(models):
    with pytest.raises(BackendUnavailable) as e:
        create_runner(models["analyser"], backend="tensorrt")
    assert "\n" not in str(e.value) and "pip install .[gpu]" in str(e.value)
    with pytest.raises(BackendUnavailable):
        TensorRTRunner(models["analyser"])


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
def test_torch_cuda_requested_without_cuda(models):
    with pytest.raises(BackendUnavailable) as e:
        create_runner(models["analyser"], backend="torch", device="cuda:0")
    assert "CUDA build of PyTorch" in str(e.value)


def test_unknown_backend_device_and_precision_are_clear_errors(models):
    with pytest.raises(UnknownBackend) as e:
        create_runner(models["analyser"], backend="openvino")
    assert isinstance(e.value, ValueError)
    assert "'openvino'" in str(e.value) and all(b in str(e.value) for b in ("tensorrt", "torch", "onnxruntime"))
    with pytest.raises(ModelError, match="unknown device 'gpu0'"):
        create_runner(models["analyser"], device="gpu0")
    with pytest.raises(ModelError, match="unknown precision 'int8'"):
        create_runner(models["analyser"], precision="int8")


def test_missing_model_names_the_file_and_how_to_get_it(tmp_path):
    with pytest.raises(ModelError) as e:
        create_runner(tmp_path / "analyser.onnx")
    msg = str(e.value)
    assert str(tmp_path / "analyser.onnx") in msg and "python -m export.onnx --models analyser" in msg
    with pytest.raises(ModelError) as e:
        create_runner("no_such_model")
    assert "models/weights/no_such_model.onnx" in str(e.value)


def test_corrupt_model_is_a_model_error(tmp_path):
    bad = tmp_path / "analyser.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError) as e:
        OnnxRuntimeRunner(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)


# -- ONNX Runtime runner -------------------------------------------------------------------------

def test_onnxruntime_session_is_tuned_for_small_cpus(models):
    import onnxruntime as ort
    assert default_threads() == min(2, os.cpu_count() or 1)
    with OnnxRuntimeRunner(models["analyser"]) as r:
        so = r.session_options
        assert so.intra_op_num_threads == default_threads()
        assert so.inter_op_num_threads == 1
        assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
        assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        assert r.session.get_providers() == ["CPUExecutionProvider"]
    with OnnxRuntimeRunner(models["analyser"], threads=1) as r:
        assert r.session_options.intra_op_num_threads == 1


def test_specs_follow_the_contract(models):
    with OnnxRuntimeRunner(models["inpainter_fast"]) as r:
        assert [(s.name, s.shape) for s in r.input_specs] == [
            ("image", (None, 3, 128, 128)), ("hole", (None, 1, 128, 128)),
            ("landmark_map", (None, 1, 128, 128)), ("gender", (None,))]
        assert [(s.name, s.shape) for s in r.output_specs] == [("output", (None, 3, 128, 128))]
    with OnnxRuntimeRunner(models["analyser"]) as r:  # ORT reports symbolic Resize dims; the contract fills them
        assert [s.shape for s in r.output_specs] == [(None, 1, 128, 128), (None,), (None, 468, 2)]


@pytest.mark.parametrize("runner_cls", [OnnxRuntimeRunner, TorchRunner])
def test_inputs_are_validated_with_clear_errors(models, runner_cls):
    r = runner_cls(models["inpainter_fast"], device="cpu")
    good = _random("inpainter_fast", 2)
    cases = [
        ({k: v for k, v in good.items() if k != "hole"}, ["missing hole"]),
        ({**good, "extra": good["gender"]}, ["unexpected extra"]),
        ({**good, "image": good["image"].astype(np.float64)}, ["'image'", "float32", "float64"]),
        ({**good, "image": good["image"][:, :, :64]}, ["'image'", "(N, 3, 128, 128)", "(2, 3, 64, 128)"]),
        ({**good, "gender": good["gender"][:1]}, ["disagree", "'gender'"]),
        ({**good, "hole": good["hole"].tolist()}, ["numpy array"]),
    ]
    for bad, words in cases:
        with pytest.raises(InputMismatch) as e:
            r.run(bad)
        assert "\n" not in str(e.value) and isinstance(e.value, ValueError)
        for w in words:
            assert w in str(e.value), (w, str(e.value))
    r.close()


@pytest.mark.parametrize("runner_cls", [OnnxRuntimeRunner, TorchRunner])
def test_zero_faces_give_empty_outputs(models, runner_cls):
    with runner_cls(models["analyser"], device="cpu") as r:
        out = r.run({"image": np.zeros((0, 3, 128, 128), np.float32)})
        assert {k: v.shape for k, v in out.items()} == {
            "mask_logits": (0, 1, 128, 128), "gender_logit": (0,), "landmarks": (0, 468, 2)}


def test_closed_runner_refuses_to_run(models):
    r = OnnxRuntimeRunner(models["analyser"])
    r.close()
    r.close()  # idempotent
    with pytest.raises(ModelError, match="closed"):
        r.run(_random("analyser", 1))


# -- PyTorch runner and parity -------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_onnxruntime_and_torch_agree_on_cpu(models, name):
    feeds = [_random(name, 1, seed=1), _random(name, 3, seed=2), real_inputs_np(name, 3, seed=3)]
    photo = _astronaut_inputs(name)
    if photo is not None:
        feeds.append(photo)
    with OnnxRuntimeRunner(models[name]) as ort_r, TorchRunner(models[name], device="cpu") as torch_r:
        assert torch_r.precision == "fp32" and torch_r.input_names == ort_r.input_names
        assert torch_r.output_names == ort_r.output_names
        for feed in feeds:
            a, b = ort_r.run(feed), torch_r.run(feed)
            assert list(a) == list(b) == ort_r.output_names
            for k in a:
                assert a[k].dtype == b[k].dtype == np.float32 and a[k].shape == b[k].shape
                assert np.abs(a[k] - b[k]).max() <= 1e-4, (k, np.abs(a[k] - b[k]).max())


def test_torch_runner_on_cpu_stays_fp32(models):
    with TorchRunner(models["analyser"], device="cpu", precision="fp16") as r:
        assert r.precision == "fp32" and next(r.net.parameters()).dtype == torch.float32


def test_torch_runner_needs_its_pt_weights(models, tmp_path):
    lone = tmp_path / "analyser.onnx"
    lone.write_bytes(models["analyser"].read_bytes())
    with pytest.raises(ModelError) as e:
        TorchRunner(lone, device="cpu")
    assert "analyser.pt" in str(e.value) and "python -m export.onnx" in str(e.value)


def test_torch_runner_loads_tensors_only(models, tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "analyser.onnx").write_bytes(models["analyser"].read_bytes())
    torch.save({"weights": SimpleNamespace(evil=True)}, d / "analyser.pt")  # needs a full unpickler
    with pytest.raises(ModelError) as e:
        TorchRunner(d / "analyser.onnx", device="cpu")
    assert "weights_only" in str(e.value) and "\n" not in str(e.value)


def test_torch_runner_rejects_weights_of_another_export(models, tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    for ext in (".onnx", ".json"):
        (d / f"analyser{ext}").write_bytes(models["analyser"].with_suffix(ext).read_bytes())
    torch.manual_seed(123)
    torch.save(build("analyser").state_dict(), d / "analyser.pt")  # valid tensors, wrong export
    with pytest.raises(ModelError, match="sha256"):
        TorchRunner(d / "analyser.onnx", device="cpu")


# -- engine cache --------------------------------------------------------------------------------

KEY = EngineKey(onnx_sha256="ab" * 32, tensorrt_version="10.9.0.34", gpu_name="NVIDIA GeForce RTX 4090",
                compute_capability="8.9", precision="fp16", profile=(1, 4, 8), workspace_bytes=1 << 30)


def test_cache_key_is_stable():
    same = EngineKey(**{**KEY.fields(), "profile": [1, 4, 8]})
    assert same == KEY and same.digest() == KEY.digest() == EngineKey.from_fields(KEY.fields()).digest()
    assert len(KEY.digest()) == 64 and KEY.short == KEY.digest()[:16]
    assert EngineCache("/c").engine_path("analyser", KEY) == Path("/c") / f"analyser-{KEY.short}.engine"


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "cd" * 32}, {"tensorrt_version": "11.0.0.1"}, {"gpu_name": "NVIDIA A10"},
    {"compute_capability": "8.6"}, {"precision": "fp32"}, {"profile": (1, 8, 16)}, {"profile": (1, 2, 8)},
    {"profile": (2, 4, 8)}, {"workspace_bytes": 2 << 30},
])
def test_cache_key_changes_with_every_field(change, tmp_path):
    other = replace(KEY, **change)
    assert other.digest() != KEY.digest()
    cache = EngineCache(tmp_path)
    cache.store("analyser", KEY, b"engine-A")
    assert cache.is_fresh("analyser", KEY)
    assert not cache.is_fresh("analyser", other)  # stale: would be rebuilt


def test_cache_store_is_fresh_and_detects_damage(tmp_path):
    cache = EngineCache(tmp_path)
    assert not cache.is_fresh("analyser", KEY)
    path = cache.store("analyser", KEY, b"\x00engine\xff", extra={"mode": "fp16"})
    assert path.name == f"analyser-{KEY.short}.engine" and path.read_bytes() == b"\x00engine\xff"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["key"] == KEY.digest() and meta["fields"] == KEY.fields() and meta["mode"] == "fp16"
    assert meta["fields"]["profile"] == [1, 4, 8] and meta["engine_sha256"] == file_sha256(path)
    assert cache.is_fresh("analyser", KEY)
    assert not list(tmp_path.glob("*.tmp"))
    path.write_bytes(b"truncated")                      # a damaged engine is not fresh
    assert not cache.is_fresh("analyser", KEY)
    cache.store("analyser", KEY, b"engine")
    meta["fields"]["precision"] = "fp32"                # a meta file that lies about its fields
    path.with_suffix(".json").write_text(json.dumps(meta))
    assert not cache.is_fresh("analyser", KEY)
    path.with_suffix(".json").unlink()
    assert not cache.is_fresh("analyser", KEY)


def test_cache_find_and_prune(tmp_path):
    cache = EngineCache(tmp_path)
    small = KEY
    big = replace(KEY, profile=(1, 8, 16))
    other_gpu = replace(KEY, gpu_name="NVIDIA A10", compute_capability="8.6")
    old_onnx = replace(KEY, onnx_sha256="00" * 32)
    for k in (small, big, other_gpu, old_onnx):
        cache.store("analyser", k, k.short.encode())
    cache.store("analyser_x", KEY, b"another model with a prefix name")
    q = dict(onnx_sha256=KEY.onnx_sha256, tensorrt_version=KEY.tensorrt_version, gpu_name=KEY.gpu_name,
             compute_capability=KEY.compute_capability, precision="fp16")
    assert cache.find("analyser", **q)[1] == big                      # the largest batch by default
    assert cache.find("analyser", **q, max_batch=8)[1] == small
    assert cache.find("analyser", **q, max_batch=4) is None
    assert cache.find("analyser", **{**q, "precision": "fp32"}) is None
    assert cache.find("analyser", **{**q, "tensorrt_version": "11.0"}) is None
    removed = cache.prune("analyser", big)
    assert sorted(p.name for p in removed) == sorted(
        f"analyser-{k.short}{ext}" for k in (small, old_onnx) for ext in (".engine", ".json"))
    left = {EngineKey.from_fields(m["fields"]) for _, m in cache.entries("analyser")}
    assert left == {big, other_gpu}                                  # other GPUs keep their engines
    assert len(cache.entries("analyser_x")) == 1


def test_timing_cache_roundtrip(tmp_path):
    cache = EngineCache(tmp_path)
    args = ("NVIDIA GeForce RTX 4090", "8.9", "10.9.0.34")
    assert cache.load_timing_cache(*args) == b""
    p = cache.save_timing_cache(*args, b"\x01\x02")
    assert cache.load_timing_cache(*args) == b"\x01\x02" and p.parent == tmp_path
    assert " " not in p.name and "4090" in p.name and "10.9.0.34" in p.name
    assert cache.load_timing_cache("NVIDIA A10", "8.6", "10.9.0.34") == b""


def test_profile_for():
    assert profile_for(1) == (1, 1, 1) and profile_for(8) == (1, 4, 8) and profile_for(5) == (1, 2, 5)
    with pytest.raises(ValueError):
        profile_for(0)
    with pytest.raises(ValueError):
        replace(KEY, profile=(4, 2, 8))


# -- TensorRT runner with a fake engine ----------------------------------------------------------

class FakeTRT:
    __version__ = "10.9.0.34"

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"

    @staticmethod
    def nptype(dt):
        return dt


class FakeMemory(CudaMemory):
    """'Device' memory in numpy arrays keyed by fake pointers; counts allocations."""

    kind = "fake"
    stream_handle = 1234

    def __init__(self):
        self.dev, self.next, self.mallocs, self.hosts, self.freed, self.syncs = {}, 4096, 0, 0, [], 0
        self.closed = False

    def malloc(self, nbytes):
        self.mallocs += 1
        ptr, self.next = self.next, self.next + nbytes + 256
        self.dev[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def free(self, ptr):
        self.freed.append(ptr)
        del self.dev[ptr]

    def host(self, nbytes):
        self.hosts += 1
        return HostBuffer(np.zeros(nbytes, np.uint8))

    def free_host(self, buf):
        buf.array = None

    def htod(self, dst, src, nbytes):
        self.dev[dst][:nbytes] = src.array[:nbytes]

    def dtoh(self, dst, src, nbytes):
        dst.array[:nbytes] = self.dev[src][:nbytes]

    def synchronize(self):
        self.syncs += 1

    def device_info(self):
        return "NVIDIA Fake", "8.9"

    def close(self):
        self.closed = True


class FakeEngine:
    """out = 2 * image (fp16 or fp32), score = per-face sum of image; profile batch 1..max."""

    def __init__(self, mem, io_dtype=np.float32, max_batch=4, dynamic_channels=False):
        self.mem, self.dt, self.maxb = mem, np.dtype(io_dtype), max_batch
        self.tensors = [("image", "in", (-1, -1 if dynamic_channels else 3, 4, 4), self.dt),
                        ("out", "out", (-1, 3, 4, 4), self.dt), ("score", "out", (-1,), np.dtype(np.float32))]
        self.num_io_tensors = len(self.tensors)
        self.contexts = []

    def get_tensor_name(self, i):
        return self.tensors[i][0]

    def _t(self, name):
        return next(t for t in self.tensors if t[0] == name)

    def get_tensor_mode(self, name):
        return self._t(name)[1]

    def get_tensor_dtype(self, name):
        return self._t(name)[3]

    def get_tensor_shape(self, name):
        return self._t(name)[2]

    def get_tensor_profile_shape(self, name, profile):
        assert profile == 0
        rest = self._t(name)[2][1:]
        return [(1,) + rest, (max(1, self.maxb // 2),) + rest, (self.maxb,) + rest]

    def create_execution_context(self):
        ctx = FakeContext(self)
        self.contexts.append(ctx)
        return ctx


class FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addr, self.shape_calls, self.runs = engine, {}, {}, [], 0

    def set_input_shape(self, name, shape):
        if not 1 <= shape[0] <= self.engine.maxb:
            return False
        self.shapes[name] = tuple(shape)
        self.shape_calls.append(tuple(shape))
        return True

    def get_tensor_shape(self, name):
        b = self.shapes["image"][0]
        return {"image": self.shapes["image"], "out": (b, 3, 4, 4), "score": (b,)}[name]

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr
        return True

    def execute_async_v3(self, stream):
        assert stream == 1234
        self.runs += 1
        e, mem = self.engine, self.engine.mem
        shape = self.shapes["image"]
        n = math.prod(shape)
        x = mem.dev[self.addr["image"]][:n * e.dt.itemsize].view(e.dt).reshape(shape)
        y = (2 * x.astype(np.float32)).astype(e.dt)
        mem.dev[self.addr["out"]][:y.nbytes] = y.reshape(-1).view(np.uint8)
        s = x.astype(np.float32).reshape(shape[0], -1).sum(1).astype(np.float32)
        mem.dev[self.addr["score"]][:s.nbytes] = s.view(np.uint8)
        return True


def _fake_runner(io_dtype=np.float32, max_batch=4):
    mem = FakeMemory()
    engine = FakeEngine(mem, io_dtype, max_batch)
    return TensorRTRunner.from_engine(engine, mem, FakeTRT, model_name="fake", precision="fp16"), mem, engine


def test_tensorrt_bindings_and_batch_slices():
    mem = FakeMemory()
    b = io_bindings(FakeEngine(mem, max_batch=6), FakeTRT)
    assert [(x.name, x.is_input, x.shape) for x in b] == [
        ("image", True, (-1, 3, 4, 4)), ("out", False, (-1, 3, 4, 4)), ("score", False, (-1,))]
    assert b[0].profile == ((1, 3, 4, 4), (3, 3, 4, 4), (6, 3, 4, 4)) and max_batch_of(b) == 6
    assert batch_slices(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_slices(4, 4) == [(0, 4)] and batch_slices(1, 8) == [(0, 1)] and batch_slices(0, 3) == []
    with pytest.raises(ValueError):
        batch_slices(3, 0)
    with pytest.raises(ModelError, match="dynamic"):
        io_bindings(FakeEngine(mem, dynamic_channels=True), FakeTRT)


@pytest.mark.parametrize("io_dtype", [np.float32, np.float16])
def test_tensorrt_runner_chunks_batches_without_allocating(io_dtype):
    r, mem, engine = _fake_runner(io_dtype, max_batch=4)
    ctx = engine.contexts[0]
    assert r.max_batch == 4 and r.input_names == ["image"] and r.output_names == ["out", "score"]
    assert [s.shape for s in r.output_specs] == [(None, 3, 4, 4), (None,)]
    allocated = (mem.mallocs, mem.hosts)
    assert allocated == (3, 3)  # one device + one pinned buffer per tensor, sized for batch 4
    assert all(len(mem.dev[p]) == 4 * 3 * 4 * 4 * np.dtype(io_dtype).itemsize for n, p in r._dev.items()
               if n != "score")
    assert set(ctx.addr.values()) == set(r._dev.values())
    rng = np.random.default_rng(0)
    for n in (1, 4, 10, 3):
        x = rng.random((n, 3, 4, 4), dtype=np.float32)
        ctx.shape_calls.clear()
        runs = ctx.runs
        out = r.run({"image": x})
        assert out["out"].dtype == np.float32 and out["out"].shape == (n, 3, 4, 4)
        xr = x.astype(io_dtype).astype(np.float32)
        np.testing.assert_allclose(out["out"], 2 * xr, rtol=1e-3 if io_dtype == np.float16 else 0)
        np.testing.assert_allclose(out["score"], xr.reshape(n, -1).sum(1), rtol=1e-5)
        assert [s[0] for s in ctx.shape_calls] == [b - a for a, b in batch_slices(n, 4)]
        assert ctx.runs - runs == math.ceil(n / 4)
    assert (mem.mallocs, mem.hosts) == allocated  # no allocation per call
    empty = r.run({"image": np.zeros((0, 3, 4, 4), np.float32)})
    assert empty["out"].shape == (0, 3, 4, 4) and empty["score"].shape == (0,)
    with pytest.raises(InputMismatch):
        r.run({"image": np.zeros((2, 3, 5, 4), np.float32)})
    dev = set(r._dev.values())
    r.close()
    assert set(mem.freed) == dev and mem.closed and r.context is None
    r.close()
    with pytest.raises(ModelError, match="closed"):
        r.run({"image": np.zeros((1, 3, 4, 4), np.float32)})


def test_tensorrt_runner_finds_its_engine_in_the_cache(models, tmp_path, monkeypatch):
    """The constructor path: key -> engines_cache lookup -> deserialise; a missing engine says how to build it."""
    import engines.tensorrt_runner as tr
    mem = FakeMemory()
    engine = FakeEngine(mem, max_batch=8)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            assert data == b"serialised"
            return engine

    fake = SimpleNamespace(__version__="10.9.0.34", TensorIOMode=FakeTRT.TensorIOMode, nptype=FakeTRT.nptype,
                           Runtime=Runtime)
    monkeypatch.setattr(tr, "import_tensorrt", lambda: fake)
    monkeypatch.setattr(tr, "_LOGGER", "logger")
    onnx_path = models["analyser"]
    with pytest.raises(ModelError) as e:
        TensorRTRunner(onnx_path, cache_dir=tmp_path, memory=mem)
    msg = str(e.value)
    assert "python -m export.build_engines --precision fp16 --models analyser" in msg and "NVIDIA Fake" in msg
    key = EngineKey(file_sha256(onnx_path), "10.9.0.34", "NVIDIA Fake", "8.9", "fp16", (1, 4, 8), 1 << 30)
    EngineCache(tmp_path).store("analyser", key, b"serialised")
    r = TensorRTRunner(onnx_path, cache_dir=tmp_path, memory=mem)
    assert r.engine_path == EngineCache(tmp_path).engine_path("analyser", key) and r.max_batch == 8
    with pytest.raises(ModelError):  # an fp32 engine was never built
        TensorRTRunner(onnx_path, cache_dir=tmp_path, memory=FakeMemory(), precision="fp32")


# -- GPU (skipped here) ------------------------------------------------------------------------

@gpu
@needs_cuda
@pytest.mark.parametrize("name", NAMES)
def test_torch_cuda_fp16_close_to_onnxruntime_and_graphs_match_eager(models, name):
    feed = real_inputs_np(name, 5, seed=4)
    with OnnxRuntimeRunner(models[name]) as ref, TorchRunner(models[name], device="cuda:0") as eager, \
            TorchRunner(models[name], device="cuda:0", cuda_graphs=True, max_batch=4) as graphed:
        assert eager.precision == "fp16"
        a, b = ref.run(feed), eager.run(feed)
        c, c2 = graphed.run(feed), graphed.run(feed)  # capture, then replay
        for k in a:
            scale = max(1.0, float(np.abs(a[k]).max()))
            assert np.abs(a[k] - b[k]).max() <= 2e-2 * scale, k
            np.testing.assert_allclose(c[k], b[k], atol=1e-3 * scale)
            np.testing.assert_array_equal(c[k], c2[k])


@gpu
@pytest.mark.tensorrt
@needs_trt
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_tensorrt_engine_close_to_onnxruntime(models, tmp_path, precision, tol):
    import tensorrt as trt
    from export.build_engines import build_engine, check_engine
    from engines.tensorrt_runner import make_memory
    mem = make_memory("cuda:0")
    gpu_name, cc = mem.device_info()
    path = models["inpainter_fast"]
    plan, timing, _ = build_engine(trt, path, precision, profile_for(4), 1 << 30)
    key = EngineKey(file_sha256(path), trt.__version__, gpu_name, cc, precision, profile_for(4), 1 << 30)
    EngineCache(tmp_path).store("inpainter_fast", key, plan)
    with TensorRTRunner(path, precision=precision, cache_dir=tmp_path, memory=mem) as r, \
            OnnxRuntimeRunner(path) as ref:
        assert r.max_batch == 4
        err = check_engine(r, ref, batches=(1, 4, 7))
        assert max(err.values()) <= tol, err
        feed = real_inputs_np("inpainter_fast", 3)
        out = r.run(feed)["output"]
        outside = np.broadcast_to(feed["hole"] == 0, out.shape)
        assert np.abs(out[outside] - feed["image"][outside]).max() <= tol
    assert timing
