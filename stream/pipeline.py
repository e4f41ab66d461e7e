"""The threaded capture -> inference -> output pipeline.

Threads joined by bounded queues:

    capture (source.read) --q_in--> inference (Unmasker.process) --q_out--> output (sinks)

With an Unmasker that `tracks_ahead` (the CPU path), the inference is two threads, so the face
tracker of frame n+1 runs while the models of frame n do (on two cores the single inference
thread was the bottleneck; mediapipe, ONNX Runtime and OpenCV release the GIL):

    capture --q_in--> tracking (Unmasker.track_frame) --q_tracked--> inference (finish_frame) --q_out--> output

Modes:

* ``LIVE`` (webcams, URLs): latency must never grow. Both queues hold at most
  one or two items and *drop the oldest* when full; every drop is counted.
* ``OFFLINE`` (files, folders, images): lossless and ordered. Queues block
  (back-pressure) instead of dropping; every input frame yields exactly one
  output frame with its own timestamp.

Shutdown is cooperative: end of stream, `stop()` (Ctrl-C, `q`/Esc in the
preview), `max_frames` / `duration_s`, or an exception in any thread sets one
event; every blocking call waits with a short timeout so each thread notices
it, sinks are closed (files finalised) and `run()` returns the statistics or
re-raises the first error.
"""
from __future__ import annotations

import collections
import enum
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable


from stream.frame import Frame
from stream.running_stats import RunningStats
from stream.stages import DeferredImage

_END = object()   # end-of-stream marker passed down the queues
_POLL_S = 0.05


class Mode(enum.Enum):
    LIVE = "live"
    OFFLINE = "offline"


class DropOldestQueue:
    """A bounded queue whose put never blocks: when full, the oldest item is dropped."""

    def __init__(self, maxsize: int):
        self._items = collections.deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item, stop: threading.Event | None = None) -> bool:
        with self._cond:
            if item is not _END:
                while len(self._items) >= self._maxsize:
                    old = self._items.popleft()
                    if old is _END:          # never drop the end marker
                        self._items.appendleft(old)
                        break
                    self.dropped += 1
            self._items.append(item)
            self._cond.notify()
        return True

    def get(self, timeout: float):
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items), timeout):
                raise queue.Empty
            return self._items.popleft()

    def qsize(self) -> int:
        return len(self._items)


class BlockingQueue:
    """A bounded FIFO with back-pressure whose put gives up when the pipeline stops while it is full.

    `put` says whether the item went in: a producer whose put gave up stops producing, so what
    comes out of an interrupted offline run is a gap-free prefix of the input."""

    def __init__(self, maxsize: int):
        self._q = queue.Queue(maxsize)
        self.dropped = 0

    def put(self, item, stop: threading.Event | None = None) -> bool:
        while True:
            try:
                self._q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                if stop is not None and stop.is_set():
                    return False

    def get(self, timeout: float):
        return self._q.get(timeout=timeout)

    def qsize(self) -> int:
        return self._q.qsize()


@dataclass
class StageTimes:
    # Bounded per stage (RunningStats): a run of any length keeps the same memory.
    samples: dict[str, RunningStats] = field(default_factory=lambda: collections.defaultdict(RunningStats))

    def add(self, name: str, ms: float) -> None:
        self.samples[name].add(ms)

    def summary(self) -> dict[str, dict[str, float]]:
        return {k: {"mean_ms": v.mean, "p95_ms": v.percentile(95), "n": v.count}
                for k, v in self.samples.items() if v.count}


