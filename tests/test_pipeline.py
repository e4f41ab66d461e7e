"""Threads, queues and modes of stream.pipeline, with in-memory sources and sinks."""
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from stream.frame import Frame
from stream.pipeline import DropOldestQueue, Mode, Pipeline
from stream.sources import SourceInfo, SourceStats
from stream.unmasker import Result


class ListSource:
    """Frames 0..n-1 (pixel value = index), optionally paced like a live camera."""

    def __init__(self, n, live=False, interval_s=0.0, fail_at=None):
        self.n, self.i, self.interval_s, self.fail_at = n, 0, interval_s, fail_at
        self.info = SourceInfo(width=8, height=8, fps=25.0, frame_count=None if live else n,
                               time_base=Fraction(1, 1000), audio_path=None, live=live,
                               description="list")
        self.stats = SourceStats()
        self.closed = False

    def read(self):
        if self.fail_at is not None and self.i == self.fail_at:
            raise RuntimeError("camera unplugged")
        if self.i >= self.n or self.closed:
            return None
        if self.interval_s:
            time.sleep(self.interval_s)
        img = np.full((8, 8, 3), self.i % 256, np.uint8)
        f = Frame(img, self.i, time.monotonic(), pts=self.i * 40, time_base=Fraction(1, 1000))
        self.i += 1
        self.stats.frames_read += 1
        return f

    def close(self):
        self.closed = True


class FakeUnmasker:
    """Adds 1 to every pixel (so tests can tell processed frames) after `delay_s`."""

    def __init__(self, delay_s=0.0, fail_at=None):
        self.delay_s, self.fail_at, self.calls, self.timestamps = delay_s, fail_at, 0, []
        self.closed = False

    def process(self, image, timestamp_ms=None):
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("model exploded")
        self.calls += 1
        self.timestamps.append(timestamp_ms)
        if self.delay_s:
            time.sleep(self.delay_s)
        return Result(image + 1, [], {"track": 0.1, "inpaint": 0.2})

    def close(self):
        self.closed = True


class MemorySink:
    def __init__(self, fail_at=None):
        self.frames, self.opened, self.closed, self.fail_at = [], False, False, fail_at

    def open(self, info):
        self.opened = True

    def write(self, frame, image):
        if self.fail_at is not None and len(self.frames) == self.fail_at:
            raise OSError("disk full")
        self.frames.append((frame.index, frame.pts, int(image[0, 0, 0])))

    def close(self):
        self.closed = True


def run_bounded(pipe, timeout=20):
    """Run the pipeline in a thread so a hang fails the test instead of stalling the suite."""
    out = {}

    def target():
        try:
            out["stats"] = pipe.run()
        except BaseException as exc:  # noqa: BLE001
            out["error"] = exc

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    assert not th.is_alive(), "pipeline hung"
    return out


def test_offline_is_lossless_ordered_and_keeps_timestamps():
    src, sink, um = ListSource(60), MemorySink(), FakeUnmasker(delay_s=0.002)
    out = run_bounded(Pipeline(src, [sink], lambda: um))
    stats = out["stats"]
    assert stats.mode == "offline"
    assert stats.frames_in == stats.frames_out == 60 and stats.frames_dropped == 0
    assert [f[0] for f in sink.frames] == list(range(60))
    assert [f[1] for f in sink.frames] == [i * 40 for i in range(60)]
    assert [f[2] for f in sink.frames] == [(i % 256) + 1 for i in range(60)]
    # Offline timestamps come from the source's pts, in ms.
    assert um.timestamps == [float(i * 40) for i in range(60)]
    assert sink.opened and sink.closed and um.closed
    assert stats.stopped_by == "end of stream"
    for stage in ("decode", "track", "inpaint", "encode"):
        assert stats.stages[stage]["n"] == 60


def test_offline_back_pressure_instead_of_drops_with_a_slow_model():
    src, sink = ListSource(20), MemorySink()
    stats = run_bounded(Pipeline(src, [sink], lambda: FakeUnmasker(delay_s=0.02)))["stats"]
    assert stats.frames_out == 20 and stats.frames_dropped == 0


