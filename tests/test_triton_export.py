"""export.triton: the model repository a stock Triton server serves, checked with Triton's own protobuf."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.triton import main, write_repository

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "models" / "weights"


def parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def onnx_io(path: Path):
    """name -> dims (batch axis as None, other symbolic dims as strings) for inputs and outputs."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def dims(v):
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]

    return ({v.name: dims(v) for v in graph.input}, {v.name: dims(v) for v in graph.output},
            {v.name: v.type.tensor_type.elem_type for v in list(graph.input) + list(graph.output)})


def test_repository_matches_the_onnx_files(tmp_path):
    repo = tmp_path / "repo"
    assert main(["--repository", str(repo), "--max-batch", "8", "--queue-delay-us", "1500"]) == 0
    for name in ("analyser", "inpainter_fast"):
        cfg = parse(repo / name / "config.pbtxt")
        model_file = repo / name / "1" / "model.onnx"
        assert model_file.read_bytes() == (WEIGHTS / f"{name}.onnx").read_bytes()
        assert cfg.name == name and cfg.platform == "onnxruntime_onnx"
        assert cfg.max_batch_size == 8
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 1500
        assert len(cfg.instance_group) == 1 and cfg.instance_group[0].count == 1
        assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        ins, outs, types = onnx_io(model_file)
        for declared, actual in ((cfg.input, ins), (cfg.output, outs)):
            assert [t.name for t in declared] == list(actual), name   # same tensors, same order
            for t in declared:
                assert t.data_type == model_config_pb2.TYPE_FP32
                assert types[t.name] == onnx.TensorProto.FLOAT
                onnx_dims = actual[t.name][1:]         # without the faces axis
                if not onnx_dims:                      # per-face scalar: [1] on the wire, reshaped to []
                    assert list(t.dims) == [1] and t.HasField("reshape") and list(t.reshape.shape) == []
                else:
                    assert len(t.dims) == len(onnx_dims)
                    for want, got in zip(onnx_dims, t.dims):
                        # symbolic ONNX dims (the analyser's resized mask) come from the contract
                        assert got == want if isinstance(want, int) else got > 0
    analyser = parse(repo / "analyser" / "config.pbtxt")
    assert {t.name: list(t.dims) for t in analyser.output}["mask_logits"] == [1, 128, 128]


def test_fp16_and_tensorrt_plans(tmp_path):
    plan = tmp_path / "analyser.plan"
    plan.write_bytes(b"not really an engine")
    repo = tmp_path / "repo"
    write_repository(repo, precision="fp16", engines={"analyser": plan}, max_batch=4, instances=2)
    a, i = parse(repo / "analyser" / "config.pbtxt"), parse(repo / "inpainter_fast" / "config.pbtxt")
    assert a.platform == "tensorrt_plan" and (repo / "analyser" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert not (repo / "analyser" / "1" / "model.onnx").exists()
    assert i.platform == "onnxruntime_onnx"
    acc = i.optimization.execution_accelerators.gpu_execution_accelerator
    assert [x.name for x in acc] == ["tensorrt"] and acc[0].parameters["precision_mode"] == "FP16"
    for cfg in (a, i):
        assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        assert cfg.instance_group[0].count == 2 and cfg.max_batch_size == 4


def test_never_overwrites_and_bad_flags_are_one_line(tmp_path):
    repo = tmp_path / "repo"
    write_repository(repo)
    before = (repo / "analyser" / "config.pbtxt").read_text()
    for args in (["--repository", str(repo)],
                 ["--repository", str(tmp_path / "missing" / "repo")],
                 ["--repository", str(repo), "--overwrite", "--max-batch", "0"],
                 ["--repository", str(repo), "--overwrite", "--engine", "analyser=/nonexistent.plan"],
                 ["--repository", str(repo), "--engine", "nonsense"]):
        r = subprocess.run([sys.executable, "-m", "export.triton", *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode != 0, args
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, (args, r.stderr)
    assert (repo / "analyser" / "config.pbtxt").read_text() == before
    assert "exists; pass --overwrite" in subprocess.run(
        [sys.executable, "-m", "export.triton", "--repository", str(repo)], cwd=ROOT, capture_output=True,
        text=True, timeout=60).stderr


def test_missing_tritonclient_is_explained(monkeypatch, tmp_path):
    import builtins
    real_import = builtins.__import__

    def no_tritonclient(name, *a, **k):
        if name.startswith("tritonclient"):
            raise ImportError("No module named 'tritonclient'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tritonclient)
    from engines.base import ModelError
    with pytest.raises(ModelError, match=r"pip install \.\[triton\]"):
        write_repository(tmp_path / "repo")
