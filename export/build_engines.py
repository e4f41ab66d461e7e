"""Build TensorRT engines from the exported ONNX networks (run on the deployment GPU).

    python -m export.build_engines --precision fp16|fp32 [--max-batch N] [--workspace GB]
                                   [--models analyser inpainter_fast] [--force] [--no-check]

For each model: an explicit-batch network parsed from models/weights/<name>.onnx
(parser errors printed node by node), one optimisation profile over the faces
batch 1..N (opt N/2), the persistent timing cache loaded and saved, and the
engine stored in engines_cache/ under a key of everything it depends on
(engines.cache): an up-to-date engine is reused, a stale one rebuilt.

fp16, by feature of the installed TensorRT (never by version string):
* TensorRT 10 (`BuilderFlag.FP16` exists): the fp32 ONNX with the FP16 builder flag;
* TensorRT 11 (no weak typing): the ONNX graph is converted to fp16 first (float
  weights and activations in fp16, the I/O kept fp32 through Cast nodes, Resize
  scales kept fp32) and parsed into a STRONGLY_TYPED network. `--fp16-converter
  onnxconverter-common` uses that package's converter instead of the built-in pass.

After a build, the engine's outputs are compared with fp32 ONNX Runtime on
random inputs (batch 1 and N) and the max abs error printed (`--tolerance` turns
it into a failure). Without TensorRT: one line, exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from models.spec import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("analyser", "inpainter_fast", "inpainter_hq", "face_detector", "face_mesh")
TENSORRT_MISSING = "TensorRT is not installed: pip install .[gpu] on a machine with an NVIDIA GPU"
ONNX_MISSING = "error: onnx is not installed (build_engines reads the ONNX graphs): pip install .[gpu]"

# Inputs that ONNX requires to be float32 whatever the data type of the op (Resize roi / scales).
FP32_ONLY_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}
# Nodes that end a backward walk: their outputs' type does not follow their inputs'.
TYPE_BOUNDARIES = {"Cast", "Constant", "ConstantOfShape", "Shape", "Size", "CastLike"}
FP16_MAX = 65504.0


class BuildError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# fp16 graph conversion (for strongly typed networks)


def _to_fp16(arr: np.ndarray) -> np.ndarray:
    return np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)


def _toposort(nodes, available: set) -> list:
    avail = set(available) | {""}
    pending = list(nodes)
    ordered = []
    while pending:
        progressed = False
        rest = []
        for n in pending:
            if all(i in avail for i in n.input):
                ordered.append(n)
                avail.update(n.output)
                progressed = True
            else:
                rest.append(n)
        if not progressed:
            missing = sorted({i for n in rest for i in n.input if i not in avail})[:5]
            raise BuildError(f"fp16 conversion produced a graph with undefined tensors {missing}")
        pending = rest
    return ordered


def convert_float_to_float16(model, keep_io_types: bool = True):
    """Return a copy of `model` computing in fp16: float initializers / constants / casts become fp16;
    with `keep_io_types` the graph inputs and outputs stay float32 behind Cast nodes. Tensors that ONNX
    requires in float32 (Resize roi / scales, and whatever computes them) stay float32."""
    import onnx
    from onnx import AttributeProto, TensorProto, helper, numpy_helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    # Work on one list of node wrappers (protobuf may hand out a new wrapper per access) and index them.
    nodes = list(g.node)
    for n in nodes:
        if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in n.attribute):
            raise BuildError(f"node {n.name or n.op_type} has a sub-graph; the built-in fp16 converter does not "
                             f"handle control flow (use --fp16-converter onnxconverter-common)")

    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    init_names = {i.name for i in g.initializer}
    graph_inputs = [i for i in g.input if i.name not in init_names]

    # 1. Tensors that must stay float32, and the nodes computing them.
    keep: set[str] = set()
    fp32_nodes: set[int] = set()
    stack = [n.input[i] for n in nodes for i in FP32_ONLY_INPUTS.get(n.op_type, ())
             if i < len(n.input) and n.input[i]]
    while stack:
        t = stack.pop()
        if t in keep:
            continue
        keep.add(t)
        k = producer.get(t)
        if k is None or k in fp32_nodes:
            continue
        fp32_nodes.add(k)
        if nodes[k].op_type not in TYPE_BOUNDARIES:
            stack.extend(x for x in nodes[k].input if x)
    fp16_nodes = [n for k, n in enumerate(nodes) if k not in fp32_nodes]
    fp16_ids = {k for k in range(len(nodes)) if k not in fp32_nodes}

    # 2. Float initializers -> fp16 (or an fp16 copy when fp32 nodes also read them).
    def wants16(k: int, i: int) -> bool:  # does input i of node k take fp16?
        return k in fp16_ids and i not in FP32_ONLY_INPUTS.get(nodes[k].op_type, ())

    consumers = defaultdict(list)  # tensor -> (node index, input index) reading it
    for k, n in enumerate(nodes):
        for i, name in enumerate(n.input):
            if name:
                consumers[name].append((k, i))
    rename16: dict[str, str] = {}
    new_inits = []
    for init in g.initializer:
        if init.data_type != FLOAT:
            continue
        users16 = [k for k, i in consumers[init.name] if wants16(k, i)]
        if not users16:
            continue
        arr16 = _to_fp16(numpy_helper.to_array(init))
        if init.name in keep:
            copy_name = init.name + "__fp16"
            new_inits.append(numpy_helper.from_array(arr16, copy_name))
            rename16[init.name] = copy_name
        else:
            init.CopyFrom(numpy_helper.from_array(arr16, init.name))
    g.initializer.extend(new_inits)

    # 3. Constants, ConstantOfShape values and Casts inside the fp16 part.
    extra_nodes = []
    for n in fp16_nodes:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(_to_fp16(numpy_helper.to_array(a.t)), a.t.name))
                elif a.name in ("value_float", "value_floats"):
                    vals = np.asarray([a.f] if a.name == "value_float" else list(a.floats), np.float32)
                    if a.name == "value_float":
                        vals = vals.reshape(())
                    t = numpy_helper.from_array(_to_fp16(vals))
                    n.attribute.remove(a)
                    n.attribute.append(helper.make_attribute("value", t))
                    break
        elif n.op_type == "ConstantOfShape":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(_to_fp16(numpy_helper.to_array(a.t)), a.t.name))
        elif n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == FLOAT:
                    a.i = HALF
        elif n.op_type in ("RandomNormal", "RandomUniform", "EyeLike", "RandomNormalLike", "RandomUniformLike"):
            for a in n.attribute:
                if a.name == "dtype" and a.i == FLOAT:
                    a.i = HALF

    # Constants kept fp32 but also read by fp16 nodes get a Cast to fp16.
    for t in sorted(keep):
        if t in init_names or t not in producer:
            continue
        if any(wants16(k, i) for k, i in consumers[t]):
            cast_out = t + "__fp16"
            extra_nodes.append(helper.make_node("Cast", [t], [cast_out], to=HALF, name=t + "__to_fp16"))
            rename16[t] = cast_out

    # 4. Graph inputs: float32 outside, a Cast to fp16 inside.
    for gi in graph_inputs:
        if gi.type.tensor_type.elem_type != FLOAT:
            continue
        if keep_io_types:
            cast_out = gi.name + "__fp16"
            extra_nodes.append(helper.make_node("Cast", [gi.name], [cast_out], to=HALF,
                                                name=gi.name + "__to_fp16"))
            rename16[gi.name] = cast_out
        else:
            gi.type.tensor_type.elem_type = HALF
            if gi.name in keep:
                raise BuildError(f"input {gi.name} feeds a float32-only input; convert with keep_io_types")

    for k in sorted(fp16_ids):
        n = nodes[k]
        for i, name in enumerate(n.input):
            if name in rename16 and wants16(k, i):
                n.input[i] = rename16[name]

    # 5. Graph outputs: computed in fp16, cast back to float32 under the original name.
    for go in g.output:
        if go.type.tensor_type.elem_type != FLOAT:
            continue
        if not keep_io_types:
            go.type.tensor_type.elem_type = HALF
            continue
        if go.name in {i.name for i in graph_inputs} or go.name in keep:
            continue
        internal = go.name + "__fp16"
        for n in nodes:
            for i, name in enumerate(n.output):
                if name == go.name:
                    n.output[i] = internal
            for i, name in enumerate(n.input):
                if name == go.name:
                    n.input[i] = internal
        extra_nodes.append(helper.make_node("Cast", [internal], [go.name], to=FLOAT, name=go.name + "__to_fp32"))

    available = {i.name for i in g.input} | {i.name for i in g.initializer}
    ordered = []
    for n in _toposort(nodes + extra_nodes, available):
        c = onnx.NodeProto()
        c.CopyFrom(n)
        ordered.append(c)
    del g.node[:]
    g.node.extend(ordered)
    del g.value_info[:]  # stale float32 annotations; shape inference can recreate them
    return m


def convert_to_fp16(model, converter: str = "builtin"):
    """fp16 copy of an ONNX model with float32 I/O, by the built-in pass or onnxconverter-common."""
    if converter == "onnxconverter-common":
        try:
            from onnxconverter_common import float16
        except ImportError:
            raise BuildError("onnxconverter-common is not installed: pip install onnxconverter-common "
                             "(or use the built-in converter)") from None
        return float16.convert_float_to_float16(model, keep_io_types=True)
    return convert_float_to_float16(model, keep_io_types=True)


# ---------------------------------------------------------------------------------------------
# TensorRT build


def api_features(trt) -> dict:
    """What the installed TensorRT offers (feature detection, not version parsing)."""
    flags = trt.NetworkDefinitionCreationFlag
    return {
        "fp16_flag": getattr(trt.BuilderFlag, "FP16", None),           # TensorRT <= 10: weak typing
        "tf32_flag": getattr(trt.BuilderFlag, "TF32", None),
        "strongly_typed": getattr(flags, "STRONGLY_TYPED", None),
        "explicit_batch": getattr(flags, "EXPLICIT_BATCH", None),      # deprecated / gone in 10+ (always explicit)
    }


def format_parser_error(err) -> str:
    """One line from a TensorRT IParserError (whatever accessors this version has)."""
    parts = []
    for attr in ("node_name", "node_operator"):
        fn = getattr(err, attr, None)
        try:
            v = fn() if callable(fn) else None
        except Exception:
            v = None
        if v:
            parts.append(str(v))
    desc = getattr(err, "desc", None)
    try:
        text = desc() if callable(desc) else str(err)
    except Exception:
        text = str(err)
    where = f"node {' / '.join(parts)}: " if parts else ""
    return where + " ".join(str(text).split())


def network_profile(network, profile_batch: tuple) -> list[tuple]:
    """(name, min, opt, max) shapes for every network input: only dimension 0 (faces) may vary."""
    mn, opt, mx = profile_batch
    shapes = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = tuple(int(d) for d in t.shape)
        if any(d < 0 for d in dims[1:]):
            raise BuildError(f"input {t.name} has dynamic dimensions {dims} besides the faces axis")
        rest = dims[1:]
        shapes.append((t.name, (mn,) + rest, (opt,) + rest, (mx,) + rest))
    return shapes


def build_engine(trt, onnx_path: Path, precision: str, profile_batch: tuple, workspace_bytes: int,
                 timing_cache: bytes = b"", strongly_typed: bool | None = None,
                 fp16_converter: str = "builtin") -> tuple[bytes, bytes, str]:
    """Build one serialised engine. Returns (engine bytes, updated timing cache, a word on the mode)."""
    import onnx

    from engines.tensorrt_runner import trt_logger

    feat = api_features(trt)
    if strongly_typed is None:
        strongly_typed = precision == "fp16" and feat["fp16_flag"] is None
    if strongly_typed and feat["strongly_typed"] is None and feat["fp16_flag"] is not None:
        raise BuildError("this TensorRT has no strongly typed networks; drop --strongly-typed")
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    if feat["explicit_batch"] is not None and feat["fp16_flag"] is not None:
        flags |= 1 << int(feat["explicit_batch"])  # required before 10, ignored in 10
    if strongly_typed and feat["strongly_typed"] is not None:
        flags |= 1 << int(feat["strongly_typed"])
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)

    with tempfile.TemporaryDirectory(prefix="unmask-trt-") as tmp:
        source = Path(onnx_path)
        mode = f"{precision}"
        if precision == "fp16" and strongly_typed:
            converted = convert_to_fp16(onnx.load(str(onnx_path)), fp16_converter)
            source = Path(tmp) / (Path(onnx_path).stem + ".fp16.onnx")
            onnx.save(converted, str(source))
            mode = "fp16 (fp16 ONNX graph, strongly typed network)"
        elif precision == "fp16":
            mode = "fp16 (BuilderFlag.FP16)"
        if not parser.parse_from_file(str(source)):
            errors = [format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
            raise BuildError(f"the ONNX parser rejected {Path(onnx_path).name}: " + " | ".join(errors or ["?"]))

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
        if precision == "fp16" and not strongly_typed:
            config.set_flag(feat["fp16_flag"])
        if precision == "fp32" and feat["tf32_flag"] is not None:
            config.clear_flag(feat["tf32_flag"])  # "fp32" means fp32, not TF32 tensor cores
        profile = builder.create_optimization_profile()
        for name, mn, opt, mx in network_profile(network, profile_batch):
            profile.set_shape(name, mn, opt, mx)
        config.add_optimization_profile(profile)
        cache = config.create_timing_cache(bytes(timing_cache or b""))
        if not config.set_timing_cache(cache, False):  # a cache from another device / version: start afresh
            config.set_timing_cache(config.create_timing_cache(b""), False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BuildError(f"TensorRT could not build {Path(onnx_path).name} (see the messages above)")
        new_cache = bytes(memoryview(config.get_timing_cache().serialize()))
        return bytes(memoryview(plan)), new_cache, mode


def random_inputs(specs, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        a = rng.random(s.with_batch(batch), dtype=np.float32)
        if s.name == "hole":
            a = (a > 0.5).astype(np.float32)
        out[s.name] = a
    return out


def check_engine(runner, reference, batches=(1,), seed: int = 0) -> dict[str, float]:
    """Max abs error of `runner` against `reference` (both Runners) per output, over random batches."""
    worst: dict[str, float] = {}
    for i, b in enumerate(batches):
        feed = random_inputs(runner.input_specs, b, seed + i)
        got, ref = runner.run(feed), reference.run(feed)
        for k in ref:
            worst[k] = max(worst.get(k, 0.0), float(np.abs(got[k].astype(np.float32) - ref[k]).max()))
    return worst


def _missing_build_dependency() -> str | None:
    """One line when TensorRT or onnx (which the fp16 pass and the parser check read) cannot be
    imported: missing (what to install) or broken (what failed)."""
    for module, missing in (("tensorrt", TENSORRT_MISSING), ("onnx", ONNX_MISSING)):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name in (module, None) or exc.name.startswith(module + "."):
                return missing
            return f"error: {module} failed to import (ModuleNotFoundError: {exc}): pip install .[gpu]"
        except Exception as exc:  # noqa: BLE001 - OSError when native libraries are missing
            return (f"error: {module} is installed but failed to import "
                    f"({type(exc).__name__}: {' '.join(str(exc).split())}): repair it (pip install "
                    f"--force-reinstall {module})")
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Build TensorRT engines from models/weights/*.onnx.")
    ap.add_argument("--precision", choices=("fp16", "fp32"), default="fp16",
                    help="engine precision (default fp16)")
    ap.add_argument("--max-batch", type=int, default=8, help="largest faces batch (profile 1..N, opt N/2)")
    ap.add_argument("--workspace", type=float, default=1.0, help="builder workspace in GB")
    ap.add_argument("--models", nargs="+", default=None,
                    help="model names or .onnx paths (default: every exported model in models/weights)")
    ap.add_argument("--cache-dir", type=Path, default=None, help="engine cache (default engines_cache/)")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--force", action="store_true", help="rebuild even when the cached engine is up to date")
    ap.add_argument("--no-check", dest="check", action="store_false",
                    help="skip the comparison with fp32 ONNX Runtime")
    ap.add_argument("--tolerance", type=float, default=None,
                    help="fail (exit 1) when the max abs error against ONNX Runtime exceeds this")
    ap.add_argument("--strongly-typed", action="store_true", default=None,
                    help="fp16 through an fp16 ONNX graph even where BuilderFlag.FP16 exists")
    ap.add_argument("--fp16-converter", choices=("builtin", "onnxconverter-common"), default="builtin")
    args = ap.parse_args(argv)
    if args.max_batch < 1:
        ap.error("--max-batch must be at least 1")
    if args.workspace <= 0:
        ap.error("--workspace must be positive")

    problem = _missing_build_dependency()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    import tensorrt as trt

    from engines.base import ModelError, model_name_of, resolve_model
    from engines.cache import EngineCache, EngineKey, file_sha256, profile_for
    from engines.tensorrt_runner import TensorRTRunner, make_memory

    if args.models is None:
        names = [n for n in DEFAULT_MODELS if (WEIGHTS_DIR / f"{n}.onnx").exists()]
        if not names:
            print(f"error: no exported models in {WEIGHTS_DIR}: run python -m export.onnx first", file=sys.stderr)
            return 2
    else:
        names = args.models
    try:
        paths = [resolve_model(n) for n in names]
        mem = make_memory(args.device)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    gpu, cc = mem.device_info()
    mem.close()
    version = trt.__version__
    cache = EngineCache(args.cache_dir)
    profile = profile_for(args.max_batch)
    workspace = int(args.workspace * (1 << 30))
    print(f"TensorRT {version} on {gpu} (sm {cc}), {args.precision}, faces batch {profile}, "
          f"workspace {args.workspace:g} GB, cache {cache.root}")
    timing = cache.load_timing_cache(gpu, cc, version)
    rc = 0
    for onnx_path in paths:
        name = model_name_of(onnx_path)
        key = EngineKey(file_sha256(onnx_path), version, gpu, cc, args.precision, profile, workspace)
        engine_path = cache.engine_path(name, key)
        if cache.is_fresh(name, key) and not args.force:
            print(f"{name}: up to date ({engine_path.name})")
        else:
            t0 = time.time()
            try:
                plan, timing, mode = build_engine(trt, onnx_path, args.precision, profile, workspace, timing,
                                                  strongly_typed=args.strongly_typed,
                                                  fp16_converter=args.fp16_converter)
            except BuildError as e:
                print(f"error: {name}: {e}", file=sys.stderr)
                rc = 1
                continue
            engine_path = cache.store(name, key, plan, extra={"mode": mode, "onnx": str(onnx_path),
                                                              "build_seconds": round(time.time() - t0, 1)})
            cache.save_timing_cache(gpu, cc, version, timing)
            stale = cache.prune(name, key)
            print(f"{name}: built {engine_path.name} ({len(plan) / 1e6:.1f} MB, {mode}, "
                  f"{time.time() - t0:.0f} s" + (f", removed {len(stale) // 2} stale" if stale else "") + ")")
        if not args.check:
            continue
        from engines.onnxruntime_runner import OnnxRuntimeRunner
        try:
            with TensorRTRunner(onnx_path, device=args.device, precision=args.precision,
                                engine_path=engine_path) as trt_runner, \
                    OnnxRuntimeRunner(onnx_path, device="cpu") as ref:
                err = check_engine(trt_runner, ref, batches=sorted({1, args.max_batch}))
        except ModelError as e:
            print(f"error: {name}: check failed: {e}", file=sys.stderr)
            rc = 1
            continue
        worst = max(err.values())
        print(f"{name}: max abs error vs fp32 ONNX Runtime: "
              + ", ".join(f"{k} {v:.2e}" for k, v in err.items()))
        if args.tolerance is not None and worst > args.tolerance:
            print(f"error: {name}: error {worst:.2e} above --tolerance {args.tolerance:g}", file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