@dataclass
class PipelineStats:
    mode: str = ""
    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    corrupt_frames: int = 0
    reconnects: int = 0
    duration_s: float = 0.0
    fps: float = 0.0
    mean_faces: float = 0.0
    masked_faces: int = 0
    stopped_by: str = ""
    stages: dict = field(default_factory=dict)
    latency_ms: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Pipeline:
    STOP_GRACE_S = 5.0    # after a stop, how long threads get before the source is closed under them
    GIVE_UP_S = 20.0      # how long run() waits without progress for the outputs to be finalised

    def __init__(self, source, sinks: list, make_unmasker: Callable[[], object], *,
                 mode: Mode | None = None, max_frames: int | None = None,
                 duration_s: float | None = None, preview=None, progress: bool = False,
                 on_frame: Callable | None = None):
        self.source = source
        self.sinks = list(sinks)
        self.make_unmasker = make_unmasker
        self.mode = mode or (Mode.LIVE if source.info.live else Mode.OFFLINE)
        self.max_frames = max_frames
        self.duration_s = duration_s
        self.preview = preview
        self.progress = progress
        self.on_frame = on_frame
        live = self.mode is Mode.LIVE
        self.q_in = DropOldestQueue(1) if live else BlockingQueue(4)
        self.q_out = DropOldestQueue(2) if live else BlockingQueue(4)
        # Tracked frames waiting for the models (used when the unmasker tracks ahead): live, the
        # models take the newest; offline, back-pressure.
        self.q_tracked = DropOldestQueue(1) if live else BlockingQueue(2)
        self._stop = threading.Event()
        self._errors: list[tuple[str, BaseException]] = []
        self._stopped_by = ""
        self._times = StageTimes()
        self._latency = RunningStats()   # ms from capture to written output, per frame
        self._faces = RunningStats()     # faces per frame
        self._masked = 0
        self._frames_in = 0
        self._frames_out = 0
        self._latest = None            # (frame, image, overlay stats) for the preview
        self._sinks_closed = False
        self._unmasker_ready = threading.Event()
        self._last_progress = (None, time.monotonic())   # (progress marker, when it last changed)
        self._latest_lock = threading.Lock()

    # -- control -------------------------------------------------------------------
    def stop(self, reason: str = "stopped") -> None:
        if not self._stop.is_set():
            self._stopped_by = self._stopped_by or reason
        self._stop.set()

    def _fail(self, where: str, exc: BaseException) -> None:
        self._errors.append((where, exc))
        self.stop(f"error in {where}")

    # -- threads -------------------------------------------------------------------
    def _capture(self) -> None:
        first_ts = None
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and self._frames_in >= self.max_frames:
                    self._stopped_by = self._stopped_by or "max_frames"
                    break
                t = time.perf_counter()
                frame = self.source.read()
                if frame is None:
                    self._stopped_by = self._stopped_by or "end of stream"
                    break
                frame.stages["decode"] = (time.perf_counter() - t) * 1e3
                if self.duration_s is not None:
                    ts = frame.timestamp_s if self.mode is Mode.OFFLINE and frame.timestamp_s is not None \
                        else frame.capture_time
                    first_ts = ts if first_ts is None else first_ts
                    if ts - first_ts >= self.duration_s:
                        self._stopped_by = self._stopped_by or "duration"
                        break
                self._frames_in += 1
                if not self.q_in.put(frame, self._stop):
                    break
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self._fail("capture", exc)
        finally:
            self.q_in.put(_END, self._stop)

    def _frames_in_order(self):
        """The frames of q_in, each with its timestamp (ms, monotonic); stops at the end marker,
        an error, a stop, or when capture has finished and nothing is left."""
        last_ts = -1.0
        while True:
            try:
                item = self.q_in.get(_POLL_S)
            except queue.Empty:
                # Upstream finished (or died) and nothing is left: done.
                if self._stop.is_set() or (self._finished["capture"].is_set() and self.q_in.qsize() == 0):
                    return
                continue
            if item is _END or self._errors:
                # After an error nothing more can be written: leave the queued frames (and do not
                # start a model on them while the run is being torn down).
                return
            frame: Frame = item
            # Timestamps: the source's own for files (so results are
            # reproducible), the monotonic capture clock for live input.
            ts = frame.timestamp_s if self.mode is Mode.OFFLINE else None
            ts_ms = (ts * 1000.0) if ts is not None else frame.capture_time * 1000.0
            if ts_ms <= last_ts:       # repeated / missing pts: keep the clock monotonic
                ts_ms = last_ts + 1e-3
            last_ts = ts_ms
            yield frame, ts_ms

    def _tracking(self, unmasker) -> None:
        try:
            for frame, ts_ms in self._frames_in_order():
                if not self.q_tracked.put((frame, unmasker.track_frame(frame.image, timestamp_ms=ts_ms)), self._stop):
                    break
        except BaseException as exc:  # noqa: BLE001
            self._fail("tracking", exc)
        finally:
            self.q_tracked.put(_END, self._stop)

    def _tracked_frames(self):
        while True:
            try:
                item = self.q_tracked.get(_POLL_S)
            except queue.Empty:
                # After a stop the tracker still hands over the frames it had read (as the one-thread
                # path finishes what is queued): only its end, or an error, ends this side.
                if self._errors or (self._finished["tracking"].is_set() and self.q_tracked.qsize() == 0):
                    return
                continue
            if item is _END or self._errors:
                return
            yield item

    def _inference(self) -> None:
        try:
            unmasker = self.make_unmasker()
        except BaseException as exc:  # noqa: BLE001
            self._fail("inference", exc)
            self._finished["tracking"].set()
            return
        self._unmasker_ready.set()
        tracking = None
        if getattr(unmasker, "tracks_ahead", False):
            def body():
                try:
                    self._tracking(unmasker)
                finally:
                    self._finished["tracking"].set()
            tracking = threading.Thread(target=body, name="tracking", daemon=True)
            tracking.start()
        else:
            self._finished["tracking"].set()
        try:
            if tracking is not None:
                for frame, tracked in self._tracked_frames():
                    res = unmasker.finish_frame(tracked)
                    frame.stages.update(res.timings_ms)
                    if not self.q_out.put((frame, res), self._stop):
                        break
            else:
                for frame, ts_ms in self._frames_in_order():
                    res = unmasker.process(frame.image, timestamp_ms=ts_ms)
                    frame.stages.update(res.timings_ms)
                    if not self.q_out.put((frame, res), self._stop):
                        break
        except BaseException as exc:  # noqa: BLE001
            self._fail("inference", exc)
        finally:
            try:
                # The tracker must be done with the unmasker before it is closed (it is, after the
                # end marker; after an error the stop makes it finish its frame and leave).
                if tracking is not None and not self._finished["tracking"].wait(self.STOP_GRACE_S):
                    self.stop("inference ended")
                    self._finished["tracking"].wait(self.STOP_GRACE_S)
                # Closing native models (mediapipe's graph) under a thread still inside them
                # aborts the process; a tracker stuck past the grace keeps its models to the exit.
                if tracking is None or self._finished["tracking"].is_set():
                    unmasker.close()
            finally:
                self.q_out.put(_END, self._stop)

    def _output(self) -> None:
        bar = None
        try:
            for sink in self.sinks:
                sink.open(self.source.info)
            if self.progress:
                from tqdm import tqdm
                total = self.source.info.frame_count
                if self.max_frames is not None:
                    total = min(total or self.max_frames, self.max_frames)
                bar = tqdm(total=total, unit="frame", dynamic_ncols=True, leave=False)
            t_start = time.monotonic()
            while True:
                try:
                    item = self.q_out.get(_POLL_S)
                except queue.Empty:
                    if self._errors or (self._stop.is_set() and self.mode is Mode.LIVE):
                        break
                    if self._finished["inference"].is_set() and self.q_out.qsize() == 0:
                        break
                    continue
                if item is _END:
                    break
                frame, res = item
                t = time.perf_counter()
                if isinstance(res.image, DeferredImage):
                    # A GPU frame still downloading (stream.gpu.PendingFrame): inference is already
                    # on the next frame; wait for this copy only.
                    res.image = res.image.result()
                    frame.stages["download"] = (time.perf_counter() - t) * 1e3
                    t = time.perf_counter()
                for sink in self.sinks:
                    sink.write(frame, res.image)
                frame.stages["encode"] = (time.perf_counter() - t) * 1e3
                now = time.monotonic()
                self._latency.add((now - frame.capture_time) * 1e3)
                for k, v in frame.stages.items():
                    self._times.add(k, v)
                self._faces.add(len(res.faces))
                self._masked += sum(f.masked for f in res.faces)
                self._frames_out += 1
                if bar is not None:
                    bar.update(1)
                if self.on_frame is not None:
                    self.on_frame(frame, res)
                if self.preview is not None:
                    elapsed = max(now - t_start, 1e-6)
                    overlay = {"fps": self._frames_out / elapsed, "latency_ms": self._latency.last,
                               "faces": len(res.faces), "drops": self._dropped()}
                    with self._latest_lock:
                        self._latest = (frame, res.image, overlay)
        except BaseException as exc:  # noqa: BLE001
            self._fail("output", exc)
        finally:
            if bar is not None:
                bar.close()
            cut_short = self._stopped_by != "end of stream"
            for sink in self.sinks:
                try:
                    if cut_short and hasattr(sink, "end_audio_with_video"):
                        sink.end_audio_with_video()   # else the sink copies all the input's audio
                    sink.close()
                except BaseException as exc:  # noqa: BLE001
                    self._fail("output", exc)
            self._sinks_closed = True

    def _dropped(self) -> int:
        return self.q_in.dropped + self.q_tracked.dropped + self.q_out.dropped + getattr(self.source.stats, "dropped", 0)

    def _stalled(self) -> bool:
        """Whether no frame came out and no thread finished for GIVE_UP_S (a slow model that
        still makes progress is waited for; a sink stuck in close() is not)."""
        marker = (self._frames_out, sum(e.is_set() for e in self._finished.values()))
        last_marker, since = self._last_progress
        now = time.monotonic()
        loading = not self._unmasker_ready.is_set() and not self._finished["inference"].is_set()
        if marker != last_marker or loading:   # loading models (GPU warm-up) is not a stall
            self._last_progress = (marker, now)
            return False
        return now - since > self.GIVE_UP_S

    def _wait_for_threads(self) -> None:
        """Let every thread finish (sinks finalise); a second Ctrl-C here is ignored."""
        deadline = time.monotonic() + self.STOP_GRACE_S
        closed_source = False
        while not all(e.is_set() for e in self._finished.values()):
            try:
                self._finished["output"].wait(_POLL_S)
                if not closed_source and time.monotonic() > deadline and not self._finished["capture"].is_set():
                    # Unblock a source read that may be waiting on the network.
                    closed_source = True
                    try:
                        self.source.close()
                    except Exception:  # noqa: BLE001
                        pass
                if self._stalled():
                    break   # give up on a thread stuck in native code rather than hang
            except KeyboardInterrupt:
                continue

    def _unfinished_error(self):
        """A SinkError when a thread is still running or the sinks were not closed: such an
        output may be incomplete and must never be reported as done."""
        stuck = [name for name, done in self._finished.items() if not done.is_set()]
        if not stuck and self._sinks_closed:
            return None
        from stream.errors import SinkError
        outputs = ", ".join(getattr(s, "description", "") or type(s).__name__ for s in self.sinks)
        where = f"{' and '.join(stuck)} thread still running" if stuck else "sinks not closed"
        return SinkError(f"output not finished: no progress for {self.GIVE_UP_S:g} s ({where}); "
                         f"{outputs or 'the output'} may be incomplete")

    # -- run -------------------------------------------------------------------------
    def run(self) -> PipelineStats:
        t0 = time.monotonic()
        # Completion is signalled with events, not Thread.is_alive()/join(): a
        # Ctrl-C landing inside Thread.join() can leave CPython believing a
        # thread has stopped while it still runs (the output thread would then
        # be killed at exit before finalising the file).
        self._finished = {name: threading.Event() for name in ("capture", "tracking", "inference", "output")}

        def thread(target, name):
            def body():
                try:
                    target()
                finally:
                    self._finished[name].set()
            return threading.Thread(target=body, name=name, daemon=True)

        threads = [thread(self._capture, "capture"), thread(self._inference, "inference"),
                   thread(self._output, "output")]
        for th in threads:
            th.start()
        all_done = lambda: all(e.is_set() for e in self._finished.values())
        try:
            if self.preview is not None:
                self.preview.open(self.source.info)
            self._last_progress = (None, time.monotonic())
            while not all_done():
                if self._finished["capture"].is_set() and self._stalled():
                    break   # the input is read and the rest makes no progress: give up below
                if self.preview is not None:
                    with self._latest_lock:
                        latest, self._latest = self._latest, None
                    if latest is not None:
                        self.preview.write(latest[0], latest[1], latest[2])
                    elif hasattr(self.preview, "poll"):
                        self.preview.poll()
                    if getattr(self.preview, "stop_requested", False):
                        self.stop("user (q/Esc)")
                    time.sleep(0.001)
                else:
                    self._finished["output"].wait(_POLL_S)
        except KeyboardInterrupt:
            self.stop("interrupted")
        except BaseException as exc:  # noqa: BLE001
            self._fail("preview", exc)
        finally:
            self.stop(self._stopped_by or "end of stream")
            self._wait_for_threads()
            if self.preview is not None:
                try:
                    self.preview.close()
                except Exception:  # noqa: BLE001
                    pass
        duration = time.monotonic() - t0
        src_stats = self.source.stats
        stats = PipelineStats(
            mode=self.mode.value, frames_in=self._frames_in, frames_out=self._frames_out,
            frames_dropped=self._dropped(), corrupt_frames=getattr(src_stats, "corrupt_frames", 0),
            reconnects=getattr(src_stats, "reconnects", 0), duration_s=duration,
            fps=self._frames_out / duration if duration > 0 else 0.0,
            mean_faces=self._faces.mean or 0.0,
            masked_faces=self._masked, stopped_by=self._stopped_by,
            stages=self._times.summary(),
            latency_ms={k: self._latency.percentile(q) for k, q in
                        (("p50", 50), ("p95", 95), ("p99", 99))} if self._latency.count else {})
        unfinished = self._unfinished_error()
        if unfinished is not None:
            unfinished.pipeline_stats = stats
            raise unfinished
        if self._errors:
            where, exc = self._errors[0]
            exc.pipeline_stats = stats  # the CLI still reports what was done
            raise exc
        return stats