def test_live_drops_oldest_and_latency_stays_bounded():
    # A 200 FPS camera and a 20 FPS model: most frames must be dropped, and the
    # frames that are shown must be recent (latency ~ one model call, not growing).
    src, sink = ListSource(200, live=True, interval_s=0.005), MemorySink()
    stats = run_bounded(Pipeline(src, [sink], lambda: FakeUnmasker(delay_s=0.05)))["stats"]
    assert stats.mode == "live"
    assert stats.frames_dropped > 100
    assert stats.frames_in == 200
    assert stats.frames_out + stats.frames_dropped == stats.frames_in
    idx = [f[0] for f in sink.frames]
    assert idx == sorted(idx)                      # still in order
    assert stats.latency_ms["p95"] < 500           # would be seconds if the queue grew


def test_max_frames_stops_early_and_finalises():
    src, sink = ListSource(100), MemorySink()
    stats = run_bounded(Pipeline(src, [sink], FakeUnmasker, max_frames=7))["stats"]
    assert stats.frames_out == 7 and sink.closed and stats.stopped_by == "max_frames"


def test_duration_uses_media_time_offline():
    src, sink = ListSource(100), MemorySink()   # 40 ms per frame
    stats = run_bounded(Pipeline(src, [sink], FakeUnmasker, duration_s=1.0))["stats"]
    assert stats.frames_out == 25


@pytest.mark.parametrize("where", ["capture", "inference", "output", "factory"])
def test_an_error_in_any_thread_stops_everything_cleanly(where):
    src = ListSource(1000, fail_at=5 if where == "capture" else None)
    sink = MemorySink(fail_at=5 if where == "output" else None)

    def factory():
        if where == "factory":
            raise RuntimeError("no model")
        return FakeUnmasker(fail_at=5 if where == "inference" else None)

    out = run_bounded(Pipeline(src, [sink], factory))
    assert "error" in out
    assert isinstance(out["error"], (RuntimeError, OSError))
    assert sink.closed                               # output finalised even on errors
    assert out["error"].pipeline_stats.frames_out <= 6


def test_stop_from_another_thread_ends_a_live_run():
    src, sink = ListSource(10**6, live=True, interval_s=0.001), MemorySink()
    pipe = Pipeline(src, [sink], FakeUnmasker)
    threading.Timer(0.3, pipe.stop, args=("Ctrl-C",)).start()
    stats = run_bounded(pipe)["stats"]
    assert stats.stopped_by == "Ctrl-C" and sink.closed and 0 < stats.frames_out < 10**6


def test_drop_oldest_queue_counts_and_keeps_the_newest():
    q = DropOldestQueue(2)
    for i in range(5):
        q.put(i)
    assert q.dropped == 3
    assert [q.get(0.1), q.get(0.1)] == [3, 4]


def test_mode_can_be_forced():
    src = ListSource(5)
    assert Pipeline(src, [], FakeUnmasker, mode=Mode.LIVE).mode is Mode.LIVE


class SlowDownload:
    """Stands in for stream.gpu.PendingFrame: the image arrives only when `result()` is called."""

    def __init__(self, image, delay_s, spans):
        self.image, self.delay_s, self.spans = image, delay_s, spans

    def result(self):
        t0 = time.monotonic()
        time.sleep(self.delay_s)
        self.spans[("download", int(self.image[0, 0, 0]))] = (t0, time.monotonic())
        return self.image


class DeferringUnmasker(FakeUnmasker):
    def __init__(self, spans, **kw):
        super().__init__(**kw)
        self.spans = spans

    def process(self, image, timestamp_ms=None):
        t0 = time.monotonic()
        res = super().process(image, timestamp_ms)
        self.spans[("process", int(res.image[0, 0, 0]))] = (t0, time.monotonic())
        res.image = SlowDownload(res.image, 0.01, self.spans)
        return res


