"""End-to-end speed of the Unmask stream: throughput, live latency, stage times, resources.

    python -m benchmarks.fps                                   # bundled sample, 100 frames, 3 repeats
    python -m benchmarks.fps --resolutions 480p,720p,1080p --faces 1,4
    python -m benchmarks.fps --source clip.mp4 --method model --backend onnxruntime,torch
    python -m benchmarks.fps --source 0 --frames 300           # a webcam (live mode only)
    python -m benchmarks.fps --compare old/fps.json new/fps.json
    python -m benchmarks.fps --streams 1,2,4,8                  # several streams per process (benchmarks.streams)

For every clip x method x backend, each repeat runs the same frames through:

* floor      - the same Pipeline, source and sink with nothing in between (bare decode ->
               encode of the same frames): what the machine allows this run; every FPS is
               also reported as a multiple of it ("x floor"), which holds across machines
               whose speed differs (the issues' targets assume a ~50 FPS floor at 720p);
* pipelined  - stream.pipeline.Pipeline in offline mode (capture, inference and output
               threads, lossless): the engine users run;
* sequential - decode -> Unmasker.process -> encode in one thread, the naive loop;
* live       - the Pipeline in live mode on the clip played at its frame rate by a
               pacing source (the file behaves like a camera): latency from capture to
               output (p50/p95/p99) and frames dropped to keep up.

The headline is pipelined FPS / sequential FPS. Each trial opens the clip afresh,
builds a fresh Unmasker and warms it up on the first --warmup frames (mediapipe
graphs, ONNX sessions and the tracker start there); the next --frames frames are
measured. Throughput is measured frames / (time from the start of the measured
part to the last measured frame's output), so start-up and encoder flushing stay
out of it. Results: fps.json, fps.md (also printed) and PNG plots in --out
(default benchmarks/results/<timestamp>/).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import report
from benchmarks.report import BenchError, NullSink, fmt, fmt_spread, log, md_table, ratio, summarize

PROG = "benchmarks.fps"
DEFAULT_SOURCE = report.ROOT / "assets" / "sample.mp4"
STAGES = ("decode", "track", "align", "analyse", "decide", "inpaint", "composite", "encode")
ENGINES = ("floor", "pipelined", "sequential", "live")
METHODS = ("model", "classical", "auto")
SINKS = ("h264", "null")


# ------------------------------------------------------------------------------------ arguments

def build_parser() -> argparse.ArgumentParser:
    p = report.new_parser(PROG, __doc__)
    src = p.add_argument_group("input (default: the bundled assets/sample.mp4)")
    src.add_argument("--source", help="a video file, image folder, webcam index or stream URL")
    src.add_argument("--resolutions", type=report.name_list(),
                     help="generated clips at these sizes: 240p 360p 480p 540p 720p 1080p 1440p 2160p "
                          "or WxH, comma-separated")
    src.add_argument("--faces", type=report.int_list,
                     help="masked faces per generated frame, comma-separated (default 1)")
    src.add_argument("--clips-dir", type=Path, help="cache of generated clips "
                     "(default benchmarks/results/clips/)")
    src.add_argument("--max-faces", type=report.positive_int,
                     help="faces tracked per frame (default: --faces for generated clips, else 1)")
    m = p.add_argument_group("what runs")
    m.add_argument("--method", type=report.name_list(METHODS), default=["model", "classical"],
                   help="model, classical and/or auto, comma-separated (default model,classical: the "
                        "models are compared to the cv2.inpaint baseline; model is skipped with a note "
                        "when the shipped models are missing)")
    m.add_argument("--backend", type=report.name_list(), default=["auto"],
                   help="auto, onnxruntime, torch, tensorrt (comma-separated; model method only)")
    m.add_argument("--device", help="cpu, cuda or cuda:N (default: the backend's best)")
    m.add_argument("--threads", type=report.positive_int, help="CPU threads per model (ONNX Runtime)")
    m.add_argument("--full-rate-faces", type=cadence_list, default=[DEFAULT_CADENCE], metavar="N|all,...",
                   help="the crowd cadence (run_stream.py --full-rate-faces), comma-separated to compare in one "
                        "run, e.g. 2,all (default: the Unmasker's own)")
    m.add_argument("--sink", choices=SINKS, default="h264",
                   help="h264: encode to a temporary .mp4 (measures encoding); null: discard frames")
    m.add_argument("--live", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure live mode (latency, drops) with the clip paced at its frame rate")
    m.add_argument("--live-fps", type=report.positive_float, help="pace the live run at this rate instead "
                   "of the clip's own")
    meas = p.add_argument_group("measurement")
    meas.add_argument("--frames", type=report.positive_int, default=100, help="measured frames per trial")
    meas.add_argument("--warmup", type=report.non_negative_int, default=10,
                      help="frames processed before measuring, in every trial (default 10)")
    meas.add_argument("--repeats", type=report.positive_int, default=3, help="trials per engine")
    multi = p.add_argument_group("several streams per process (benchmarks.streams)")
    multi.add_argument("--streams", type=report.int_list,
                       help="stream counts, e.g. 1,2,4,8: aggregate FPS, per-stream p95 latency, batch sizes, "
                            "in-process vs Triton")
    multi.add_argument("--triton", action=argparse.BooleanOptionalAction, default=True,
                       help="with --streams: also through a local Triton server (python -m engines.serve)")
    multi.add_argument("--max-wait-ms", type=float, default=4.0, help="with --streams: the shared stage's wait")
    report.add_output_arguments(p.add_argument_group("output"), "skip the PNG plots")
    report.add_compare_argument(p)
    return p


@dataclass
class ClipSpec:
    label: str
    path: str
    generated: bool = False
    faces: int | None = None          # faces drawn (generated clips)
    live: bool = False                # a real camera / stream
    size: tuple[int, int] | None = None


DEFAULT_CADENCE = "default"


def cadence_list(text: str) -> list[str]:
    """"2,all" -> ["2", "all"]: --full-rate-faces values (a count of faces, or all)."""
    items = report.name_list()(text)
    for item in items:
        if item not in ("all", DEFAULT_CADENCE) and not (item.isdigit()):
            raise argparse.ArgumentTypeError(f"expected comma-separated face counts or 'all', got {text!r}")
    return items


@dataclass
class Setup:
    method: str
    backend: str
    device: str | None
    threads: int | None
    max_faces: int
    full_rate_faces: str = DEFAULT_CADENCE     # "default", "all" or a count (stream.unmasker.FULL_RATE_FACES)

    def unmasker_kwargs(self) -> dict:
        if self.full_rate_faces == DEFAULT_CADENCE:
            return {}
        return {"full_rate_faces": None if self.full_rate_faces == "all" else int(self.full_rate_faces)}


@dataclass
class Trial:
    engine: str
    rows: list = field(default_factory=list)


def _is_live_spec(spec: str) -> bool:
    import re
    return bool(re.fullmatch(r"\d+", spec) or re.fullmatch(r"/dev/video\d+", spec) or "://" in spec)


def resolve_clips(args, log_fn) -> list[ClipSpec]:
    """The clips to measure (generating the missing ones); BenchError on bad input."""
    from benchmarks.clips import DEFAULT_FPS, generated_clip, parse_resolution, resolution_label
    if args.source and (args.resolutions or args.faces):
        raise BenchError("--source and --resolutions/--faces exclude each other: measure a file or "
                         "generated clips")
    if args.source:
        spec = str(args.source)
        if _is_live_spec(spec):
            return [ClipSpec(label=spec, path=spec, live=True)]
        if not Path(spec).exists():
            raise BenchError(f"input not found: {spec}")
        return [ClipSpec(label=Path(spec).name, path=spec)]
    if not args.resolutions and not args.faces:
        if not DEFAULT_SOURCE.exists():
            raise BenchError(f"the bundled sample {DEFAULT_SOURCE} is missing: pass --source or "
                             f"--resolutions (python assets/make_sample.py recreates it)")
        return [ClipSpec(label=DEFAULT_SOURCE.name, path=str(DEFAULT_SOURCE))]
    sizes = []
    for r in args.resolutions or ["720p"]:
        try:
            sizes.append(parse_resolution(r))
        except ValueError as exc:
            raise BenchError(str(exc)) from None
    faces = args.faces or [1]
    if max(faces) > 64:
        raise BenchError(f"--faces {max(faces)} is too many (at most 64 per frame)")
    n = args.warmup + args.frames
    out = []
    for size in sizes:
        for f in faces:
            path = generated_clip(size, f, n, DEFAULT_FPS, cache_dir=args.clips_dir, log=log_fn)
            out.append(ClipSpec(label=f"{resolution_label(size)} {f}f", path=str(path), generated=True,
                                faces=f, size=size))
    return out


def resolve_setups(args, models_ok: bool) -> tuple[list[Setup], list[str]]:
    from engines.select import ALIASES, BACKENDS
    notes = []
    backends = []
    for b in args.backend:
        nb = ALIASES.get(b.lower(), b.lower())
        if nb not in BACKENDS:
            raise BenchError(f"unknown backend {b!r}: choose from {', '.join(BACKENDS)}")
        if nb not in backends:
            backends.append(nb)
    methods = []
    for mth in args.method:
        mth = ("model" if models_ok else "classical") if mth == "auto" else mth
        if mth not in methods:
            methods.append(mth)
    if "model" in methods and not models_ok:
        msg = ("the shipped models are missing from models/weights (analyser.onnx, inpainter_fast.onnx): "
               "the model method was skipped")
        if methods == ["model"]:
            raise BenchError(msg.replace(": the model method was skipped", "; use --method classical"), 1)
        methods.remove("model")
        notes.append(msg)
    setups = []
    for mth in methods:
        for b in (backends if mth == "model" else ["-"]):
            for cadence in (args.full_rate_faces if mth == "model" else [DEFAULT_CADENCE]):
                setups.append(Setup(mth, b, args.device, args.threads, 1, cadence))
    return setups, notes


# ----------------------------------------------------------------------------------- the trials

class Recorder:
    """The pipeline's on_frame callback: when each frame came out, and its stage times."""

    def __init__(self):
        self.rows = []

    def __call__(self, frame, res):
        now = time.monotonic()
        self.rows.append({"t_out": time.perf_counter(), "latency_ms": (now - frame.capture_time) * 1e3,
                          "stages": dict(frame.stages), "faces": len(res.faces),
                          "masked": sum(1 for f in res.faces if f.masked), "index": frame.index})


