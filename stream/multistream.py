"""Several streams in one process, with the faces of all of them batched into each model call.

    run_stream.py --source cam1.mp4 --source rtsp://cam2/stream --output out/     # or --source cams.streams

Every stream is a `stream.pipeline.Pipeline` of its own (one capture thread, one tracking thread with
that stream's tracker and smoothing state, one output thread; live streams drop their own oldest
frames, offline streams stay lossless), so a stalled, slow or dead stream only ever holds up itself.
What they share is ONE inference stage, `SharedBatcher`: a thread owning the only analyser and
inpainter runners of the process. The streams' unmaskers submit their faces to it through
`BatchedRunner`s; it merges the requests that are waiting into one model call and hands each stream
its rows back. It calls the model as soon as every stream that is busy with a frame is waiting on it,
or after `max_wait_ms` at most, so no stream's latency grows by more than that bound.

A `.streams` file lists one source a line; `#` starts a comment (the convention of ultralytics).
"""
from __future__ import annotations

import collections
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.base import Runner
from stream.errors import SourceError, redact_url
from stream.pipeline import Mode, Pipeline
from stream.analyser import ModelAnalyser
from stream.compositing import CpuCompositor
from stream.reconstruct import GenerativeReconstructor
from stream.unmasker import Unmasker

STREAM_LIST_SUFFIX = ".streams"
DEFAULT_MAX_WAIT_MS = 4.0
DEFAULT_MAX_BATCH = 32
_POLL_S = 0.05


# -- naming the streams ------------------------------------------------------------------------------

