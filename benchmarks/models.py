"""Inference speed of each exported network on each backend: latency vs batch, throughput, memory.

    python -m benchmarks.models                                  # every models/weights/*.onnx, every backend
    python -m benchmarks.models --models analyser --backends onnxruntime --batches 1,4
    python -m benchmarks.models --device cuda --precisions fp32,fp16
    python -m benchmarks.models --compare old/models.json new/models.json

For every model x backend (onnxruntime, torch, tensorrt: the ones that cannot
run here are listed with the reason) x precision (fp16 only where the backend
runs it: TensorRT, PyTorch on CUDA, ONNX Runtime's TensorRT provider), the
runner is created through `engines.create_runner` (load time and memory
recorded), then for each batch size (faces per call) it runs --warmup calls
and --iters timed calls on random inputs of the model's contract: median and
p95 latency, throughput (faces / s at the median), latency per face, and the
process's peak memory above what it used before the runner was created.
Results: models.json, models.md (also printed) and models.png in --out
(default benchmarks/results/<timestamp>/).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks import report
from benchmarks.report import BenchError, fmt, log, md_table, summarize

PROG = "benchmarks.models"
BACKENDS = ("onnxruntime", "torch", "tensorrt")
PRECISIONS = ("fp32", "fp16")


def build_parser() -> argparse.ArgumentParser:
    p = report.new_parser(PROG, __doc__)
    p.add_argument("--models", type=report.name_list(),
                   help="model names in models/weights or .onnx paths, comma-separated (default: all)")
    p.add_argument("--backends", type=report.name_list(BACKENDS + ("all",)), default=["all"],
                   help="onnxruntime, torch, tensorrt or all (default all: unavailable ones are listed "
                        "with the reason)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: each backend's best)")
    p.add_argument("--precisions", type=report.name_list(PRECISIONS), default=list(PRECISIONS),
                   help="fp32 and/or fp16 (fp16 where the backend supports it; default both)")
    p.add_argument("--batches", type=report.int_list, default=[1, 2, 4, 8], help="faces per call (default 1,2,4,8)")
    p.add_argument("--iters", type=report.positive_int, default=30, help="timed calls per batch size")
    p.add_argument("--warmup", type=report.non_negative_int, default=5, help="untimed calls first")
    p.add_argument("--threads", type=report.positive_int, help="CPU threads (ONNX Runtime / PyTorch CPU)")
    p.add_argument("--seed", type=int, default=0, help="random inputs' seed")
    report.add_output_arguments(p, "skip the PNG plot", verbose=False)
    report.add_compare_argument(p)
    return p


def resolve_models(names: list[str] | None) -> list[Path]:
    from engines.base import WEIGHTS_DIR
    if not names:
        found = sorted(WEIGHTS_DIR.glob("*.onnx"))
        if not found:
            raise BenchError(f"no exported models in {WEIGHTS_DIR} (python -m export.onnx writes them)", 1)
        return found
    out = []
    for n in names:
        p = Path(n)
        if p.suffix.lower() == ".onnx" or len(p.parts) > 1:
            if not p.is_file():
                raise BenchError(f"model file not found: {n}")
        else:
            p = WEIGHTS_DIR / f"{n}.onnx"
            if not p.is_file():
                have = ", ".join(q.stem for q in sorted(WEIGHTS_DIR.glob("*.onnx"))) or "none"
                raise BenchError(f"model {n!r} not found in {WEIGHTS_DIR} (exported: {have})")
        if p not in out:
            out.append(p)
    return out


def make_inputs(specs, batch: int, rng) -> dict:
    """Random inputs that respect the contract: images in [0, 1], a binary hole (lower half),
    a guide-curve-like sparse map, genders in [0, 1]."""
    import numpy as np
    feed = {}
    for s in specs:
        shape = s.with_batch(batch)
        if s.name == "hole" and len(shape) == 4:
            a = np.zeros(shape, np.float32)
            a[..., shape[2] // 3:, shape[3] // 6: shape[3] - shape[3] // 6] = 1.0
        elif s.name == "landmark_map":
            a = (rng.random(shape) > 0.97).astype(np.float32)
        else:
            a = rng.random(shape, dtype=np.float32) if np.dtype(s.dtype) == np.float32 \
                else rng.random(shape).astype(s.dtype)
        feed[s.name] = np.ascontiguousarray(a.astype(s.dtype, copy=False))
    return feed


def _preimport(backend: str) -> None:
    import importlib
    module = {"onnxruntime": "onnxruntime", "torch": "torch", "tensorrt": "tensorrt"}.get(backend)
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - create_runner reports a missing backend properly
        pass


def _threads_of(runner) -> int | None:
    """CPU threads the runner computes with (None on a GPU)."""
    if not str(getattr(runner, "device", "cpu")).startswith("cpu"):
        return None
    if getattr(runner, "threads", None):
        return int(runner.threads)
    if runner.name == "torch":
        import torch
        return torch.get_num_threads()
    return None


def bench_one(path: Path, backend: str, precision: str, args, quiet: bool) -> list[dict]:
    """Rows (one per batch size, or one 'skipped' row) for model x backend x precision."""
    import numpy as np
    from engines import create_runner
    from engines.base import model_name_of
    from stream.errors import ModelError

    name = model_name_of(path)
    base = {"model": name, "path": str(path), "backend": backend, "precision": precision,
            "device": args.device or "default"}
    gpu_dev = args.device if args.device and args.device.startswith("cuda") else None
    mon = report.ResourceMonitor(gpu_device=gpu_dev or ("cuda:0" if report.torch_cuda_available() else None))
    _preimport(backend)   # so load_ms is the model's load, not the library's import
    try:
        with mon:
            t = time.perf_counter()
            runner = create_runner(path, backend=backend, device=args.device, threads=args.threads,
                                   precision=precision)
            load_ms = (time.perf_counter() - t) * 1e3
    except ModelError as exc:
        return [{**base, "status": "skipped", "reason": " ".join(str(exc).split())}]
    base["device"] = runner.device
    base["threads"] = _threads_of(runner)
    rss_before = mon.result["rss_start_mb"]
    load = {"load_ms": load_ms, "load_rss_delta_mb": mon.result["rss_delta_mb"]}
    if runner.precision != precision:
        runner.close()
        return [{**base, "status": "skipped",
                 "reason": f"{precision} is not supported by {backend} on {base['device']} "
                           f"(it runs {runner.precision})"}]
    rows = []
    rng = np.random.default_rng(args.seed)
    try:
        for b in args.batches:
            feed = make_inputs(runner.input_specs, b, rng)
            gpu_dev = runner.device if str(runner.device).startswith("cuda") else None
            with report.ResourceMonitor(gpu_device=gpu_dev) as m:
                for _ in range(args.warmup):
                    runner.run(feed)
                times = []
                for _ in range(args.iters):
                    t = time.perf_counter()
                    runner.run(feed)
                    times.append((time.perf_counter() - t) * 1e3)
            st = summarize(times)
            p95 = report.percentile(times, 95)
            rows.append({**base, "status": "ok", "batch": b, **load,
                         "latency_ms": {"median": st["median"], "p95": p95, "mean": st["mean"],
                                        "min": st["min"], "max": st["max"], "q1": st["q1"], "q3": st["q3"]},
                         "iters": len(times),
                         "faces_per_s": b / (st["median"] / 1e3) if st["median"] else None,
                         "ms_per_face": st["median"] / b if st["median"] else None,
                         "rss_delta_mb": (m.result["peak_rss_mb"] - rss_before)
                         if m.result["peak_rss_mb"] is not None and rss_before is not None else None,
                         "peak_rss_mb": m.result["peak_rss_mb"],
                         "gpu_mem_peak_mb": m.result["gpu_mem_peak_mb"],
                         "cpu_pct": m.result["cpu_pct"], "other_cores_busy": m.result["other_cores_busy"]})
            log(f"  {name} {backend} {base['device']} {precision} batch {b}: median {fmt(st['median'], 2)} ms, "
                f"p95 {fmt(p95, 2)} ms, {fmt(rows[-1]['faces_per_s'], 0)} faces/s", quiet)
    finally:
        runner.close()
    return rows


def markdown(result: dict) -> str:
    lines = [f"# Unmask model benchmark — {result['created']}", "",
             f"Machine: {report.machine_line(result['machine'])}", "",
             f"Settings: {result['settings']['iters']} timed calls after {result['settings']['warmup']} warm-up "
             f"calls per batch size; random inputs of each model's contract.", ""]
    ok = [r for r in result["results"] if r["status"] == "ok"]
    rows = [[r["model"], r["backend"], r["device"], fmt(r.get("threads")), r["precision"], r["batch"],
             fmt(r["latency_ms"]["median"], 2),
             fmt(r["latency_ms"]["p95"], 2), fmt(r["faces_per_s"], 0), fmt(r["ms_per_face"], 2),
             fmt(r["load_ms"], 0), fmt(r["rss_delta_mb"], 0),
             fmt(r["gpu_mem_peak_mb"], 0) if r["gpu_mem_peak_mb"] is not None else "–"] for r in ok]
    if rows:
        lines.append(md_table(["model", "backend", "device", "threads", "precision", "batch", "median ms",
                               "p95 ms", "faces/s", "ms/face", "load ms", "RSS Δ MB", "GPU MB"], rows,
                              ["l", "l", "l", "r", "l", "r", "r", "r", "r", "r", "r", "r", "r"]))
        lines += ["", "faces/s = batch / median latency. threads: CPU threads of the runner (--threads sets them; "
                  "more threads than free cores makes PyTorch's CPU latency erratic). RSS Δ = the process's peak resident memory while "
                  "running this batch size minus its memory before the runner was created (runners of earlier "
                  "rows may leave allocator caches behind, so later rows can read low).", ""]
    skipped = [r for r in result["results"] if r["status"] != "ok"]
    if skipped:
        lines += ["## Not measured", "",
                  md_table(["model", "backend", "precision", "why"],
                           [[r["model"], r["backend"], r["precision"], r["reason"]] for r in skipped],
                           ["l", "l", "l", "l"]), ""]
    lines += report.markdown_tail(result)
    return "\n".join(lines)


def plot(result: dict, out_dir: Path) -> tuple[list[str], list[str]]:
    ok = [r for r in result["results"] if r["status"] == "ok"]
    if not ok:
        return [], []
    plt = report.pyplot()
    if plt is None:
        return [], [report.PLOTS_MISSING]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    groups = {}
    for r in ok:
        groups.setdefault((r["model"], r["backend"], r["device"], r["precision"]), []).append(r)
    for g, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["batch"])
        xs = [r["batch"] for r in rs]
        label = " ".join(g)
        a1.errorbar(xs, [r["latency_ms"]["median"] for r in rs],
                    yerr=[[0] * len(rs), [r["latency_ms"]["p95"] - r["latency_ms"]["median"] for r in rs]],
                    marker="o", capsize=3, label=label)
        a2.plot(xs, [r["faces_per_s"] for r in rs], marker="o", label=label)
    for ax, title, yl in ((a1, "Latency (median, bar to p95)", "ms per call"),
                          (a2, "Throughput", "faces / s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["batch"] for r in ok}), [str(b) for b in sorted({r["batch"] for r in ok})])
        ax.set_xlabel("batch (faces per call)")
        ax.set_ylabel(yl)
        ax.set_title(title)
        ax.legend(fontsize=7)
    return [str(report.save_figure(fig, out_dir / "models.png"))], []


def _run(args, argv) -> int:
    quiet = args.quiet
    report.check_device(args.device)
    models = resolve_models(args.models)
    backends = list(BACKENDS) if "all" in args.backends else args.backends
    out_dir = report.prepare_out_dir(args.out, args.overwrite)
    machine = report.machine_info()
    results, notes = [], []
    log(f"{PROG}: {len(models)} model(s) x {len(backends)} backend(s) x {len(args.precisions)} precision(s), "
        f"batches {args.batches}; results in {out_dir}", quiet)
    for path in models:
        for backend in backends:
            for precision in args.precisions:
                rows = bench_one(path, backend, precision, args, quiet)
                for r in rows:
                    if r["status"] != "ok":
                        log(f"  {r['model']} {backend} {precision}: skipped: {r['reason']}", quiet)
                results.extend(rows)
    busy = [r["other_cores_busy"] for r in results if r.get("other_cores_busy") is not None]
    if busy and max(busy) > 0.5:
        notes.append(f"other processes kept up to {max(busy):.1f} CPU cores busy: numbers are noisier than on "
                     f"an idle machine")
    result = {
        **report.result_header("models", PROG, argv),
        "settings": {"models": [str(p) for p in models], "backends": backends, "precisions": args.precisions,
                     "batches": args.batches, "iters": args.iters, "warmup": args.warmup,
                     "device": args.device, "threads": args.threads, "seed": args.seed},
        "machine": machine, "results": results, "notes": notes, "files": {},
        "rows": [{"key": {"model": r["model"], "backend": r["backend"], "device": r["device"],
                          "precision": r["precision"], "batch": r["batch"]},
                  "metrics": {"median_ms": r["latency_ms"]["median"], "p95_ms": r["latency_ms"]["p95"],
                              "faces_per_s": r["faces_per_s"]}}
                 for r in results if r["status"] == "ok"],
    }
    report.write_results(result, out_dir, markdown, None if args.no_plots else plot, json_path=args.json)
    log(f"wrote {out_dir / 'models.json'}, {out_dir / 'models.md'}", quiet)
    if not any(r["status"] == "ok" for r in results):
        raise BenchError("no model could be measured on any requested backend (see 'Not measured' above)", 1)
    return 0


def main(argv=None) -> int:
    return report.run_main(PROG, argv, build_parser, _run)


if __name__ == "__main__":
    sys.exit(main())