class PassThrough:
    """The floor's unmasker: every frame out as it came in, no faces."""

    tracks_ahead = False

    def process(self, frame_bgr, timestamp_ms=None):
        from stream.unmasker import Result
        return Result(frame_bgr, [], {})

    def close(self) -> None:
        pass


class Runner:
    def __init__(self, args, out_dir: Path, machine: dict):
        self.args = args
        self.tmp = out_dir / ".tmp"
        self.gpu_device = args.device if args.device and args.device != "cpu" else \
            ("cuda:0" if machine.get("gpus") and args.device != "cpu" else None)
        self._n = 0

    # -- helpers
    def unmasker(self, setup: Setup):
        # What run_stream.py runs (with --device cuda the GPU-resident path, downloads overlapping).
        from stream.factory import create_unmasker
        return create_unmasker(method=setup.method, backend=setup.backend if setup.method == "model" else "auto",
                               device=setup.device, max_faces=setup.max_faces, threads=setup.threads,
                               defer_download=True, **setup.unmasker_kwargs())

    def sinks(self, clip: ClipSpec):
        if self.args.sink == "null":
            return [NullSink()]
        from stream.sinks import open_sink
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._n += 1
        return [open_sink(str(self.tmp / f"out-{self._n}.mp4"), overwrite=True,
                          source_path=None if clip.live else clip.path)]

    def _clean(self) -> None:
        for p in self.tmp.glob("out-*.mp4"):
            p.unlink(missing_ok=True)

    def open_clip(self, clip: ClipSpec):
        from stream.sources import open_source
        return open_source(clip.path)

    @staticmethod
    def warm_up(um, source, n: int, clock: str) -> None:
        """Process the first n frames (untimed): graphs, sessions and the tracker start here."""
        last = -1.0
        for _ in range(n):
            frame = source.read()
            if frame is None:
                raise BenchError(f"{source.info.description} ended during the {n} warm-up frames", 1)
            if clock == "file" and frame.timestamp_s is not None:
                ts = frame.timestamp_s * 1000.0
            else:
                ts = frame.capture_time * 1000.0
            ts = last = ts if ts > last else last + 1e-3
            um.process(frame.image, timestamp_ms=ts)

    def monitor(self):
        return report.ResourceMonitor(gpu_device=self.gpu_device)

    def run_pipeline(self, feed, clip: ClipSpec, um, mode, max_frames: int | None):
        """`um` through a Pipeline from `feed` under the resource monitor: the recorder of the
        output frames, the start time, the pipeline's stats and the monitor."""
        from stream.pipeline import Pipeline
        rec = Recorder()
        pipe = Pipeline(feed, self.sinks(clip), lambda: um, mode=mode, max_frames=max_frames, on_frame=rec)
        with self.monitor() as mon:
            t0 = time.perf_counter()
            stats = pipe.run()
        return rec, t0, stats, mon

    # -- engines
    def _offline(self, clip: ClipSpec, frames: int, make_unmasker) -> dict:
        from stream.pipeline import Mode
        source = self.open_clip(clip)
        try:
            rss0 = report.rss_mb()
            um = make_unmasker()
            self.warm_up(um, source, self.args.warmup, "file")
            rec, t0, stats, mon = self.run_pipeline(source, clip, um, Mode.OFFLINE, frames)
        finally:
            source.close()
            self._clean()
        out = _summary(rec.rows, t0, frames, decode_key="decode")
        out.update(resources=_with_base(mon.result, rss0), pipeline_stats=_pipeline_stats(stats))
        return out

    def pipelined(self, clip: ClipSpec, setup: Setup, frames: int) -> dict:
        return self._offline(clip, frames, lambda: self.unmasker(setup))

    def floor(self, clip: ClipSpec, setup: Setup, frames: int) -> dict:
        # The same frames through the same pipeline and sink, nothing in between.
        return self._offline(clip, frames, PassThrough)

    def sequential(self, clip: ClipSpec, setup: Setup, frames: int) -> dict:
        source = self.open_clip(clip)
        sinks = []
        try:
            rss0 = report.rss_mb()
            um = self.unmasker(setup)
            self.warm_up(um, source, self.args.warmup, "file")
            sinks = self.sinks(clip)
            rows = []
            last_ts = -1.0
            with self.monitor() as mon:
                t0 = time.perf_counter()
                for sink in sinks:
                    sink.open(source.info)
                for _ in range(frames):
                    ta = time.perf_counter()
                    frame = source.read()
                    tb = time.perf_counter()
                    if frame is None:
                        break
                    ts = frame.timestamp_s * 1000.0 if frame.timestamp_s is not None \
                        else frame.capture_time * 1000.0
                    ts = ts if ts > last_ts else last_ts + 1e-3
                    last_ts = ts
                    res = um.process(frame.image, timestamp_ms=ts)
                    if hasattr(res.image, "result"):          # a GPU frame still downloading
                        res.image = res.image.result()
                    tc = time.perf_counter()
                    for sink in sinks:
                        sink.write(frame, res.image)
                    td = time.perf_counter()
                    stages = {"decode": (tb - ta) * 1e3, **res.timings_ms, "encode": (td - tc) * 1e3}
                    rows.append({"t_out": td, "latency_ms": (time.monotonic() - frame.capture_time) * 1e3,
                                 "stages": stages, "faces": len(res.faces),
                                 "masked": sum(1 for f in res.faces if f.masked), "index": frame.index,
                                 "frame_ms": (td - ta) * 1e3})
                for sink in sinks:
                    sink.close()
                sinks = []
            um.close()
        finally:
            for sink in sinks:
                sink.close()
            source.close()
            self._clean()
        out = _summary(rows, t0, frames, decode_key="decode")
        out.update(resources=_with_base(mon.result, rss0))
        return out

    def live(self, clip: ClipSpec, setup: Setup, frames: int) -> dict:
        from benchmarks.clips import PacedSource
        from stream.pipeline import Mode
        source = self.open_clip(clip)
        paced = None
        try:
            rss0 = report.rss_mb()
            um = self.unmasker(setup)
            # Live timestamps are capture times: every later frame is captured after these.
            self.warm_up(um, source, self.args.warmup, "capture")
            dropped_before = getattr(source.stats, "dropped", 0)
            if clip.live:
                feed, decode_key = source, "decode"
                max_frames = frames
            else:
                feed = paced = PacedSource(source, fps=self.args.live_fps, max_frames=frames)
                decode_key, max_frames = "source_decode", None
            rec, t0, stats, mon = self.run_pipeline(feed, clip, um, Mode.LIVE, max_frames)
        finally:
            (paced or source).close()
            self._clean()
        published = paced.published if paced is not None else stats.frames_in + \
            getattr(source.stats, "dropped", 0) - dropped_before
        out = _summary(rec.rows, t0, published, decode_key=decode_key)
        if paced is not None and paced.started_at is not None and paced.ended_at is not None:
            # Output rate over the playback (the clip's own rate caps it).
            span = max(paced.ended_at - paced.started_at, 1e-9) + 1.0 / paced.fps
            out["fps"] = len(rec.rows) / span
            out["paced_fps"] = paced.fps
            out["late_frames"] = paced.late
        waits = [r["stages"].get("decode") for r in rec.rows if decode_key != "decode"]
        out.update(frames_published=published, frames_dropped=published - len(rec.rows),
                   dropped_pct=100.0 * (published - len(rec.rows)) / published if published else None,
                   pipeline_dropped=stats.frames_dropped,
                   capture_wait_ms=summarize(waits)["mean"] if waits else None,
                   latencies_ms=[round(r["latency_ms"], 2) for r in rec.rows],
                   resources=_with_base(mon.result, rss0), pipeline_stats=_pipeline_stats(stats))
        return out