def test_deferred_downloads_overlap_the_next_frames_and_reach_the_sinks_as_arrays():
    spans = {}
    src, sink = ListSource(30), MemorySink()
    stats = run_bounded(Pipeline(src, [sink], lambda: DeferringUnmasker(spans, delay_s=0.01)))["stats"]
    assert stats.frames_out == 30 and [f[2] for f in sink.frames] == [(i % 256) + 1 for i in range(30)]
    assert stats.stages["download"]["n"] == 30
    # Frames in flight: frame v+1 was being processed while frame v was downloading.
    overlaps = sum(min(spans[("download", v)][1], spans[("process", v + 1)][1])
                   > max(spans[("download", v)][0], spans[("process", v + 1)][0]) for v in range(1, 30))
    assert overlaps >= 15, overlaps


@pytest.mark.parametrize("max_frames", [None, 10])
def test_file_to_file_keeps_all_audio_unless_cut_short(tmp_path, max_frames):
    from media import make_clip, packets
    from stream.sinks import open_sink
    from stream.sources import open_source

    clip = make_clip(tmp_path / "in.mp4", n_frames=30, audio_s=2.5)   # audio outlasts the video
    out = tmp_path / "out.mp4"
    with open_source(str(clip)) as source:
        stats = run_bounded(Pipeline(source, [open_sink(str(out))], FakeUnmasker,
                                     max_frames=max_frames))["stats"]
    source_audio = [bytes(p) for p in packets(clip, "audio")]
    output_audio = packets(out, "audio")
    if max_frames is None:
        assert stats.stopped_by == "end of stream"
        assert [bytes(p) for p in output_audio] == source_audio
    else:
        end = max(float((p.pts + p.duration) * p.time_base) for p in output_audio)
        assert 0.35 <= end <= 0.45 + 1024 / 48_000 and len(output_audio) < len(source_audio)