def read_stream_list(path: str | Path) -> list[str]:
    """The sources of a `.streams` file: one a line, blank lines and `#` comments skipped."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SourceError(f"cannot read the stream list {p}: {e.strerror or e}") from None
    sources = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            sources.append(line)
    if not sources:
        raise SourceError(f"the stream list {p} names no source")
    return sources


def expand_sources(specs: list[str]) -> list[str]:
    """`--source` values with every `.streams` file replaced by the sources it lists."""
    out = []
    for s in specs:
        out.extend(read_stream_list(s) if str(s).endswith(STREAM_LIST_SUFFIX) else [s])
    return out


def stream_name(spec: str) -> str:
    """A file-name-safe name for a source: a file's stem, a folder's name, a URL's host and last path
    part (never its user name or password), webcams as webcamN."""
    s = str(spec).strip()
    if re.fullmatch(r"\d+", s):
        name = f"webcam{s}"
    elif re.fullmatch(r"/dev/video\d+", s):
        name = "webcam" + s[len("/dev/video"):]
    elif "://" in s:
        from urllib.parse import urlsplit
        parts = urlsplit(s)
        last = [p for p in parts.path.split("/") if p]
        name = "_".join([parts.hostname or "stream"] + last[-1:])
    else:
        p = Path(s.rstrip("/"))
        name = p.stem if p.suffix else p.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "stream"


def output_paths(folder: str | Path, specs: list[str], suffix: str = ".mp4") -> list[Path]:
    """`<folder>/<n>_<name>.mp4` for stream n (0-based, so two streams of one name stay apart)."""
    return [Path(folder) / f"{n}_{stream_name(s)}{suffix}" for n, s in enumerate(specs)]


# -- the shared inference stage ---------------------------------------------------------------------

@dataclass
class _Request:
    client: int
    inputs: dict
    rows: int
    future: Future = field(default_factory=Future)


class SharedBatcher:
    """The one inference stage of a multi-stream process: merges the streams' requests per model.

    `runners`: model name -> a Runner (created by `make_runners` inside the batcher's thread, as runners
    are not thread-safe). Clients `register()`, mark themselves busy while they process a frame, and
    call `submit(client, model, inputs)`, which blocks until their rows come back.
    """

    def __init__(self, make_runners, max_wait_ms: float = DEFAULT_MAX_WAIT_MS, max_batch: int = DEFAULT_MAX_BATCH):
        self.make_runners = make_runners
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: dict[str, list[_Request]] = collections.defaultdict(list)
        self._busy: set[int] = set()
        self._waiting: set[int] = set()
        self._clients = 0
        self._next_client = 0
        self._stop = False
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self.runners: dict[str, Runner] = {}
        self.batch_sizes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.requests_per_call: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self._thread = threading.Thread(target=self._loop, name="shared-inference", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> SharedBatcher:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(10)

    def specs(self, model: str):
        r = self.runners[model]
        return r.input_specs, r.output_specs

    # -- clients -------------------------------------------------------------------------------------
    def register(self) -> int:
        with self._cond:
            cid = self._next_client
            self._next_client += 1
            self._clients += 1
            return cid

    def unregister(self, client: int) -> None:
        with self._cond:
            self._clients -= 1
            self._busy.discard(client)
            self._cond.notify_all()

    def set_busy(self, client: int, busy: bool) -> None:
        with self._cond:
            (self._busy.add if busy else self._busy.discard)(client)
            self._cond.notify_all()

    def submit(self, client: int, model: str, inputs: dict) -> dict:
        rows = len(next(iter(inputs.values())))
        req = _Request(client, inputs, rows)
        with self._cond:
            if self._stop:
                raise RuntimeError("the shared inference stage is closed")
            self._pending[model].append(req)
            self._waiting.add(client)
            self._cond.notify_all()
        try:
            return req.future.result()
        finally:
            with self._cond:
                self._waiting.discard(client)

    # -- the stage -------------------------------------------------------------------------------------
    def _everyone_waits(self) -> bool:
        return self._busy <= self._waiting

    def _loop(self) -> None:
        try:
            self.runners = self.make_runners()
        except BaseException as exc:  # noqa: BLE001 - raised by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                with self._cond:
                    while not self._stop and not any(self._pending.values()):
                        self._cond.wait(_POLL_S)
                    if self._stop and not any(self._pending.values()):
                        return
                    deadline = time.monotonic() + self.max_wait_s
                    # Bounded wait for the streams still tracking their frame.
                    while not self._stop and not self._everyone_waits() and \
                            sum(r.rows for q in self._pending.values() for r in q) < self.max_batch:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    work = {m: q for m, q in self._pending.items() if q}
                    self._pending = collections.defaultdict(list)
                    for q in work.values():     # answered now: no longer counted as waiting
                        for r in q:
                            self._waiting.discard(r.client)
                for model, requests in work.items():
                    self._run(model, requests)
        finally:
            with self._cond:     # nobody waits forever on a stage that has ended
                self._stop = True
                left = [r for q in self._pending.values() for r in q]
                self._pending = collections.defaultdict(list)
            for r in left:
                r.future.set_exception(RuntimeError("the shared inference stage stopped"))
            for r in self.runners.values():
                r.close()

    def _run(self, model: str, requests: list[_Request]) -> None:
        runner = self.runners[model]
        try:
            feed = {s.name: np.concatenate([r.inputs[s.name] for r in requests]) if len(requests) > 1
                    else requests[0].inputs[s.name] for s in runner.input_specs}
            out = runner.run(feed)
        except BaseException as exc:  # noqa: BLE001 - every stream of this call sees it (e.g. server gone)
            for r in requests:
                r.future.set_exception(exc)
            return
        total = sum(r.rows for r in requests)
        self.batch_sizes[model][total] += 1
        self.requests_per_call[model][len(requests)] += 1
        start = 0
        for r in requests:
            r.future.set_result({k: v[start:start + r.rows] for k, v in out.items()})
            start += r.rows

    def summary(self) -> dict:
        out = {}
        for model, sizes in self.batch_sizes.items():
            calls = sum(sizes.values())
            reqs = self.requests_per_call[model]
            out[model] = {"calls": calls, "faces": sum(k * v for k, v in sizes.items()),
                          "mean_faces_per_call": sum(k * v for k, v in sizes.items()) / calls if calls else 0.0,
                          "mean_streams_per_call": sum(k * v for k, v in reqs.items()) / calls if calls else 0.0,
                          "faces_per_call": {str(k): v for k, v in sorted(sizes.items())},
                          "streams_per_call": {str(k): v for k, v in sorted(reqs.items())}}
        return out


class BatchedRunner(Runner):
    """A stream's view of one model of the SharedBatcher: the Runner interface, rows merged with others."""

    def __init__(self, batcher: SharedBatcher, client: int, model: str):
        self.batcher, self.client, self.model = batcher, client, model
        inner = batcher.runners[model]
        self.input_specs, self.output_specs = inner.input_specs, inner.output_specs
        self.name, self.device, self.precision = inner.name, inner.device, inner.precision
        self.model_path = inner.model_path

    def run(self, inputs):
        n = self.check_inputs(inputs)
        if n == 0:
            return self.empty_outputs()
        return self.batcher.submit(self.client, self.model, inputs)

    def close(self) -> None:   # the real runner belongs to the batcher, which closes it
        pass


class StreamUnmasker(Unmasker):
    """One stream's Unmasker (its own tracker, smoothing and track state) whose model calls go through
    the shared batcher. `close()` leaves the batcher (the stream ended)."""

    def __init__(self, batcher: SharedBatcher, preset: str = "fast", **kwargs):
        from models.colour import ColourCorrection
        from models.spec import INPAINTER_PRESETS
        self.batcher = batcher
        self.client = batcher.register()
        # The CPU stages, with their two runners served by the SharedBatcher (which owns and closes them).
        analyser = ModelAnalyser(BatchedRunner(batcher, self.client, "analyser"))
        reconstructor = GenerativeReconstructor(BatchedRunner(batcher, self.client, f"inpainter_{preset}"),
                                                INPAINTER_PRESETS[preset]["size"],
                                                ColourCorrection.for_inpainter(f"inpainter_{preset}"))
        super().__init__(preset=preset, analyser=analyser, compositor=CpuCompositor(reconstructor), **kwargs)

    def finish_frame(self, frame):
        # The model calls happen here (process() comes through here too): while this stream is in
        # them, the batcher waits for its requests before it runs a batch.
        self.batcher.set_busy(self.client, True)
        try:
            return super().finish_frame(frame)
        finally:
            self.batcher.set_busy(self.client, False)

    def close(self):
        if self.client is not None:
            self.batcher.unregister(self.client)
            self.client = None
        super().close()