def _with_base(resources: dict, rss_before_unmasker: float | None) -> dict:
    """Adds what the trial's Unmasker and frames took above the process's memory before it."""
    peak = resources.get("peak_rss_mb")
    return {**resources, "rss_before_unmasker_mb": rss_before_unmasker,
            "unmasker_rss_mb": peak - rss_before_unmasker if peak is not None and rss_before_unmasker is not None
            else None}


def _pipeline_stats(stats) -> dict:
    d = stats.as_dict()
    return {k: d[k] for k in ("mode", "frames_in", "frames_out", "frames_dropped", "duration_s", "fps",
                              "stopped_by", "latency_ms")}


def _summary(rows: list[dict], t0: float, frames_given: int, decode_key: str) -> dict:
    """Per-trial numbers from per-frame rows (t_out, latency_ms, stages, faces...)."""
    n = len(rows)
    duration = (rows[-1]["t_out"] - t0) if rows else None
    stages = {}
    for s in STAGES:
        key = decode_key if s == "decode" else s
        vals = [r["stages"].get(key, 0.0) for r in rows]
        st = summarize(vals)
        stages[s] = {"mean_ms": st["mean"], "p95_ms": report.percentile(vals, 95)}
    if rows and "frame_ms" in rows[0]:
        frame_ms = [r["frame_ms"] for r in rows]
    else:   # time one frame spent in the system: its decode, then capture -> output
        frame_ms = [r["stages"].get(decode_key, 0.0) + r["latency_ms"] for r in rows]
    lat = [r["latency_ms"] for r in rows]
    return {
        "frames": n, "frames_given": frames_given,
        "duration_s": duration, "fps": n / duration if duration else None,
        "stages": stages,
        "stage_sum_ms": sum(v["mean_ms"] for v in stages.values() if v["mean_ms"] is not None) if rows else None,
        "frame_time_ms": summarize(frame_ms)["mean"],
        "latency_ms": {"p50": report.percentile(lat, 50), "p95": report.percentile(lat, 95),
                       "p99": report.percentile(lat, 99), "mean": summarize(lat)["mean"],
                       "max": max(lat) if lat else None},
        "mean_faces": summarize([r["faces"] for r in rows])["mean"],
        "masked_faces_per_frame": summarize([r["masked"] for r in rows])["mean"],
    }


