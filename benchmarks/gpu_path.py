"""The GPU-resident path, frame by frame: FPS, per-stage ms and GPU memory, tracker by tracker.

    python -m benchmarks.gpu_path --device cuda                       # 720p and 1080p, all setups
    python -m benchmarks.gpu_path --device cuda --resolutions 720p,1080p,2160p --frames 300
    python -m benchmarks.gpu_path --device cpu --frames 20             # the same code on the CPU
    python -m benchmarks.gpu_path --compare a/gpu_path.json b/gpu_path.json

The frames of the bundled sample (or --source) are decoded once and resized to each resolution in
memory, so decoding and encoding (CPU work, measured by benchmarks.fps) stay out of the numbers:
what is timed is `process()` on a frame in host memory, in VIDEO mode, until the finished frame is
back in host memory (or, for `as_tensor`, until the device has finished it). Setups, each on the
same frames:

* cpu          - Unmasker: mediapipe tracking + ONNX Runtime on the CPU (the default product path)
* gpu+mp       - GpuUnmasker, tracking by mediapipe on the CPU, everything else on the device
* gpu+torch-eager - GpuUnmasker, mediapipe's detector and mesh run by torch on the device, every
                 network launched layer by layer from Python
* gpu+torch    - the same with each network replayed as a CUDA graph (the default)
* gpu+torch+tensor - the same, leaving the frame on the device (a sink that takes GPU frames)

plus each tracker alone (its share of the frame time). Setups whose packages are missing (mediapipe
for cpu / gpu+mp) are reported as skipped with the reason. Results: gpu_path.json and gpu_path.md
in --out (default benchmarks/results/<timestamp>/).
"""
from __future__ import annotations

import time
from pathlib import Path

from benchmarks import report
from benchmarks.report import BenchError, fmt, log, md_table, ratio, summarize

PROG = "benchmarks.gpu_path"
DEFAULT_SOURCE = report.ROOT / "assets" / "sample.mp4"
SETUPS = ("cpu", "gpu+mp", "gpu+torch-eager", "gpu+torch", "gpu+torch+tensor")
SIZES = {"240p": (426, 240), "360p": (640, 360), "480p": (854, 480), "540p": (960, 540), "720p": (1280, 720),
         "1080p": (1920, 1080), "1440p": (2560, 1440), "2160p": (3840, 2160)}
STAGES = ("track", "align", "analyse", "decide", "inpaint", "composite")


def _times(values: list[float]) -> dict:
    """summarize() plus the tail: p50, p95, p99."""
    return {**summarize(values), **{f"p{q}": report.percentile(values, q) for q in (50, 95, 99)}}


def build_parser():
    p = report.new_parser(PROG, __doc__)
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="a video file (default: the sample)")
    p.add_argument("--resolutions", type=report.name_list(SIZES), default=["720p", "1080p"])
    p.add_argument("--setups", type=report.name_list(SETUPS), default=list(SETUPS))
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (the torch code on the CPU)")
    p.add_argument("--frames", type=report.positive_int, default=150, help="measured frames per setup")
    p.add_argument("--warmup", type=report.non_negative_int, default=20, help="unmeasured frames first")
    report.add_output_arguments(p.add_argument_group("output"), "(no plots are drawn)")
    report.add_compare_argument(p)
    return p


def read_frames(path: Path, n: int) -> list:
    """Up to n BGR frames of `path` (PyAV when installed, else OpenCV), looped when the clip is shorter."""
    import cv2

    frames = []
    try:
        import av
        with av.open(str(path)) as container:
            for f in container.decode(video=0):
                frames.append(f.to_ndarray(format="bgr24"))
                if len(frames) >= n:
                    break
    except ImportError:
        cap = cv2.VideoCapture(str(path))
        while len(frames) < n:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        cap.release()
    except Exception as exc:  # noqa: BLE001 - PyAV's errors name the file; one line for the user
        raise BenchError(f"cannot read {path}: {exc}") from None
    if not frames:
        raise BenchError(f"no video frames could be read from {path}")
    while len(frames) < n:
        frames += frames[:n - len(frames)]
    return frames


def _unavailable(setup: str, device: str) -> str | None:
    import importlib.util

    if setup in ("cpu", "gpu+mp") and importlib.util.find_spec("mediapipe") is None:
        return "mediapipe is not installed"
    if setup.startswith("gpu") and device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
    return None


def make_unmasker(setup: str, device: str):
    if setup == "cpu":
        from stream.factory import create_unmasker
        return create_unmasker(method="model", backend="onnxruntime")
    # The torch stages on `device` whatever it is (the CPU too: that is how CI runs this benchmark).
    from stream.gpu import GpuUnmasker
    return GpuUnmasker(device=device, tracker="mediapipe" if setup == "gpu+mp" else "torch",
                       cuda_graphs=setup != "gpu+torch-eager")


def _sync(device: str):
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def run_setup(setup: str, frames: list, device: str, warmup: int) -> dict:
    """Time `process()` on every frame (after `warmup` unmeasured ones)."""
    import torch

    as_tensor = setup.endswith("+tensor")
    on_cuda = setup.startswith("gpu") and device.startswith("cuda")
    um = make_unmasker(setup, device)
    try:
        step = 1000.0 / 30
        kwargs = {"as_tensor": True} if as_tensor else {}
        for i in range(warmup):
            um.process(frames[i % len(frames)], timestamp_ms=i * step, **kwargs)
        _sync(device if on_cuda else "cpu")
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
        times, stages, found = [], {k: [] for k in STAGES}, 0
        measured = frames[warmup:]
        t_start = time.perf_counter()
        for i, frame in enumerate(measured):
            t0 = time.perf_counter()
            res = um.process(frame, timestamp_ms=(warmup + i) * step, **kwargs)
            if as_tensor and on_cuda:
                torch.cuda.synchronize()           # the frame is finished, not only launched
            times.append((time.perf_counter() - t0) * 1e3)
            found += bool(res.faces)
            for k in STAGES:
                stages[k].append(res.timings_ms.get(k, 0.0))
        total = time.perf_counter() - t_start
        out = {"fps": len(measured) / total, "frame_ms": _times(times),
               "stages_ms": {k: sum(v) / len(v) for k, v in stages.items()},
               "faces_found": found / len(measured)}
        if on_cuda:
            out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return out
    finally:
        um.close()


