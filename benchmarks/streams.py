"""Several streams in one process: aggregate throughput, per-stream latency, batch sizes formed.

    python -m benchmarks.fps --streams 1,2,4,8 [--resolutions 480p] [--frames 30] [--warmup 5]
                             [--triton/--no-triton] [--out DIR]

For every stream count N and engine, N copies of a generated clip (one masked face) run through
stream.multistream.MultiStream (one Pipeline per stream, null sinks: decoding, tracking, models and
compositing are measured, encoding is not):

* in-process - every stream's faces go to ONE SharedBatcher owning the ONNX Runtime runners: the faces
               of all streams are batched into each model call (bounded wait);
* triton     - every stream is an independent client of a local Triton server (`python -m
               engines.serve`, PyTriton, the same ONNX Runtime runners inside); Triton's dynamic batcher
               forms the batches across streams (read back from the server's statistics).

Each (N, engine) runs twice: offline (lossless, as fast as possible: aggregate FPS over the frames
after every stream's first --warmup frames) and live (each stream played at the clip's 25 FPS like a
camera (--live-fps to pace it slower): per-stream p95 latency capture -> output, and the frames dropped to keep it bounded).
`vs one stream` is aggregate FPS over the N=1 FPS of the same engine in the same run: >= 1 means no loss
from sharing the process (> 1: batching or overlap pays). Results: streams.json and streams.md in --out.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


from benchmarks import report
from benchmarks.report import BenchError, NullSink, fmt, log, md_table

PROG = "benchmarks.fps --streams"
CLIP_FPS = 25


def _clip(args):
    from benchmarks.clips import generated_clip, parse_resolution
    res = (args.resolutions or ["480p"])[0]
    size = parse_resolution(res)
    return generated_clip(size, faces=1, frames=args.warmup + args.frames, fps=CLIP_FPS,
                          cache_dir=args.clips_dir, log=lambda m: log(m, args.quiet)), f"{size[0]}x{size[1]}"


class LocalTriton:
    """`python -m engines.serve` on free ports for the run."""

    def __init__(self, threads: int | None):
        import socket

        def free():
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]
        self.grpc, self.http = free(), free()
        self.url = f"grpc://127.0.0.1:{self.grpc}"
        cmd = [sys.executable, "-m", "engines.serve", "--grpc-port", str(self.grpc), "--http-port", str(self.http),
               "--address", "127.0.0.1"] + (["--threads", str(threads)] if threads else [])
        self.proc = subprocess.Popen(cmd, cwd=report.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        ready = threading.Event()

        def read():
            for line in self.proc.stdout:
                if "ready" in line:
                    ready.set()
        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120):
            self.close()
            raise BenchError(f"engines.serve did not become ready: {self.proc.stderr.read()[-500:]}", 1)

    def batch_stats(self) -> dict:
        """model -> {batch size: executions} so far, from Triton's own statistics."""
        import tritonclient.grpc as grpcclient
        c = grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc}")
        try:
            out = {}
            for m in c.get_inference_statistics(as_json=True).get("model_stats", []):
                out[m["name"]] = {int(b["batch_size"]): int(b["compute_infer"]["count"])
                                  for b in m.get("batch_stats", [])}
            return out
        finally:
            c.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _delta(after: dict, before: dict) -> dict:
    out = {}
    for model, sizes in after.items():
        d = {k: v - before.get(model, {}).get(k, 0) for k, v in sizes.items()}
        d = {k: v for k, v in sorted(d.items()) if v > 0}
        calls = sum(d.values())
        out[model] = {"calls": calls, "faces": sum(k * v for k, v in d.items()),
                      "mean_faces_per_call": sum(k * v for k, v in d.items()) / calls if calls else 0.0,
                      "faces_per_call": {str(k): v for k, v in d.items()}}
    return out