def _aggregate(trials: list[dict]) -> dict:
    """Medians (and spread) over the repeats of one engine."""
    med = lambda xs: summarize(xs)["median"]   # noqa: E731
    agg = {
        "fps": summarize([t["fps"] for t in trials]),
        "stages": {s: {"mean_ms": med([t["stages"][s]["mean_ms"] for t in trials]),
                       "p95_ms": med([t["stages"][s]["p95_ms"] for t in trials])} for s in STAGES},
        "stage_sum_ms": med([t["stage_sum_ms"] for t in trials]),
        "frame_time_ms": med([t["frame_time_ms"] for t in trials]),
        "latency_ms": {k: med([t["latency_ms"][k] for t in trials]) for k in ("p50", "p95", "p99", "mean")},
        "latency_p95_spread": summarize([t["latency_ms"]["p95"] for t in trials]),
        "cpu_pct": summarize([t["resources"]["cpu_pct"] for t in trials]),
        "other_cores_busy": med([t["resources"]["other_cores_busy"] for t in trials]),
        "peak_rss_mb": max((t["resources"]["peak_rss_mb"] or 0 for t in trials), default=None),
        "unmasker_rss_mb": summarize([t["resources"]["unmasker_rss_mb"] for t in trials])["median"],
        "gpu_mem_peak_mb": max((t["resources"]["gpu_mem_peak_mb"] for t in trials
                                if t["resources"]["gpu_mem_peak_mb"] is not None), default=None),
        "mean_faces": med([t["mean_faces"] for t in trials]),
        "frames": [t["frames"] for t in trials],
        "frames_given": [t["frames_given"] for t in trials],
        "trials": trials,
    }
    if "dropped_pct" in trials[0]:
        agg["dropped_pct"] = summarize([t["dropped_pct"] for t in trials])
        agg["frames_published"] = sum(t["frames_published"] for t in trials)
        agg["frames_dropped"] = sum(t["frames_dropped"] for t in trials)
    return agg


