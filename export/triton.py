"""Write a Triton Inference Server model repository for the shipped networks.

    python -m export.triton --repository DIR [--precision fp32|fp16] [--max-batch N]
                            [--queue-delay-us US] [--instances N] [--kind auto|cpu|gpu]
                            [--engine NAME=PLAN ...] [--models analyser inpainter_fast] [--overwrite]

For each model: `DIR/<model>/config.pbtxt` and `DIR/<model>/1/model.onnx` (platform
`onnxruntime_onnx`), or `1/model.plan` (platform `tensorrt_plan`) for the models given a TensorRT
engine with `--engine` (built on the serving GPU by `python -m export.build_engines`; its batch
profile must reach --max-batch). Every config has `max_batch_size`, `dynamic_batching` with a
bounded queue delay (Triton merges the requests of many streams and clients into one model call),
and an `instance_group`. `--precision fp16` on the ONNX platform asks Triton's ONNX Runtime backend
for its TensorRT accelerator in FP16 (GPU instances only).

The configs are built with Triton's own protobuf (`tritonclient`'s model_config_pb2), so what we
write is what a stock server parses. Serve it with the NGC container (see README):

    docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD/DIR:/models \
        nvcr.io/nvidia/tritonserver:24.10-py3 tritonserver --model-repository=/models
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from engines.base import ModelError
from engines.wire import SHIPPED_MODELS, TRITON_DTYPE, ModelContract, load_contract, wire_dims

DEFAULT_MAX_BATCH = 16
DEFAULT_QUEUE_DELAY_US = 2000   # 2 ms: small next to a frame (33 ms at 30 FPS), enough to gather streams
PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "plan": ("tensorrt_plan", "model.plan")}


def _pb2():
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise ModelError(f"writing Triton configs needs tritonclient: pip install .[triton] ({e})") from None
    return model_config_pb2, text_format


def model_config(contract: ModelContract, *, platform: str = "onnxruntime_onnx",
                 max_batch: int = DEFAULT_MAX_BATCH, queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                 instances: int = 1, kind: str = "cpu", precision: str = "fp32"):
    """The ModelConfig protobuf message of one network."""
    pb, _ = _pb2()
    cfg = pb.ModelConfig(name=contract.name, platform=platform, max_batch_size=max_batch)
    for specs, field in ((contract.inputs, cfg.input), (contract.outputs, cfg.output)):
        for spec in specs:
            t = field.add(name=spec.name, data_type=getattr(pb, f"TYPE_{TRITON_DTYPE}"), dims=wire_dims(spec))
            if len(spec.shape) == 1:        # per-face scalar: [N, 1] on the wire, [N] for the model
                t.reshape.SetInParent()
    cfg.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    cfg.instance_group.add(count=instances,
                           kind=pb.ModelInstanceGroup.KIND_GPU if kind == "gpu" else pb.ModelInstanceGroup.KIND_CPU)
    if precision == "fp16" and platform == "onnxruntime_onnx" and kind == "gpu":
        acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        acc.parameters["precision_mode"] = "FP16"
        acc.parameters["max_workspace_size_bytes"] = str(1 << 30)
    return cfg


def config_text(cfg) -> str:
    _, text_format = _pb2()
    return text_format.MessageToString(cfg)


def write_repository(repository: Path, *, models=SHIPPED_MODELS, precision: str = "fp32",
                     max_batch: int = DEFAULT_MAX_BATCH, queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                     instances: int = 1, kind: str = "auto", engines: dict | None = None,
                     overwrite: bool = False, weights_dir: Path | None = None) -> list[Path]:
    """Write one folder per model under `repository`; returns the config.pbtxt paths."""
    engines = {k: Path(v) for k, v in (engines or {}).items()}
    unknown = sorted(set(engines) - set(models))
    if unknown:
        raise ModelError(f"--engine for {', '.join(unknown)}, which is not exported (models: {', '.join(models)})")
    for name, plan in engines.items():
        if not plan.is_file():
            raise ModelError(f"TensorRT engine {plan} for {name} not found")
    if max_batch < 1:
        raise ModelError(f"--max-batch must be at least 1, got {max_batch}")
    if queue_delay_us < 0:
        raise ModelError(f"--queue-delay-us must be >= 0, got {queue_delay_us}")
    if instances < 1:
        raise ModelError(f"--instances must be at least 1, got {instances}")
    if kind == "auto":   # fp16 and TensorRT engines only mean something on a GPU
        kind = "gpu" if precision == "fp16" or engines else "cpu"
    if engines and kind != "gpu":
        raise ModelError("TensorRT engines run on GPU instances: drop --kind cpu")
    contracts = [load_contract(n, weights_dir) for n in models]
    repository = Path(repository)
    if repository.exists() and not repository.is_dir():
        raise ModelError(f"{repository} exists and is not a folder")
    if not repository.parent.exists():
        raise ModelError(f"cannot write {repository}: folder {repository.parent} does not exist")
    existing = [str(repository / c.name) for c in contracts if (repository / c.name).exists()]
    if existing and not overwrite:
        raise ModelError(f"{', '.join(existing)} exists; pass --overwrite to replace it")
    written = []
    for c in contracts:
        platform, filename = PLATFORMS["plan" if c.name in engines else "onnx"]
        cfg = model_config(c, platform=platform, max_batch=max_batch, queue_delay_us=queue_delay_us,
                           instances=instances, kind=kind, precision=precision)
        folder = repository / c.name
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "1").mkdir(parents=True)
        shutil.copyfile(engines.get(c.name, c.onnx_path), folder / "1" / filename)
        (folder / "config.pbtxt").write_text(config_text(cfg))
        written.append(folder / "config.pbtxt")
    return written


def _engine_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (e.g. analyser=engines_cache/analyser.plan), got {text!r}")
    return name, path


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv=None) -> int:
    ap = _OneLineParser(prog="python -m export.triton", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repository", type=Path, required=True, help="model repository folder to write")
    ap.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    ap.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="max_batch_size (faces per call)")
    ap.add_argument("--queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US,
                    help="dynamic batching: longest wait for more requests, microseconds")
    ap.add_argument("--instances", type=int, default=1, help="model instances (instance_group count)")
    ap.add_argument("--kind", choices=("auto", "cpu", "gpu"), default="auto",
                    help="instance kind (auto: gpu for fp16 or TensorRT engines, else cpu)")
    ap.add_argument("--engine", type=_engine_arg, action="append", default=[], metavar="NAME=PLAN",
                    help="serve NAME from this TensorRT engine (platform tensorrt_plan)")
    ap.add_argument("--models", nargs="+", default=list(SHIPPED_MODELS), choices=SHIPPED_MODELS)
    ap.add_argument("--overwrite", action="store_true", help="replace model folders already in the repository")
    args = ap.parse_args(argv)
    try:
        written = write_repository(args.repository, models=tuple(args.models), precision=args.precision,
                                   max_batch=args.max_batch, queue_delay_us=args.queue_delay_us,
                                   instances=args.instances, kind=args.kind, engines=dict(args.engine),
                                   overwrite=args.overwrite)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
