"""ONNX export (sidecar, .pt state dict, dynamic batch, CLI), the fp16 graph pass and build_engines.

Models are freshly initialised and exported into tmp folders: the shipped
weights may not exist (or may change) while training runs.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export import build_engines
from export.onnx import (CONTRACTS, OPSET, PARITY_TOL, SIMPLIFY_MISSING, example_inputs, export_model,
                         maybe_simplify, real_inputs, real_inputs_np, sha256)
from models.networks import build

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["analyser", "inpainter_fast"]


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
        return True
    except Exception:
        return False


@pytest.fixture(scope="module", autouse=True)
def _few_threads(one_torch_thread):
    """torch on one thread for this module (see conftest)."""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (onnx path, sidecar, the PyTorch model it came from)."""
    out = tmp_path_factory.mktemp("weights")
    result = {}
    for i, name in enumerate(NAMES):
        torch.manual_seed(100 + i)
        model = build(name).eval()
        side = export_model(name, model, out / f"{name}.onnx", real_inputs=real_inputs(name, 3))
        result[name] = (out / f"{name}.onnx", side, model)
    return result


# -- export_model ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_sidecar_matches_file_and_contract(exported, name):
    path, side, model = exported[name]
    on_disk = json.loads(path.with_suffix(".json").read_text())
    assert on_disk == side
    assert side["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == sha256(path)
    assert side["name"] == name and side["opset"] == OPSET == 17
    assert list(side["inputs"]) == list(CONTRACTS[name]["inputs"])
    assert list(side["outputs"]) == list(CONTRACTS[name]["outputs"])
    assert set(side["parity_max_abs_err"]) == {"random", "real"}
    assert all(0 <= v <= PARITY_TOL for v in side["parity_max_abs_err"].values())
    assert side["params"] == sum(p.numel() for p in model.parameters())
    assert side["state_dict"] == {"file": f"{name}.pt", "sha256": sha256(path.with_suffix(".pt"))}
    assert side["simplified"] is False
    assert not list(path.parent.glob("*.tmp")), "temporary files left behind"


@pytest.mark.parametrize("name", NAMES)
def test_graph_has_named_io_and_a_dynamic_faces_axis(exported, name):
    path, _, _ = exported[name]
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    assert m.opset_import[0].version == 17
    assert [i.name for i in m.graph.input] == list(CONTRACTS[name]["inputs"])
    assert [o.name for o in m.graph.output] == list(CONTRACTS[name]["outputs"])
    for v in list(m.graph.input) + list(m.graph.output):
        assert v.type.tensor_type.shape.dim[0].dim_param == "faces", v.name


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("name", NAMES)
def test_dynamic_batch_matches_pytorch(exported, name, batch):
    path, _, model = exported[name]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    args = example_inputs(name, batch, seed=batch)
    in_names = list(CONTRACTS[name]["inputs"])
    got = sess.run(None, {n: t.numpy() for n, t in zip(in_names, args)})
    with torch.no_grad():
        ref = model(*args)
    ref = ref if isinstance(ref, tuple) else (ref,)
    for r, g in zip(ref, got):
        assert g.shape == tuple(r.shape) and g.shape[0] == batch
        assert np.abs(r.numpy() - g).max() <= PARITY_TOL
    if name.startswith("inpainter"):
        image, hole = args[0].numpy(), args[1].numpy()
        outside = np.broadcast_to(hole == 0, image.shape)
        np.testing.assert_array_equal(got[0][outside], image[outside])


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_is_plain_tensors_and_rebuilds_the_network(exported, name):
    path, _, model = exported[name]
    state = torch.load(path.with_suffix(".pt"), map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and state
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert set(state) == set(model.state_dict())
    rebuilt = build(name)
    rebuilt.load_state_dict(state, strict=True)
    rebuilt.eval()
    args = real_inputs(name, 2, seed=5)
    with torch.no_grad():
        a, b = model(*args), rebuilt(*args)
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert torch.equal(x, y)


def test_real_inputs_are_face_like_and_follow_the_contracts():
    for name in CONTRACTS:
        d = real_inputs_np(name, 3, seed=1)
        assert list(d) == list(CONTRACTS[name]["inputs"])
        for k, a in d.items():
            want = CONTRACTS[name]["inputs"][k].split()[0].split(",")
            assert a.dtype == np.float32
            assert a.shape == tuple([3] + [int(x) for x in want[1:]])
            lo = -1.0 if name == "face_detector" else 0.0       # BlazeFace reads [-1, 1]
            assert lo <= a.min() and a.max() <= 1.0
        if "hole" in d:
            hole = d["hole"]
            assert set(np.unique(hole)) <= {0.0, 1.0}
            frac = hole.mean(axis=(1, 2, 3))
            assert np.all((frac > 0.1) & (frac < 0.9)), frac          # a covering, not the whole window
            assert np.all(d["landmark_map"].reshape(3, -1).max(1) > 0.5)  # guide curves drawn
            # the covering is the lower part of the window
            h = hole.shape[-2]
            assert hole[:, :, h // 2:].mean() > hole[:, :, : h // 4].mean()
        img = d["image"]
        assert img.std() > 0.05  # not flat
    a, b, c = real_inputs_np("analyser", 2, 7), real_inputs_np("analyser", 2, 7), real_inputs_np("analyser", 2, 8)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])


def test_simplify_without_onnxsim_says_so_and_still_exports(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxsim", None)  # import onnxsim -> ImportError
    proto = onnx.ModelProto()
    same, why = maybe_simplify(proto)
    assert same is proto and why == SIMPLIFY_MISSING and "pip install onnxsim" in why
    torch.manual_seed(0)
    side = export_model("inpainter_fast", build("inpainter_fast").eval(), tmp_path / "inpainter_fast.onnx",
                        simplify=True)
    assert side["simplified"] is False
    assert (tmp_path / "inpainter_fast.onnx").exists() and (tmp_path / "inpainter_fast.pt").exists()
    err = capsys.readouterr().err
    assert "onnxsim is not installed" in err and err.count("\n") == 1


# -- the CLI -------------------------------------------------------------------------------------

def test_cli_exports_from_a_checkpoint_and_reports_random_and_real_parity(tmp_path, capsys):
    torch.manual_seed(3)
    model = build("analyser").eval()
    (tmp_path / "ckpt" / "analyser").mkdir(parents=True)
    torch.save({"model": model.state_dict(), "step": 1}, tmp_path / "ckpt" / "analyser" / "last.pt")
    from export.onnx import main
    rc = main(["--models", "analyser", "--out", str(tmp_path / "w"), "--checkpoints", str(tmp_path / "ckpt"),
               "--real-batch", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "analyser" in out and "random" in out and "real" in out
    for ext in (".onnx", ".pt", ".json"):
        assert (tmp_path / "w" / f"analyser{ext}").exists()
    side = json.loads((tmp_path / "w" / "analyser.json").read_text())
    assert set(side["parity_max_abs_err"]) == {"random", "real"}


def test_cli_rejects_unknown_models_and_missing_checkpoints(tmp_path, capsys):
    from export.onnx import main
    assert main(["--models", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["--models", "analyser", "--out", str(tmp_path), "--checkpoints", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "last.pt" in err
    assert not (tmp_path / "analyser.onnx").exists()


# -- the fp16 graph pass (TensorRT 11 strongly typed path) -------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_fp16_pass_keeps_float32_io_and_runs(exported, name):
    path, _, _ = exported[name]
    fp32 = onnx.load(str(path))
    fp16 = build_engines.convert_float_to_float16(fp32)
    onnx.checker.check_model(fp16, full_check=True)
    onnx.shape_inference.infer_shapes(fp16, check_type=True, strict_mode=True)
    F, H = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [i.type.tensor_type.elem_type for i in fp16.graph.input] == [F] * len(fp16.graph.input)
    assert [o.type.tensor_type.elem_type for o in fp16.graph.output] == [F] * len(fp16.graph.output)
    assert [i.name for i in fp16.graph.input] == [i.name for i in fp32.graph.input]
    assert [o.name for o in fp16.graph.output] == [o.name for o in fp32.graph.output]
    assert fp16.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "faces"
    # every weight is fp16 now ...
    assert fp16.graph.initializer and all(i.data_type == H for i in fp16.graph.initializer
                                          if i.data_type in (F, H))
    # ... except the Resize scales, which ONNX requires in float32
    inferred = onnx.shape_inference.infer_shapes(fp16)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    consts = {n.output[0]: n.attribute[0].t.data_type for n in fp16.graph.node if n.op_type == "Constant"}
    for n in fp16.graph.node:
        if n.op_type == "Resize" and len(n.input) > 2 and n.input[2]:
            assert consts.get(n.input[2], types.get(n.input[2])) == F
    # numerically the same network
    feed = real_inputs_np(name, 2, seed=2)
    a = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    b = ort.InferenceSession(fp16.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    for x, y in zip(a, b):
        assert y.dtype == np.float32 and y.shape == x.shape
        assert np.abs(x - y).max() <= 2e-3 + 1e-2 * np.abs(x).max()
    # the source model is untouched
    assert all(i.data_type == F for i in fp32.graph.initializer if i.data_type in (F, H))


def test_fp16_pass_shares_a_weight_between_fp32_and_fp16_users():
    from onnx import TensorProto as T, helper as h, numpy_helper as nh
    scales = nh.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    g = h.make_graph(
        [h.make_node("Resize", ["x", "", "s"], ["r"], mode="linear"),
         h.make_node("Mul", ["r", "s"], ["y"])],  # "s" also feeds an fp16 Mul (broadcast on W)
        "g", [h.make_tensor_value_info("x", T.FLOAT, ["n", 1, 2, 2])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 1, 4, 4])], [scales])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    c = build_engines.convert_float_to_float16(m)
    onnx.checker.check_model(c, full_check=True)
    inits = {i.name: i.data_type for i in c.graph.initializer}
    assert inits == {"s": T.FLOAT, "s__fp16": T.FLOAT16}
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    a = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    b = ort.InferenceSession(c.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(a, b, atol=1e-2)


# -- build_engines -------------------------------------------------------------------------------

@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed here: the no-TensorRT path cannot be seen")
def test_build_engines_without_tensorrt_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "export.build_engines", "--precision", "fp16"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == build_engines.TENSORRT_MISSING
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "pip install .[gpu]" in proc.stderr and "NVIDIA GPU" in proc.stderr


def test_build_engines_main_without_tensorrt_in_process(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # works even where TensorRT is installed
    assert build_engines.main(["--precision", "fp32", "--max-batch", "4"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == build_engines.TENSORRT_MISSING and captured.out == ""


def test_build_engines_validates_arguments(capsys):
    for argv in (["--max-batch", "0"], ["--workspace", "0"], ["--precision", "int8"]):
        with pytest.raises(SystemExit) as e:
            build_engines.main(argv)
        assert e.value.code == 2
    capsys.readouterr()


# -- build_engines against a fake TensorRT (both API generations) ------------------------------

class _Flags(SimpleNamespace):
    pass


def fake_trt(generation: int, parse_ok: bool = True):
    """A stand-in `tensorrt` module recording what the builder is asked to do.
    generation 10: weak typing (BuilderFlag.FP16, deprecated EXPLICIT_BATCH);
    generation 11: no FP16 flag, no EXPLICIT_BATCH, STRONGLY_TYPED only."""
    rec = SimpleNamespace(flags=None, set_flags=[], cleared=[], profile=[], workspace=None, parsed=None,
                          parsed_model=None, timing_in=None, built=0)
    bf = {"TF32": "TF32"}
    nf = {"STRONGLY_TYPED": 5}
    if generation == 10:
        bf["FP16"] = "FP16"
        nf["EXPLICIT_BATCH"] = 0

    class Network:
        def __init__(self):
            self.inputs = []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class Parser:
        num_errors = 1

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            rec.parsed = path
            m = onnx.load(path)
            rec.parsed_model = m
            for i in m.graph.input:
                dims = tuple(-1 if d.dim_param else d.dim_value for d in i.type.tensor_type.shape.dim)
                self.network.inputs.append(SimpleNamespace(name=i.name, shape=dims))
            return parse_ok

        def get_error(self, i):
            return SimpleNamespace(desc=lambda: "Unsupported  operator\nFancyOp", node_name=lambda: "/fancy",
                                   node_operator=lambda: "FancyOp")

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"timing:" + self.data

    class Config:
        def set_memory_pool_limit(self, pool, size):
            rec.workspace = (pool, size)

        def set_flag(self, f):
            rec.set_flags.append(f)

        def clear_flag(self, f):
            rec.cleared.append(f)

        def add_optimization_profile(self, p):
            pass

        def create_timing_cache(self, data):
            return Cache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            rec.timing_in = cache.data
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            rec.profile.append((name, tuple(mn), tuple(opt), tuple(mx)))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            rec.flags = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            rec.built += 1
            return b"ENGINE:" + str(rec.built).encode()

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    mod = SimpleNamespace(__version__=f"{generation}.1.0", BuilderFlag=_Flags(**bf),
                          NetworkDefinitionCreationFlag=_Flags(**nf),
                          MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"), Logger=Logger, Builder=Builder,
                          OnnxParser=Parser)
    return mod, rec


@pytest.fixture
def _fresh_logger(monkeypatch):
    import engines.tensorrt_runner as tr
    monkeypatch.setattr(tr, "_LOGGER", None)


@pytest.mark.parametrize("generation", [10, 11])
def test_build_engine_fp16_uses_the_api_the_installed_tensorrt_has(exported, generation, _fresh_logger):
    path, _, _ = exported["inpainter_fast"]
    trt, rec = fake_trt(generation)
    plan, timing, mode = build_engines.build_engine(trt, path, "fp16", (1, 4, 8), 1 << 30, b"old")
    assert plan == b"ENGINE:1" and timing == b"timing:old" and rec.timing_in == b"old"
    assert rec.workspace == ("WORKSPACE", 1 << 30)
    names = list(CONTRACTS["inpainter_fast"]["inputs"])
    assert [p[0] for p in rec.profile] == names
    image = [p for p in rec.profile if p[0] == "image"][0]
    assert image[1:] == ((1, 3, 128, 128), (4, 3, 128, 128), (8, 3, 128, 128))
    assert [p for p in rec.profile if p[0] == "gender"][0][1:] == ((1,), (4,), (8,))
    F, H = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    init_types = {i.data_type for i in rec.parsed_model.graph.initializer}
    if generation == 10:
        assert rec.set_flags == ["FP16"] and rec.flags == 1 << 0       # EXPLICIT_BATCH, weakly typed
        assert Path(rec.parsed) == path and init_types == {F}
        assert "BuilderFlag.FP16" in mode
    else:
        assert rec.set_flags == [] and rec.flags == 1 << 5              # STRONGLY_TYPED
        assert Path(rec.parsed) != path and H in init_types             # an fp16 ONNX graph
        assert all(i.type.tensor_type.elem_type == F for i in rec.parsed_model.graph.input)
        assert "strongly typed" in mode


@pytest.mark.parametrize("generation", [10, 11])
def test_build_engine_fp32_clears_tf32(exported, generation, _fresh_logger):
    path, _, _ = exported["analyser"]
    trt, rec = fake_trt(generation)
    build_engines.build_engine(trt, path, "fp32", (1, 1, 1), 1 << 28)
    assert rec.set_flags == [] and rec.cleared == ["TF32"]
    assert Path(rec.parsed) == path
    assert rec.profile == [("image", (1, 3, 128, 128), (1, 3, 128, 128), (1, 3, 128, 128))]


def test_build_engine_reports_parser_errors_on_one_line(exported, _fresh_logger):
    trt, _ = fake_trt(10, parse_ok=False)
    with pytest.raises(build_engines.BuildError) as e:
        build_engines.build_engine(trt, exported["analyser"][0], "fp16", (1, 1, 2), 1 << 28)
    msg = str(e.value)
    assert "\n" not in msg and "analyser.onnx" in msg and "/fancy" in msg and "FancyOp" in msg


def test_build_engines_main_builds_reuses_and_rebuilds_stale(exported, tmp_path, monkeypatch, capsys,
                                                             _fresh_logger):
    """The CLI end to end on a fake TensorRT 11: build, reuse when fresh, rebuild + prune when the ONNX changes."""
    import engines.tensorrt_runner as tr
    from engines.cache import EngineCache
    trt, rec = fake_trt(11)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)

    class Mem:
        def device_info(self):
            return "NVIDIA Fake GPU", "8.9"

        def close(self):
            pass

    monkeypatch.setattr(tr, "make_memory", lambda device="cuda:0", prefer=None: Mem())
    model = tmp_path / "m" / "analyser.onnx"
    model.parent.mkdir()
    model.write_bytes(exported["analyser"][0].read_bytes())
    cache_dir = tmp_path / "cache"
    argv = ["--precision", "fp16", "--max-batch", "6", "--models", str(model), "--cache-dir", str(cache_dir),
            "--no-check"]
    assert build_engines.main(argv) == 0
    out = capsys.readouterr().out
    assert "analyser: built" in out and "(1, 3, 6)" in out
    cache = EngineCache(cache_dir)
    (engine, meta), = cache.entries("analyser")
    assert engine.read_bytes() == b"ENGINE:1"
    assert meta["fields"]["profile"] == [1, 3, 6] and meta["fields"]["gpu_name"] == "NVIDIA Fake GPU"
    assert meta["fields"]["workspace_bytes"] == 1 << 30 and meta["fields"]["tensorrt_version"] == "11.1.0"
    timing = cache.timing_cache_path("NVIDIA Fake GPU", "8.9", "11.1.0")
    assert timing.read_bytes() == b"timing:"

    assert build_engines.main(argv) == 0                       # fresh: reused, not rebuilt
    assert "up to date" in capsys.readouterr().out and rec.built == 1

    torch.manual_seed(99)                                      # a new export -> stale engine
    export_model("analyser", build("analyser").eval(), model)
    assert build_engines.main(argv) == 0
    assert "built" in capsys.readouterr().out and rec.built == 2
    (engine2, meta2), = cache.entries("analyser")              # the stale one was pruned
    assert engine2 != engine and engine2.read_bytes() == b"ENGINE:2"
    assert rec.timing_in == b"timing:"                         # the saved timing cache was loaded


def test_build_engines_missing_model_is_one_line(tmp_path, monkeypatch, capsys, _fresh_logger):
    trt, _ = fake_trt(10)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    rc = build_engines.main(["--models", str(tmp_path / "nothing.onnx"), "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "nothing.onnx" in err and "export.onnx" in err


# -- re-export from the shipped state dicts (a graph change that keeps the weights) ---------------

def _upsample_then_fuse(self, x, skip):
    """UpStage as it was first written: upsample, concatenate, then the 1x1 gated fuse."""
    x = torch.nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
    x = self.fuse(torch.cat([x, skip], 1))
    y = self.spatial(x)
    return y if self.full3x3 else x + torch.nn.functional.leaky_relu(y, 0.2)


@pytest.mark.parametrize("preset", ["fast", "hq"])
def test_upstage_mixes_before_upsampling_with_the_same_result(preset, monkeypatch):
    from models.networks import Inpainter, UpStage
    torch.manual_seed(5)
    model = Inpainter(preset).eval()
    size = 64 if preset == "fast" else 128
    g = torch.Generator().manual_seed(6)
    args = (torch.rand(2, 3, size, size, generator=g), (torch.rand(2, 1, size, size, generator=g) > 0.6).float(),
            torch.rand(2, 1, size, size, generator=g), torch.rand(2, generator=g))
    with torch.no_grad():
        now = model(*args)
        monkeypatch.setattr(UpStage, "forward", _upsample_then_fuse)
        before = model(*args)
    assert float((now - before).abs().max()) < 1e-5
    assert float((now - args[0] * (1 - args[1])).abs().max()) > 0.05      # the hole is really redrawn


def _colour_tie(folder: Path, onnx_name: str, sha: str) -> Path:
    path = folder / onnx_name.replace(".onnx", "_colour.json")
    path.write_text(json.dumps({"inpainter": onnx_name, "inpainter_sha256": sha, "weights": [[0.0]]}))
    return path


def test_reexport_carries_colour_ties_only_when_the_outputs_match(tmp_path, monkeypatch, capsys):
    from export.onnx import main
    from models.networks import UpStage
    torch.manual_seed(8)
    model = build("inpainter_fast").eval()
    out = tmp_path / "w"
    with monkeypatch.context() as m:        # the first export: the earlier graph of the same network
        m.setattr(UpStage, "forward", _upsample_then_fuse)
        export_model("inpainter_fast", model, out / "inpainter_fast.onnx", real_inputs=real_inputs("inpainter_fast", 2))
    first = sha256(out / "inpainter_fast.onnx")
    tie = _colour_tie(out, "inpainter_fast.onnx", first)
    other = out / "reference_colour.json"
    other.write_text(json.dumps({"inpainter": "inpainter_fast.onnx", "inpainter_sha256": "f" * 64}))

    assert main(["--models", "inpainter_fast", "--out", str(out), "--state-dicts", str(out), "--real-batch", "2"]) == 0
    second = sha256(out / "inpainter_fast.onnx")
    assert second != first                                  # another graph ...
    spec = json.loads(tie.read_text())
    assert spec["inpainter_sha256"] == second and spec["reexported_from"] == [first]     # ... same function
    assert json.loads(other.read_text())["inpainter_sha256"] == "f" * 64                  # tied to neither: untouched
    assert "follows the new export" in capsys.readouterr().out

    # Other weights: the correction was not fitted on them, so it stays tied to the old file.
    state = torch.load(out / "inpainter_fast.pt", weights_only=True)
    state["out.bias"] = state["out.bias"] + 0.5
    torch.save(state, out / "inpainter_fast.pt")
    assert main(["--models", "inpainter_fast", "--out", str(out), "--state-dicts", str(out), "--real-batch", "2"]) == 0
    assert json.loads(tie.read_text())["inpainter_sha256"] == second
    assert "refit them" in capsys.readouterr().err


def test_reexport_without_a_state_dict_is_one_line(tmp_path, capsys):
    from export.onnx import main
    assert main(["--models", "inpainter_fast", "--out", str(tmp_path), "--state-dicts", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no state dict" in err and "inpainter_fast.pt" in err