def run_config(runner: Runner, clip: ClipSpec, setup: Setup, args, frames: int, quiet: bool,
               backend_used: str | None = None) -> dict:
    engines = ["live"] if clip.live else ["floor", "pipelined", "sequential"] + (["live"] if args.live else [])
    trials = {e: [] for e in engines}
    tag = f"{clip.label} · {setup.method}" + (f" · {backend_used or setup.backend}" if setup.method == "model" else "")
    for r in range(args.repeats):
        order = engines[r % len(engines):] + engines[:r % len(engines)]   # rotate: no engine always first
        for e in order:
            t = getattr(runner, e)(clip, setup, frames)
            trials[e].append(t)
            extra = (f", p95 latency {fmt(t['latency_ms']['p95'])} ms, {fmt(t.get('dropped_pct'))} % dropped"
                     if e == "live" else "")
            log(f"  {tag} · {e} {r + 1}/{args.repeats}: {fmt(t['fps'])} FPS{extra}", quiet)
    engines_out = {e: _aggregate(ts) for e, ts in trials.items()}
    pip, seq = engines_out.get("pipelined"), engines_out.get("sequential")
    speedup = ratio(pip["fps"]["median"], seq["fps"]["median"]) if pip and seq else None
    per_repeat = [ratio(a["fps"], b["fps"]) for a, b in zip(trials.get("pipelined", []),
                                                            trials.get("sequential", []))]
    floor = engines_out.get("floor")
    x_floor = ratio(pip["fps"]["median"], floor["fps"]["median"]) if pip and floor else None
    return {"engines": engines_out, "speedup": speedup, "speedup_per_repeat": summarize(per_repeat),
            "x_floor": x_floor}


# -------------------------------------------------------------------------------------- outputs

def _key(clip: ClipSpec, setup: Setup, backend_used: str | None, source_info: dict) -> dict:
    w, h = source_info.get("width"), source_info.get("height")
    return {"source": clip.label if not clip.generated else "generated",
            "resolution": f"{w}x{h}" if w and h else None,
            "faces": clip.faces if clip.generated else None,
            "method": setup.method, "backend": backend_used or setup.backend,
            "device": setup.device or "default",
            # Only when asked for: earlier results (the default cadence) keep their keys for --compare.
            **({"full_rate_faces": setup.full_rate_faces} if setup.full_rate_faces != DEFAULT_CADENCE else {})}


def _rows(configs: list[dict]) -> list[dict]:
    rows = []
    for c in configs:
        if c["status"] != "ok":
            continue
        e = c["engines"]
        m = {}
        if "pipelined" in e:
            m["pipelined_fps"] = e["pipelined"]["fps"]["median"]
            m["sequential_fps"] = e["sequential"]["fps"]["median"]
            m["speedup"] = c["speedup"]
        if "floor" in e:
            m["floor_fps"] = e["floor"]["fps"]["median"]
            m["x_floor"] = c.get("x_floor")
            m["pipelined_cpu_pct"] = e["pipelined"]["cpu_pct"]["median"]
            m["pipelined_peak_rss_mb"] = e["pipelined"]["peak_rss_mb"]
        if "live" in e:
            m["live_fps"] = e["live"]["fps"]["median"]
            m["live_p50_ms"] = e["live"]["latency_ms"]["p50"]
            m["live_p95_ms"] = e["live"]["latency_ms"]["p95"]
            m["live_p99_ms"] = e["live"]["latency_ms"]["p99"]
            m["live_dropped_pct"] = e["live"]["dropped_pct"]["median"]
        rows.append({"key": c["key"], "metrics": m})
    return rows


def _method_comparison(configs: list[dict]) -> list[dict]:
    out = []
    ok = [c for c in configs if c["status"] == "ok" and "pipelined" in c["engines"]]
    for c in ok:
        if c["key"]["method"] != "model":
            continue
        for d in ok:
            same = all(d["key"][k] == c["key"][k] for k in ("source", "resolution", "faces"))
            if same and d["key"]["method"] == "classical":
                mf, cf = c["engines"]["pipelined"]["fps"]["median"], d["engines"]["pipelined"]["fps"]["median"]
                out.append({"source": c["key"]["source"], "resolution": c["key"]["resolution"],
                            "faces": c["key"]["faces"], "backend": c["key"]["backend"],
                            "model_fps": mf, "classical_fps": cf, "model_over_classical": ratio(mf, cf)})
    return out