class HangingCloseSink(MemorySink):
    """close() blocks until released: an output stuck finalising (a full disk, a dead NFS mount)."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()

    def close(self):
        self.release.wait(30)
        self.closed = True


def test_an_output_that_never_finishes_is_an_error_not_done(monkeypatch):
    from stream.errors import SinkError
    monkeypatch.setattr(Pipeline, "STOP_GRACE_S", 0.2)
    monkeypatch.setattr(Pipeline, "GIVE_UP_S", 0.5)
    sink = HangingCloseSink()
    try:
        out = run_bounded(Pipeline(ListSource(5), [sink], FakeUnmasker), timeout=10)
    finally:
        sink.release.set()
    assert "stats" not in out and isinstance(out["error"], SinkError)
    message = str(out["error"])
    assert "\n" not in message and "not finished" in message
    assert out["error"].pipeline_stats.frames_out == 5


def test_cli_reports_an_unfinished_output_as_one_error_line(monkeypatch, capsys, tmp_path):
    import run_stream
    import stream.sinks
    monkeypatch.setattr(Pipeline, "STOP_GRACE_S", 0.2)
    monkeypatch.setattr(Pipeline, "GIVE_UP_S", 0.5)
    sink = HangingCloseSink()
    sink.description = "out.mp4"
    monkeypatch.setattr(stream.sinks, "open_sink", lambda spec, **kw: sink)
    from media import write_images
    write_images(tmp_path / "in", range(3))
    try:
        code = run_stream.main(["--source", str(tmp_path / "in"), "--output", "out.mp4", "--no-display",
                                "--method", "classical", "--verbose", "--no-progress"])
    finally:
        sink.release.set()
    err = capsys.readouterr().err
    assert code == 1
    assert "done:" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "out.mp4" in errors[0] and "Traceback" not in err


def test_long_runs_keep_bounded_statistics(monkeypatch):
    from stream import running_stats
    monkeypatch.setattr(running_stats, "DEFAULT_CAPACITY", 64)
    pipe = Pipeline(ListSource(500), [MemorySink()], FakeUnmasker)
    stats = run_bounded(pipe)["stats"]
    assert stats.frames_out == 500
    structures = [pipe._latency, pipe._faces, *pipe._times.samples.values()]
    assert all(len(s.samples()) == 64 for s in structures)       # not one entry per frame
    assert stats.stages["track"]["n"] == 500 and stats.stages["track"]["mean_ms"] == pytest.approx(0.1)
    assert stats.mean_faces == 0.0 and set(stats.latency_ms) == {"p50", "p95", "p99"}


class TrackingAheadUnmasker(FakeUnmasker):
    """A two-step unmasker (like stream.Unmasker on the CPU): `track_frame` then `finish_frame`,
    each slow; records when each step of each frame ran."""

    tracks_ahead = True

    def __init__(self, delay_s=0.01, fail_track_at=None, fail_finish_at=None):
        super().__init__(delay_s)
        self.fail_track_at, self.fail_finish_at = fail_track_at, fail_finish_at
        self.tracked, self.finished, self.spans = [], [], {}
        self.lock = threading.Lock()

    def track_frame(self, image, timestamp_ms=None):
        if self.fail_track_at is not None and len(self.tracked) == self.fail_track_at:
            raise RuntimeError("tracker exploded")
        t0 = time.monotonic()
        time.sleep(self.delay_s)
        self.tracked.append(int(image[0, 0, 0]))
        self.spans[("track", int(image[0, 0, 0]))] = (t0, time.monotonic())
        return (image, timestamp_ms)

    def finish_frame(self, tracked):
        if self.fail_finish_at is not None and len(self.finished) == self.fail_finish_at:
            raise RuntimeError("model exploded")
        image, ts = tracked
        t0 = time.monotonic()
        time.sleep(self.delay_s)
        self.finished.append(int(image[0, 0, 0]))
        self.timestamps.append(ts)
        self.spans[("finish", int(image[0, 0, 0]))] = (t0, time.monotonic())
        return Result(image + 1, [], {"track": 0.1, "inpaint": 0.2})


def test_a_tracking_ahead_unmasker_runs_on_two_threads_lossless_and_in_order():
    src, sink, um = ListSource(40), MemorySink(), TrackingAheadUnmasker(delay_s=0.01)
    stats = run_bounded(Pipeline(src, [sink], lambda: um))["stats"]
    assert stats.frames_out == 40 and stats.frames_dropped == 0
    assert um.tracked == um.finished == list(range(40)) and um.calls == 0   # never the one-step path
    assert [f[2] for f in sink.frames] == [i + 1 for i in range(40)]
    assert um.timestamps == [float(i * 40) for i in range(40)]
    # The tracker of a later frame ran while an earlier frame was being finished.
    overlaps = sum(1 for i in range(1, 40)
                   if um.spans[("track", i)][0] < um.spans[("finish", i - 1)][1]
                   and um.spans[("finish", i - 1)][0] < um.spans[("track", i)][1])
    assert overlaps >= 10                  # most are; a busy machine may serialise a few
    assert um.closed


@pytest.mark.parametrize("step", ["track", "finish"])
def test_an_error_in_either_inference_thread_stops_everything_cleanly(step):
    src, sink = ListSource(1000), MemorySink()
    um = TrackingAheadUnmasker(delay_s=0.001, **{f"fail_{step}_at": 5})
    out = run_bounded(Pipeline(src, [sink], lambda: um))
    assert isinstance(out["error"], RuntimeError) and "exploded" in str(out["error"])
    assert sink.closed and um.closed and out["error"].pipeline_stats.frames_out <= 5


def test_live_with_a_tracking_ahead_unmasker_keeps_latency_bounded():
    src, sink = ListSource(200, live=True, interval_s=0.005), MemorySink()
    stats = run_bounded(Pipeline(src, [sink], lambda: TrackingAheadUnmasker(delay_s=0.03)))["stats"]
    assert stats.frames_dropped > 100 and stats.frames_out + stats.frames_dropped == stats.frames_in
    idx = [f[0] for f in sink.frames]
    assert idx == sorted(idx)
    assert stats.latency_ms["p95"] < 500


def test_the_real_unmasker_gives_the_same_frames_on_two_threads_as_frame_by_frame():
    # stream.Unmasker tracks ahead on the CPU: frame n+1's tracker runs beside frame n's models.
    # That must not change a pixel against calling process() frame by frame.
    from pathlib import Path

    from stream import Unmasker
    from stream.sources import open_source

    sample = str(Path(__file__).resolve().parents[1] / "assets" / "sample.mp4")

    class ImageSink(MemorySink):
        def write(self, frame, image):
            self.frames.append(image.copy())

    sink, um = ImageSink(), Unmasker(method="model")
    assert um.tracks_ahead
    src = open_source(sample)
    try:
        stats = run_bounded(Pipeline(src, [sink], lambda: um, max_frames=48), timeout=120)["stats"]
    finally:
        src.close()
    assert stats.frames_out == 48
    src = open_source(sample)
    expected, redrawn = [], 0
    with Unmasker(method="model") as ref:
        for _ in range(48):
            f = src.read()
            expected.append(ref.process(f.image, timestamp_ms=f.timestamp_s * 1000.0).image)
            redrawn += not np.array_equal(expected[-1], f.image)
    src.close()
    assert redrawn >= 12                  # the sample's face is masked from frame 26 on: redrawn
    assert sum(1 for a, b in zip(sink.frames, expected) if not np.array_equal(a, b)) == 0


@pytest.mark.parametrize("ahead", [False, True], ids=["one-thread", "tracking-ahead"])
def test_a_stopped_offline_run_writes_a_gap_free_prefix_of_the_input(ahead):
    # Ctrl-C while every queue is full (a slow sink): the frames already read are written up to
    # where the run stopped, and none is skipped on the way (a give-up put ends its producer).
    class SlowSink(MemorySink):
        def write(self, frame, image):
            time.sleep(0.12)                   # slower than a put's poll: puts give up after the stop
            super().write(frame, image)

    src, sink = ListSource(500), SlowSink()
    um = TrackingAheadUnmasker(delay_s=0.002) if ahead else FakeUnmasker(delay_s=0.002)
    pipe = Pipeline(src, [sink], lambda: um)
    threading.Timer(1.0, pipe.stop, args=("Ctrl-C",)).start()
    stats = run_bounded(pipe)["stats"]
    idx = [f[0] for f in sink.frames]
    assert stats.stopped_by == "Ctrl-C" and 5 <= len(idx) < 500
    assert idx == list(range(len(idx)))
    assert [f[2] for f in sink.frames] == [i + 1 for i in idx]


def test_an_output_failing_at_open_never_closes_the_models_under_a_running_tracker(monkeypatch):
    # The CLI once aborted (SIGABRT) when its output could not be opened: the models were closed
    # while the tracking thread was still starting mediapipe. After an error no queued frame is
    # tracked, and models a tracker is still inside are never closed.
    class FailingSink(MemorySink):
        def open(self, info):
            raise OSError("cannot publish: connection refused")

    class SlowStartUnmasker(TrackingAheadUnmasker):
        def __init__(self):
            super().__init__(delay_s=0.0)
            self.inside = threading.Event()
            self.closed_while_tracking = False

        def track_frame(self, image, timestamp_ms=None):
            self.inside.set()
            time.sleep(0.6)                          # a first mediapipe start-up on a busy machine
            try:
                return super().track_frame(image, timestamp_ms)
            finally:
                self.inside.clear()

        def close(self):
            self.closed_while_tracking = self.inside.is_set()
            super().close()

    monkeypatch.setattr(Pipeline, "STOP_GRACE_S", 0.1)   # shorter than the tracker's start-up
    src, sink, um = ListSource(50), FailingSink(), SlowStartUnmasker()
    out = run_bounded(Pipeline(src, [sink], lambda: um))
    assert isinstance(out["error"], OSError)
    assert not um.closed_while_tracking
    assert len(um.tracked) <= 1 and um.finished == []   # nothing tracked or modelled after the error