def run_tracker(kind: str, frames: list, device: str, warmup: int) -> dict:
    """One tracker alone (VIDEO mode) on the same frames: its ceiling on the frame rate."""
    from benchmarks.detection import make_tracker
    from stream.tracking import RunningMode

    tracker = make_tracker(kind, RunningMode.VIDEO, 1, device)
    try:
        for i in range(warmup):
            tracker.process(frames[i % len(frames)])
        times, found = [], 0
        measured = frames[warmup:]
        for frame in measured:
            t0 = time.perf_counter()
            found += bool(tracker.process(frame))   # landmarks are host arrays: synchronised
            times.append((time.perf_counter() - t0) * 1e3)
        return {"frame_ms": _times(times), "fps": 1e3 / (sum(times) / len(times)),
                "faces_found": found / len(measured), "stats": dict(tracker.stats)}
    finally:
        tracker.close()


def markdown(result: dict) -> str:
    lines = [f"# GPU path: {report.machine_line(result['machine'])}", "",
             f"{result['frames']} frames of {Path(result['source']).name} per setup, after "
             f"{result['warmup']} warm-up frames; decode/encode excluded; device {result['device']}.", ""]
    rows = []
    for res_name, by_setup in result["results"].items():
        base = by_setup.get("cpu", {}).get("fps")
        for setup, r in by_setup.items():
            if "skipped" in r:
                rows.append([res_name, setup, "skipped: " + r["skipped"]] + [""] * (5 + len(STAGES)))
                continue
            st = r["stages_ms"]
            rows.append([res_name, setup, fmt(r["fps"]), fmt(ratio(r["fps"], base), 2, "x") if base else "",
                         fmt(r["frame_ms"]["p50"], 2), fmt(r["frame_ms"]["p95"], 2)]
                        + [fmt(st.get(k), 2) for k in STAGES]      # reports before "decide" lack it
                        + [fmt(r.get("gpu_peak_mb"), 0), fmt(r["faces_found"], 2)])
    lines += ["## Frames per second and per-stage ms", "",
              md_table(["res", "setup", "FPS", "vs cpu", "p50 ms", "p95 ms"] + list(STAGES)
                       + ["GPU MB", "found"], rows), ""]
    trows = []
    for res_name, by_kind in result["trackers"].items():
        for kind, r in by_kind.items():
            if "skipped" in r:
                trows.append([res_name, kind, "skipped: " + r["skipped"], "", "", ""])
                continue
            trows.append([res_name, kind, fmt(r["frame_ms"]["mean"], 2), fmt(r["frame_ms"]["p95"], 2),
                          fmt(r["fps"], 0), fmt(r["faces_found"], 2)])
    lines += ["## Trackers alone (their ceiling on the frame rate)", "",
              md_table(["res", "tracker", "mean ms", "p95 ms", "max FPS", "found"], trows), ""]
    return "\n".join(lines + report.markdown_tail(result))


def _run(args, argv) -> int:
    report.check_device(args.device)
    report.check_out_dir(args.out, args.overwrite)
    if not args.source.is_file():
        raise BenchError(f"--source {args.source} does not exist")
    report.quiet_native_logs(args.verbose)
    import cv2

    try:
        import torch  # noqa: F401
    except ImportError:
        raise BenchError("the GPU path needs PyTorch: pip install -e .[train]") from None
    frames = read_frames(args.source, args.frames + args.warmup)
    result = report.result_header("gpu_path", PROG, argv)
    result.update(machine=report.machine_info(), source=str(args.source), device=args.device,
                  frames=args.frames, warmup=args.warmup, results={}, trackers={}, notes=[])
    for res_name in args.resolutions:
        size = SIZES[res_name]
        clip = [cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) if f.shape[1::-1] != size else f
                for f in frames]
        warm, measured = clip[:args.warmup], clip[args.warmup:]
        result["results"][res_name] = by_setup = {}
        for setup in args.setups:
            reason = _unavailable(setup, args.device)
            if reason:
                by_setup[setup] = {"skipped": reason}
                log(f"{res_name} {setup}: skipped ({reason})", args.quiet)
                continue
            log(f"{res_name} {setup} ...", args.quiet)
            by_setup[setup] = r = run_setup(setup, warm + measured, args.device, args.warmup)
            log(f"{res_name} {setup}: {r['fps']:.1f} FPS, p95 {r['frame_ms']['p95']:.2f} ms", args.quiet)
        result["trackers"][res_name] = by_kind = {}
        for kind in ("mediapipe", "torch"):
            reason = _unavailable("cpu" if kind == "mediapipe" else "gpu", args.device)
            by_kind[kind] = ({"skipped": reason} if reason else
                             run_tracker(kind, warm + measured, args.device, args.warmup))
    out_dir = report.prepare_out_dir(args.out, args.overwrite)
    report.write_results(result, out_dir, markdown, json_path=args.json)
    return 0


def main(argv=None) -> int:
    return report.run_main(PROG, argv, build_parser, _run)


if __name__ == "__main__":
    raise SystemExit(main())