def _label(c: dict) -> str:
    k = c["key"]
    src = k["source"] if k["source"] != "generated" else k["resolution"]
    faces = f" {k['faces']}f" if k["faces"] else ""
    be = f"/{k['backend']}" if k["method"] == "model" else ""
    cadence = f" full-rate {k['full_rate_faces']}" if "full_rate_faces" in k else ""
    return f"{src}{faces} {k['method']}{be}{cadence}"


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# Unmask FPS benchmark — {result['created']}", "",
             f"Machine: {report.machine_line(result['machine'])}", "",
             f"Settings: {s['frames']} measured frames after {s['warmup']} warm-up frames, "
             f"{s['repeats']} repeat(s), sink {s['sink']}; values are medians over repeats "
             f"(min–max in brackets).", ""]
    ok = [c for c in result["configs"] if c["status"] == "ok"]
    rows = []
    for c in ok:
        e = c["engines"]
        pip, seq, live, floor = e.get("pipelined"), e.get("sequential"), e.get("live"), e.get("floor")
        lat = (f"{fmt(live['latency_ms']['p50'], 0)} / {fmt(live['latency_ms']['p95'], 0)} / "
               f"{fmt(live['latency_ms']['p99'], 0)}") if live else "–"
        main = pip or live
        rows.append([
            c["key"]["source"] if c["key"]["source"] != "generated" else "generated",
            c["key"]["resolution"] or "–", c["key"]["faces"] or "–",
            c["key"]["method"], c["key"]["backend"],
            fmt_spread(floor["fps"]) if floor else "–",
            fmt_spread(pip["fps"]) if pip else "–", f"{c['x_floor']:.2f}×" if c.get("x_floor") else "–",
            fmt_spread(seq["fps"]) if seq else "–",
            f"{c['speedup']:.2f}×" if c.get("speedup") else "–",
            lat, fmt(live["dropped_pct"]["median"], 0, " %") if live else "–",
            fmt(main["cpu_pct"]["median"], 0), fmt(main["peak_rss_mb"], 0), fmt(main["unmasker_rss_mb"], 0),
            fmt(main["gpu_mem_peak_mb"], 0) if main["gpu_mem_peak_mb"] is not None else "–",
            fmt(main["mean_faces"], 2) + (f" / {c['key']['faces']}" if c["key"]["faces"] else ""),
        ])
    lines.append(md_table(["source", "resolution", "faces", "method", "backend", "floor FPS", "pipelined FPS",
                           "× floor", "sequential FPS", "speedup", "live latency p50/p95/p99 ms", "live dropped",
                           "CPU %", "peak RSS MB", "RSS Δ MB", "GPU MB", "faces found"], rows,
                          ["l", "l", "r", "l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r"]))
    lines += ["", "Floor = the same pipeline, source and sink with nothing in between (decode -> encode of the "
              "same frames) in the same run; × floor = pipelined FPS / floor FPS (a 30 FPS target at a 50 FPS "
              "floor is 0.6×). Speedup = pipelined FPS / sequential FPS on the same frames. CPU % = process CPU time / "
              "wall time of the pipelined run (100 = one core). Peak RSS: the whole process (it includes what earlier "
              "configurations left behind); RSS Δ: peak of the run minus the process's memory before its Unmasker "
              "was created. Live: the clip played at its frame rate "
              "through the pipeline's live mode; latency from capture to the written output frame.", ""]
    srows = []
    for c in ok:
        for name, e in c["engines"].items():
            st = e["stages"]
            per_frame = 1000.0 / e["fps"]["median"] if e["fps"]["median"] else None
            srows.append([_label(c), name] + [fmt(st[s]["mean_ms"]) for s in STAGES] +
                         [fmt(e["stage_sum_ms"]), fmt(e["frame_time_ms"]), fmt(per_frame)])
    if srows:
        lines += ["## Stage times (mean ms per frame)", "",
                  md_table(["configuration", "engine"] + list(STAGES) + ["sum", "frame time", "1000/FPS"],
                           srows, ["l", "l"] + ["r"] * (len(STAGES) + 3)),
                  "", "frame time: decode start to output of one frame (its latency through the system; offline, it includes "
                  "waiting in the pipeline's queues); "
                  "1000/FPS: the interval between output frames. Pipelining overlaps stages, so 1000/FPS "
                  "falls below the sum. Live decode is done by the pacing source ahead of capture.", ""]
    if result.get("method_comparison"):
        lines += ["## Models vs classical baseline (pipelined FPS)", "",
                  md_table(["source", "resolution", "faces", "backend", "model FPS", "classical FPS", "model/classical"],
                           [[m["source"], m["resolution"], m["faces"] or "–", m["backend"], fmt(m["model_fps"]),
                             fmt(m["classical_fps"]), f"{m['model_over_classical']:.2f}×"
                             if m["model_over_classical"] else "–"] for m in result["method_comparison"]]), ""]
    bad = [c for c in result["configs"] if c["status"] != "ok"]
    lines += report.markdown_tail(result, [f"{_label(c)}: {c['status']}: {c['reason']}" for c in bad])
    return "\n".join(lines)