def one_run(clip: Path, n: int, engine: str, live: bool, args, triton: LocalTriton | None) -> dict:
    from benchmarks.clips import PacedSource
    from stream.multistream import MultiStream, SharedBatcher, StreamUnmasker, make_runners
    from stream.pipeline import Mode
    from stream.sources import open_source
    from stream.unmasker import Unmasker

    outputs = [[] for _ in range(n)]        # (t_out, latency_ms) per stream

    def on_frame(i, frame, res):
        outputs[i].append((time.perf_counter(), (time.monotonic() - frame.capture_time) * 1e3))

    batcher = None
    if engine == "in-process":
        batcher = SharedBatcher(lambda: make_runners("onnxruntime", threads=args.threads),
                                max_wait_ms=args.max_wait_ms).start()
        make = lambda: StreamUnmasker(batcher)  # noqa: E731
    else:
        os.environ["UNMASK_TRITON_URL"] = triton.url
        make = lambda: Unmasker(backend="triton")  # noqa: E731
        before = triton.batch_stats()
    if live:
        # Live streams start playing at once: build and warm every unmasker first (mediapipe graphs,
        # sessions), on the capture clock the live pipeline uses, so start-up is not counted as latency.
        warm_src = open_source(str(clip))
        warm_frames = [warm_src.read().image for _ in range(2)]
        warm_src.close()
        made = []
        for _ in range(n):
            um = make()
            for img in warm_frames:
                um.process(img, timestamp_ms=time.monotonic() * 1000.0)
            made.append(um)
        make = made.pop
    sources = [open_source(str(clip)) for _ in range(n)]
    if live:
        sources = [PacedSource(s, fps=args.live_fps or CLIP_FPS) for s in sources]
    try:
        multi = MultiStream([(s, [NullSink()], make, []) for s in sources],
                            mode=Mode.LIVE if live else Mode.OFFLINE, on_frame=on_frame)
        results = multi.run()
    finally:
        for s in sources:
            s.close()
        if batcher is not None:
            batcher.close()
    errors = [r.error for r in results if r.error]
    if errors:
        raise BenchError(f"{engine}, {n} streams: {errors[0]}", 1)
    w = args.warmup
    row = {"streams": n, "engine": engine, "mode": "live" if live else "offline",
           "frames_out": [len(o) for o in outputs],
           "frames_dropped": [r.stats.frames_dropped for r in results]}
    if not live:
        if any(len(o) <= w for o in outputs):
            raise BenchError("a stream produced fewer frames than --warmup", 1)
        t0 = max(o[w - 1][0] if w else o[0][0] for o in outputs)       # every stream past its warm-up
        t1 = max(o[-1][0] for o in outputs)
        counted = sum(1 for o in outputs for t, _ in o if t > t0)
        row["aggregate_fps"] = counted / (t1 - t0) if t1 > t0 else None
    else:
        lats = [[lat for _, lat in o[w:]] for o in outputs]
        row["p95_latency_ms"] = [float(np.percentile(x, 95)) if x else None for x in lats]
        row["worst_stream_p95_ms"] = max((x for x in row["p95_latency_ms"] if x is not None), default=None)
        published = [getattr(s, "published", 0) for s in sources]
        row["dropped_pct"] = 100.0 * (sum(published) - sum(row["frames_out"])) / sum(published) if sum(published) else None
    row["batching"] = batcher.summary() if batcher is not None else _delta(triton.batch_stats(), before)
    return row


def run_streams(args, argv) -> int:
    counts = args.streams
    report.check_out_dir(args.out, args.overwrite)
    report.quiet_native_logs(args.verbose)
    clip, res = _clip(args)
    out_dir = report.prepare_out_dir(args.out, args.overwrite)
    engines = ["in-process"] + (["triton"] if args.triton else [])
    triton = LocalTriton(args.threads) if args.triton else None
    rows = []
    try:
        for engine in engines:
            for n in counts:
                for live in (False, True):
                    log(f"{engine}, {n} stream(s), {'live' if live else 'offline'} ...", args.quiet)
                    rows.append(one_run(clip, n, engine, live, args, triton))
    finally:
        if triton is not None:
            triton.close()
    base = {e: next((r["aggregate_fps"] for r in rows if r["engine"] == e and r["streams"] == 1
                     and r["mode"] == "offline"), None) for e in engines}
    for r in rows:
        if r["mode"] == "offline" and base.get(r["engine"]) and r.get("aggregate_fps"):
            r["vs_one_stream"] = r["aggregate_fps"] / base[r["engine"]]
    result = {**report.result_header("streams", PROG, argv),
              "settings": {"streams": counts, "clip": str(clip.name), "resolution": res, "frames": args.frames,
                           "warmup": args.warmup, "threads": args.threads, "live_fps": args.live_fps or CLIP_FPS, "max_wait_ms": args.max_wait_ms,
                           "sink": "null"},
              "machine": report.machine_info(), "rows": rows, "notes": [], "files": {}}
    report.write_results(result, out_dir, markdown)
    log(f"wrote {out_dir / 'streams.json'}, {out_dir / 'streams.md'}", args.quiet)
    return 0


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# Several streams in one process ({s['resolution']}, 1 masked face, {s['frames']} frames per "
             f"stream after {s['warmup']} warm-up, null sink; live streams paced at {s['live_fps']:g} FPS each)", "",
             report.machine_line(result["machine"]), ""]
    table = []
    by = {(r["engine"], r["streams"], r["mode"]): r for r in result["rows"]}
    for (engine, n, mode), r in by.items():
        if mode != "offline":
            continue
        live = by.get((engine, n, "live"), {})
        b = r["batching"].get("analyser", {})
        bl = live.get("batching", {}).get("analyser", {})
        table.append([engine, str(n), fmt(r.get("aggregate_fps")), fmt(r.get("vs_one_stream"), 2) + "×",
                      fmt(b.get("mean_faces_per_call"), 2), fmt(live.get("worst_stream_p95_ms"), 0),
                      fmt(live.get("dropped_pct"), 0) + " %", fmt(bl.get("mean_faces_per_call"), 2)])
    lines.append(md_table(["engine", "streams", "offline FPS (all streams)", "vs one stream",
                           "faces per analyser call (offline)", "live p95 ms (worst stream)", "live drops",
                           "faces per analyser call (live)"], table))
    lines += ["", "Batch sizes formed (analyser, offline / live: faces per call -> calls):", ""]
    for (engine, n, mode), r in by.items():
        lines.append(f"- {engine}, {n} streams, {mode}: {r['batching'].get('analyser', {}).get('faces_per_call')}")
    return "\n".join(lines)