def make_runners(backend: str = "auto", device: str | None = None, threads: int | None = None,
                 preset: str = "fast", triton_url: str | None = None) -> dict[str, Runner]:
    """The runners the shared stage owns, opened as ModelReconstructor opens its own."""
    from engines import create_runner
    kw = dict(backend=backend, device=device, threads=threads, precision="auto")
    if backend == "triton":
        kw["triton_url"] = triton_url
    return {name: create_runner(name, **kw) for name in ("analyser", f"inpainter_{preset}")}


# -- running several pipelines ---------------------------------------------------------------------

@dataclass
class StreamResult:
    source: str                       # redacted
    outputs: list[str]
    stats: object = None              # PipelineStats
    error: str | None = None          # why this stream failed (the others went on)
    latencies_ms: list = field(default_factory=list)


class MultiStream:
    """Run one Pipeline per source (each in its own threads) around one SharedBatcher.

    `streams`: a list of (source, sinks, make_unmasker, output_names) with `make_unmasker()` returning
    that stream's unmasker (a StreamUnmasker, possibly wrapped). A stream whose pipeline fails is
    reported in its StreamResult; the others run to their end.
    """

    def __init__(self, streams, *, mode: Mode | None = None, max_frames: int | None = None,
                 duration_s: float | None = None, on_frame=None):
        self.results: list[StreamResult] = []
        self.pipelines: list[Pipeline] = []
        for n, (source, sinks, make_unmasker, output_names) in enumerate(streams):
            res = StreamResult(redact_url(source.info.description), [redact_url(str(o)) for o in output_names])
            self.results.append(res)

            def record(frame, result, _res=res, _n=n):
                _res.latencies_ms.append((time.monotonic() - frame.capture_time) * 1e3)
                if on_frame is not None:
                    on_frame(_n, frame, result)

            self.pipelines.append(Pipeline(source, sinks, make_unmasker, mode=mode, max_frames=max_frames,
                                           duration_s=duration_s, on_frame=record))
        self.duration_s = 0.0

    def stop(self, reason: str = "stopped") -> None:
        for p in self.pipelines:
            p.stop(reason)

    def run(self) -> list[StreamResult]:
        t0 = time.monotonic()
        done = [threading.Event() for _ in self.pipelines]

        def body(i):
            try:
                self.results[i].stats = self.pipelines[i].run()
            except BaseException as exc:  # noqa: BLE001 - this stream failed; the others go on
                self.results[i].stats = getattr(exc, "pipeline_stats", None)
                self.results[i].error = redact_url(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))
            finally:
                done[i].set()

        threads = [threading.Thread(target=body, args=(i,), name=f"stream-{i}", daemon=True)
                   for i in range(len(self.pipelines))]
        for t in threads:
            t.start()
        try:
            while not all(e.is_set() for e in done):
                done[[e.is_set() for e in done].index(False)].wait(_POLL_S)
        except KeyboardInterrupt:
            self.stop("interrupted")
            for e in done:
                while not e.wait(_POLL_S):
                    pass
            raise
        finally:
            self.duration_s = time.monotonic() - t0
        return self.results

    def stats_dict(self, batcher: SharedBatcher | None = None) -> dict:
        """`streams` (one entry per source with the fields a single run reports) and `aggregate`."""
        streams = []
        for r in self.results:
            d = r.stats.as_dict() if r.stats is not None else {}
            d.update(source=r.source, outputs=r.outputs, error=r.error)
            streams.append(d)
        lat = [x for r in self.results for x in r.latencies_ms]
        done = [r.stats for r in self.results if r.stats is not None]
        frames_out = sum(s.frames_out for s in done)
        agg = {"streams": len(self.results), "failed_streams": sum(r.error is not None for r in self.results),
               "frames_in": sum(s.frames_in for s in done), "frames_out": frames_out,
               "frames_dropped": sum(s.frames_dropped for s in done),
               "corrupt_frames": sum(s.corrupt_frames for s in done),
               "reconnects": sum(s.reconnects for s in done), "masked_faces": sum(s.masked_faces for s in done),
               "duration_s": self.duration_s, "fps": frames_out / self.duration_s if self.duration_s > 0 else 0.0,
               "latency_ms": {k: float(np.percentile(lat, q)) for k, q in (("p50", 50), ("p95", 95), ("p99", 99))}
               if lat else {},
               "per_stream_latency_p95_ms": [float(np.percentile(r.latencies_ms, 95)) if r.latencies_ms else None
                                             for r in self.results]}
        out = {"streams": streams, "aggregate": agg}
        if batcher is not None:
            out["batching"] = batcher.summary()
        return out