def plots(result: dict, out_dir: Path) -> tuple[list[str], list[str]]:
    plt = report.pyplot()
    if plt is None:
        return [], [report.PLOTS_MISSING]
    import numpy as np
    ok = [c for c in result["configs"] if c["status"] == "ok"]
    files, notes = [], []
    if not ok:
        return files, notes
    # 1. FPS per configuration (and vs resolution / faces for generated sweeps).
    sweep = [c for c in ok if c["key"]["source"] == "generated" and "pipelined" in c["engines"]]
    res_set = {c["key"]["resolution"] for c in sweep}
    face_set = {c["key"]["faces"] for c in sweep}
    ncols = 2 if (len(res_set) > 1 or len(face_set) > 1) else 1
    fig, axes = plt.subplots(1, ncols, figsize=(7 * ncols, 4.2), squeeze=False)
    ax = axes[0][0]
    # Live output is capped by the pacing rate, so it is a throughput only for live-only sources.
    series = [e for e in ("pipelined", "sequential") if any(e in c["engines"] for c in ok)] or ["live"]
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(ok))
    for j, e in enumerate(series):
        med = [c["engines"][e]["fps"]["median"] if e in c["engines"] else 0 for c in ok]
        lo = [m - (c["engines"][e]["fps"]["min"] if e in c["engines"] else 0) for m, c in zip(med, ok)]
        hi = [(c["engines"][e]["fps"]["max"] if e in c["engines"] else 0) - m for m, c in zip(med, ok)]
        ax.bar(x + (j - (len(series) - 1) / 2) * width, med, width, yerr=[lo, hi], capsize=3, label=e)
    ax.set_xticks(x, [_label(c) for c in ok], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("frames / s (median, min–max)")
    ax.set_title("Throughput")
    ax.legend(fontsize=8)
    if ncols == 2:
        ax = axes[0][1]
        groups = sorted({(c["key"]["faces"], c["key"]["method"], c["key"]["backend"]) for c in sweep},
                        key=lambda g: (g[0] or 0, g[1], g[2]))
        for g in groups:
            cs = sorted([c for c in sweep if (c["key"]["faces"], c["key"]["method"], c["key"]["backend"]) == g],
                        key=lambda c: _pixels(c["key"]["resolution"]))
            xs = [_pixels(c["key"]["resolution"]) / 1e6 for c in cs]
            ax.plot(xs, [c["engines"]["pipelined"]["fps"]["median"] for c in cs], marker="o",
                    label=f"{g[0]} face(s) {g[1]}" + (f"/{g[2]}" if g[1] == "model" else ""))
            for xv, c in zip(xs, cs):
                ax.annotate(c["key"]["resolution"], (xv, c["engines"]["pipelined"]["fps"]["median"]),
                            fontsize=6, textcoords="offset points", xytext=(2, 3))
        ax.set_xscale("log")
        ax.set_xlabel("megapixels per frame")
        ax.set_ylabel("pipelined frames / s")
        ax.set_title("FPS vs resolution and faces")
        ax.legend(fontsize=8)
    files.append(str(report.save_figure(fig, out_dir / "fps.png")))
    # 2. Stage breakdown.
    bars = [(f"{_label(c)} · {name}", e) for c in ok for name, e in c["engines"].items()]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(bars) + 1.6))
    left = np.zeros(len(bars))
    y = np.arange(len(bars))
    for s in STAGES:
        vals = np.array([e["stages"][s]["mean_ms"] or 0.0 for _, e in bars])
        ax.barh(y, vals, left=left, label=s)
        left += vals
    per_frame = [1000.0 / e["fps"]["median"] if e["fps"]["median"] else np.nan for _, e in bars]
    ax.scatter(per_frame, y, marker="|", s=300, color="black", zorder=3, label="1000 / FPS")
    ax.set_yticks(y, [b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean ms per frame")
    ax.set_title("Stage breakdown")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    files.append(str(report.save_figure(fig, out_dir / "stages.png")))
    # 3. Live latency: histograms (few configurations) or box plots (many).
    live = [(c, [v for t in c["engines"]["live"]["trials"] for v in t["latencies_ms"]])
            for c in ok if "live" in c["engines"]]
    live = [(c, lat) for c, lat in live if lat]
    if live:
        fig, ax = plt.subplots(figsize=(9, 4 if len(live) <= 4 else 0.4 * len(live) + 1.6))
        if len(live) <= 4:
            for i, (c, lat) in enumerate(live):
                colour = f"C{i % 10}"
                ax.hist(lat, bins=40, histtype="step", color=colour, label=_label(c))
                for q, ls in ((50, "-"), (95, "--"), (99, ":")):
                    ax.axvline(report.percentile(lat, q), color=colour, linestyle=ls, linewidth=1)
            ax.set_xlabel("capture → output latency, ms, all repeats pooled (lines: p50 solid, p95 dashed, p99 dotted)")
            ax.set_ylabel("frames")
            ax.legend(fontsize=8)
        else:
            ax.boxplot([lat for _, lat in live], vert=False, whis=(1, 99), showfliers=True,
                       tick_labels=[_label(c) for c, _ in live])
            ax.invert_yaxis()
            ax.tick_params(axis="y", labelsize=8)
            ax.set_xlabel("capture → output latency, ms (box: quartiles, whiskers: p1–p99)")
        ax.set_title("Live-mode latency")
        files.append(str(report.save_figure(fig, out_dir / "latency.png")))
    return files, notes


def _pixels(res: str | None) -> int:
    if not res:
        return 0
    w, h = res.split("x")
    return int(w) * int(h)


# ----------------------------------------------------------------------------------------- main

def _source_info(clip: ClipSpec) -> dict:
    if clip.live:
        return {"path": clip.path, "live": True}
    from stream.sources import open_source
    src = open_source(clip.path)
    try:
        i = src.info
        return {"path": clip.path, "width": i.width, "height": i.height, "fps": i.fps,
                "frame_count": i.frame_count, "generated": clip.generated, "faces_drawn": clip.faces,
                "live": False}
    finally:
        src.close()


def _run(args, argv) -> int:
    if args.streams:
        from benchmarks.streams import run_streams
        return run_streams(args, argv)
    quiet = args.quiet
    report.check_device(args.device)
    report.check_out_dir(args.out, args.overwrite)   # refuse early, before any clip is generated
    report.quiet_native_logs(args.verbose)
    from stream.unmasker import models_available
    setups, notes = resolve_setups(args, models_available())
    clips = resolve_clips(args, lambda m: log(m, quiet))
    infos = [_source_info(clip) for clip in clips]   # unreadable input fails before any folder is made
    out_dir = report.prepare_out_dir(args.out, args.overwrite)
    machine = report.machine_info()
    runner = Runner(args, out_dir, machine)
    configs = []
    log(f"{PROG}: {len(clips)} clip(s) x {len(setups)} setup(s), {args.repeats} repeat(s) of "
        f"{args.frames} frames after {args.warmup} warm-up; results in {out_dir}", quiet)
    try:
        for clip, info in zip(clips, infos):
            frames = args.frames
            if not clip.live and info.get("frame_count") and info["frame_count"] < args.warmup + frames:
                frames = info["frame_count"] - args.warmup
                if frames < 1:
                    raise BenchError(f"{clip.path} has {info['frame_count']} frames: fewer than --warmup "
                                     f"{args.warmup} + 1")
                notes.append(f"{clip.label} has {info['frame_count']} frames: measured {frames} per trial "
                             f"(not {args.frames}) after {args.warmup} warm-up frames")
            if clip.live:
                notes.append(f"{clip.label} is a live source: only live mode is measured (frames differ "
                             f"between runs, so there is no pipelined/sequential comparison); its decode column is the wait "
                             f"for the camera's next frame plus conversion")
            for setup in setups:
                setup = Setup(setup.method, setup.backend, setup.device, setup.threads,
                              args.max_faces or clip.faces or 1, setup.full_rate_faces)
                entry = {"key": None, "status": "ok", "reason": None, "source": info,
                         "setup": setup.__dict__.copy()}
                try:
                    probe = runner.unmasker(setup)
                    backend_used = probe.backend
                    probe.close()
                    entry["key"] = _key(clip, setup, backend_used, info)
                    entry["backend_used"] = backend_used
                    log(f"{_label(entry)}:", quiet)
                    entry.update(run_config(runner, clip, setup, args, frames, quiet, backend_used))
                except BenchError:
                    raise
                except Exception as exc:  # noqa: BLE001 - recorded; the other configurations still run
                    import os
                    from stream.errors import ModelError
                    if os.environ.get("UNMASK_BENCH_DEBUG"):
                        raise
                    entry["key"] = entry["key"] or _key(clip, setup, None, info)
                    entry["status"] = "skipped" if isinstance(exc, ModelError) else "failed"
                    entry["reason"] = " ".join(str(exc).split()) or type(exc).__name__
                    if entry["status"] == "failed":
                        entry["reason"] = f"{type(exc).__name__}: {entry['reason']}"
                    log(f"{_label(entry)}: {entry['status']}: {entry['reason']}", quiet)
                configs.append(entry)
    finally:
        shutil.rmtree(out_dir / ".tmp", ignore_errors=True)

    for c in configs:
        if c["status"] == "ok" and c["key"]["faces"]:
            found = max(e["mean_faces"] or 0 for e in c["engines"].values())
            if found < 0.9 * c["key"]["faces"]:
                notes.append(f"{_label(c)}: the tracker found {found:.2f} of the {c['key']['faces']} masked faces "
                             f"per frame on average, so its FPS is for that many faces (mediapipe's detectors "
                             f"miss most masked faces when several share a frame)")
    busy = [c["engines"][e]["other_cores_busy"] for c in configs if c["status"] == "ok"
            for e in c["engines"] if c["engines"][e]["other_cores_busy"] is not None]
    if busy and max(busy) > 0.5:
        notes.append(f"other processes kept up to {max(busy):.1f} CPU cores busy during the runs: "
                     f"numbers are noisier and lower than on an idle machine")
    result = {
        **report.result_header("fps", PROG, argv),
        "settings": {"frames": args.frames, "warmup": args.warmup, "repeats": args.repeats, "sink": args.sink,
                     "live": args.live, "live_fps": args.live_fps, "methods": args.method,
                     "backends": args.backend, "device": args.device, "threads": args.threads,
                     "full_rate_faces": args.full_rate_faces},
        "machine": machine, "configs": configs, "notes": notes, "files": {},
    }
    result["speedup"] = {_label(c): c["speedup"] for c in configs if c["status"] == "ok" and c.get("speedup")}
    result["method_comparison"] = _method_comparison(configs)
    result["rows"] = _rows(configs)
    report.write_results(result, out_dir, markdown, None if args.no_plots else plots, json_path=args.json)
    files = result["files"]["plots"]
    log(f"wrote {out_dir / 'fps.json'}, {out_dir / 'fps.md'}" + (f" and {len(files)} plot(s)" if files else ""),
        quiet)
    if not any(c["status"] == "ok" for c in configs):
        raise BenchError("no configuration could be measured (see the notes above)", 1)
    return 1 if any(c["status"] == "failed" for c in configs) else 0


def main(argv=None) -> int:
    return report.run_main(PROG, argv, build_parser, _run)


if __name__ == "__main__":
    sys.exit(main())
