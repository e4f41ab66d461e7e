"""A live soak: the pipeline on a real RTSP stream for many minutes, watching memory and latency.

    python -m benchmarks.soak --minutes 10 --out benchmarks/results/soak

The stream comes from the RTSP test server the tests use (tests/rtsp_server.py, GStreamer's,
run by the system Python): it plays a generated masked-face clip; when the clip ends the
stream ends and the source reconnects, so the camera "loops" for as long as the soak runs.
The pipeline runs in live mode with the shipped models (or --method classical) and no output.

Reported (soak.json, soak.md): RSS after the warm-up and at the end (growth %, goal < 5 %),
RSS sampled every few seconds, live latency p50/p95 in the first and the last window (one
minute, or a third of shorter runs) and their drift, frames, drops and reconnects.
"""
from __future__ import annotations

import argparse
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks import report
from benchmarks.report import BenchError

ROOT = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = ROOT / "tests" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
DEBIAN_PACKAGES = ("python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
                   "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav")
CLIP_SIZE, CLIP_FPS, CLIP_SECONDS = (640, 360), 25, 120
RSS_GOAL_PCT = 5.0


def build_parser() -> argparse.ArgumentParser:
    p = report.new_parser("benchmarks.soak", __doc__)
    p.add_argument("--minutes", type=report.positive_float, default=10.0, help="how long to run")
    p.add_argument("--method", choices=["model", "classical"], default="model")
    p.add_argument("--warmup-s", type=report.positive_float, default=None,
                   help="seconds before the start RSS is taken (default: 30, or a tenth of short runs)")
    p.add_argument("--rss-interval-s", type=report.positive_float, default=5.0)
    p.add_argument("--clip-seconds", type=report.positive_int, default=CLIP_SECONDS,
                   help="length of the generated clip the server loops")
    p.add_argument("--clips-dir", type=Path, help="where the generated clip is cached")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<time>)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--compare", nargs=2, metavar="JSON", help=argparse.SUPPRESS)
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspTestServer:
    """tests/rtsp_server.py serving `clip` at rtsp://127.0.0.1:PORT/stream."""

    def __init__(self, clip: Path):
        self.clip, self.port = clip, _free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/stream"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> RtspTestServer:
        if not os.path.exists(SYSTEM_PYTHON):
            raise BenchError(f"the soak needs {SYSTEM_PYTHON} with GStreamer's RTSP server "
                             f"(apt-get install {DEBIAN_PACKAGES})", 1)
        # The system Python must not see this virtualenv's packages.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(SERVER_SCRIPT), "serve", str(self.clip),
                                         str(self.port)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if selector.select(30) and self.process.stdout.readline().strip() == "ready":
                return self
        self.__exit__()
        raise BenchError("the RTSP test server did not start (needs GStreamer's RTSP server for "
                         f"{SYSTEM_PYTHON}: apt-get install {DEBIAN_PACKAGES})", 1)

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=10)
            self.process.stdout.close()
            self.process.stderr.close()


class LatencyLog:
    """The pipeline's on_frame callback: (seconds since start, latency ms) of every frame out.
    Two floats a frame: 10 minutes at 25 FPS is 15 000 pairs (the soak's own bookkeeping)."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.times: list[float] = []
        self.latencies: list[float] = []

    def __call__(self, frame, res) -> None:
        now = time.monotonic()
        self.times.append(now - self.t0)
        self.latencies.append((now - frame.capture_time) * 1e3)


class RssSampler(threading.Thread):
    def __init__(self, interval_s: float, t0: float):
        super().__init__(name="rss-sampler", daemon=True)
        self.interval_s, self.t0 = interval_s, t0
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while True:
            rss = report.rss_mb()
            if rss is not None:
                self.samples.append((time.monotonic() - self.t0, rss))
            if self.stop.wait(self.interval_s):
                return


def window_summary(times, latencies, start_s: float, end_s: float) -> dict:
    values = [lat for t, lat in zip(times, latencies) if start_s <= t < end_s]
    return {"from_s": start_s, "to_s": end_s, "frames": len(values),
            "p50_ms": report.percentile(values, 50), "p95_ms": report.percentile(values, 95)}


def rss_at(samples, t_s: float) -> float | None:
    """The first RSS sample taken at or after t_s (the last one if none is)."""
    later = [rss for t, rss in samples if t >= t_s]
    return later[0] if later else (samples[-1][1] if samples else None)


def summarize(duration_s: float, warmup_s: float, log: LatencyLog, rss: list, stats) -> dict:
    window = min(60.0, duration_s / 3)
    first = window_summary(log.times, log.latencies, warmup_s, warmup_s + window)
    last = window_summary(log.times, log.latencies, duration_s - window, duration_s + 1.0)
    rss_start, rss_end = rss_at(rss, warmup_s), (rss[-1][1] if rss else None)
    growth = report.ratio(rss_end - rss_start, rss_start) if rss_start and rss_end else None
    return {
        "duration_s": duration_s, "warmup_s": warmup_s, "window_s": window,
        "frames_out": stats.frames_out, "frames_dropped": stats.frames_dropped,
        "reconnects": stats.reconnects, "fps": stats.fps, "stopped_by": stats.stopped_by,
        "rss_mb": {"start": rss_start, "end": rss_end, "peak": max((r for _, r in rss), default=None),
                   "growth_pct": growth * 100 if growth is not None else None,
                   "goal_pct": RSS_GOAL_PCT, "samples": [[round(t, 1), round(r, 1)] for t, r in rss]},
        "latency_ms": {"first_window": first, "last_window": last,
                       "p50_drift_ms": _difference(last["p50_ms"], first["p50_ms"]),
                       "p95_drift_ms": _difference(last["p95_ms"], first["p95_ms"]),
                       "overall": stats.latency_ms},
        "stages": stats.stages,
    }


def _difference(a, b):
    return a - b if a is not None and b is not None else None


def markdown(result: dict) -> str:
    s = result["soak"]
    rss, lat = s["rss_mb"], s["latency_ms"]
    first, last = lat["first_window"], lat["last_window"]
    verdict = ("within" if rss["growth_pct"] is not None and rss["growth_pct"] < rss["goal_pct"]
               else "NOT within")
    return "\n".join([
        f"# Unmask live soak — {result['created']}", "",
        f"Machine: {report.machine_line(result['machine'])}", "",
        f"{s['duration_s'] / 60:.1f} min of the RTSP test server's looping {result['clip']} "
        f"(method {result['method']}, live mode, no output): {s['frames_out']} frames out "
        f"({s['fps']:.1f} FPS), {s['frames_dropped']} dropped, {s['reconnects']} reconnects.", "",
        "| | start | end |", "| :--- | ---: | ---: |",
        f"| RSS MB (start = after {s['warmup_s']:.0f} s warm-up) | {report.fmt(rss['start'])} | "
        f"{report.fmt(rss['end'])} |",
        f"| latency p50 ms ({s['window_s']:.0f} s window) | {report.fmt(first['p50_ms'])} | "
        f"{report.fmt(last['p50_ms'])} |",
        f"| latency p95 ms | {report.fmt(first['p95_ms'])} | {report.fmt(last['p95_ms'])} |", "",
        f"RSS growth {report.fmt(rss['growth_pct'], 2, ' %')} ({verdict} the {rss['goal_pct']:g} % goal); "
        f"latency drift p50 {report.fmt(lat['p50_drift_ms'], 1, ' ms')}, "
        f"p95 {report.fmt(lat['p95_drift_ms'], 1, ' ms')}.",
    ])


def run(args, argv) -> int:
    report.check_out_dir(args.out, args.overwrite)
    report.quiet_native_logs(args.verbose)
    from benchmarks.clips import generated_clip
    from stream.pipeline import Mode, Pipeline
    from stream.sources import open_source
    from stream.unmasker import Unmasker, models_available

    if args.method == "model" and not models_available("fast"):
        raise BenchError("the shipped models are missing from models/weights: use --method classical", 1)
    duration_s = args.minutes * 60
    warmup_s = args.warmup_s if args.warmup_s is not None else min(30.0, duration_s / 10)
    clip = generated_clip(CLIP_SIZE, 1, CLIP_FPS * args.clip_seconds, CLIP_FPS, cache_dir=args.clips_dir,
                          log=lambda m: report.log(m, args.quiet))
    out_dir = report.prepare_out_dir(args.out, args.overwrite)
    result = report.result_header("soak", "benchmarks.soak", argv)
    result.update(machine=report.machine_info(), clip=clip.name, method=args.method,
                  minutes=args.minutes, notes=[], rows=[])
    with RtspTestServer(clip) as server:
        report.log(f"benchmarks.soak: {args.minutes:g} min on {server.url} ({clip.name})", args.quiet)
        source = open_source(server.url)
        try:
            log = LatencyLog()
            sampler = RssSampler(args.rss_interval_s, log.t0)
            sampler.start()
            pipe = Pipeline(source, [], lambda: Unmasker(method=args.method), mode=Mode.LIVE,
                            duration_s=duration_s, on_frame=log)
            stats = pipe.run()
            sampler.stop.set()
            sampler.join()
        finally:
            source.close()
    result["soak"] = summarize(duration_s, warmup_s, log, sampler.samples, stats)
    result["rows"] = [{"metric": "rss_growth_pct", "value": result["soak"]["rss_mb"]["growth_pct"]},
                      {"metric": "p95_drift_ms", "value": result["soak"]["latency_ms"]["p95_drift_ms"]}]
    report.write_results(result, out_dir, markdown)
    return 0


def main(argv=None) -> int:
    return report.run_main("benchmarks.soak", argv, build_parser, run)


if __name__ == "__main__":
    sys.exit(main())
