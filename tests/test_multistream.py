"""Several streams in one process (stream.multistream): per-stream results identical to one-stream runs,
faces of different streams batched into one model call, audio kept, a dead or stalled stream never
stalls the others."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from media import decoded_frames, packets
from stream.frame import Frame
from stream.multistream import (MultiStream, SharedBatcher, StreamUnmasker, expand_sources, make_runners,
                                output_paths, read_stream_list, stream_name)
from stream.pipeline import Pipeline
from stream.sources import SourceInfo, SourceStats, open_source
from stream.unmasker import Unmasker
from tests.faces import face_clip_frames

ROOT = Path(__file__).resolve().parents[1]


def write_clip(path, n, flip=False, audio=True, fps=25):
    """The drifting masked astronaut (mirrored with flip=True, so two streams differ), H.264 + AAC."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 640, 480, "yuv420p"
        v.codec_context.options = {"preset": "veryfast", "crf": "18"}
        a = c.add_stream("aac", rate=48000) if audio else None
        if a is not None:
            a.layout = "mono"
        for i, (frame, _) in enumerate(face_clip_frames(n, step_px=5 if flip else 3)):
            vf = av.VideoFrame.from_ndarray(cv2.flip(frame, 1) if flip else frame, format="bgr24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            c.mux(v.encode(vf))
        c.mux(v.encode(None))
        if a is not None:
            total = round(n / fps * 48000)
            samples = (0.2 * np.sin(2 * np.pi * (330 if flip else 440) * np.arange(total) / 48000)).astype(np.float32)
            for s in range(0, total, 1024):
                af = av.AudioFrame.from_ndarray(samples[None, s:s + 1024], format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 48000, s, Fraction(1, 48000)
                c.mux(a.encode(af))
            c.mux(a.encode(None))
    return Path(path)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("multi")
    return write_clip(d / "left.mp4", 10), write_clip(d / "right.mp4", 7, flip=True)


class ImageSink:
    def __init__(self):
        self.images = []

    def open(self, info):
        pass

    def write(self, frame, image):
        self.images.append((frame.index, image.copy()))

    def close(self):
        pass


def run_bounded(target, timeout=60):
    out = {}

    def body():
        try:
            out["value"] = target()
        except BaseException as exc:  # noqa: BLE001
            out["error"] = exc

    th = threading.Thread(target=body, daemon=True)
    th.start()
    th.join(timeout)
    assert not th.is_alive(), "hung"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_stream_lists_and_names(tmp_path):
    lst = tmp_path / "cams.streams"
    lst.write_text("# the lobby\nrtsp://admin:secret@10.0.0.5:554/live/ch1   # door\n\n  clip.mp4\n0\nphotos/\n")
    assert read_stream_list(lst) == ["rtsp://admin:secret@10.0.0.5:554/live/ch1", "clip.mp4", "0", "photos/"]
    assert expand_sources(["a.mp4", str(lst)])[:2] == ["a.mp4", "rtsp://admin:secret@10.0.0.5:554/live/ch1"]
    names = [stream_name(s) for s in read_stream_list(lst)]
    assert names == ["10.0.0.5_ch1", "clip", "webcam0", "photos"]
    assert not any("secret" in n or "admin" in n for n in names)
    assert output_paths("out", ["x/a.mp4", "y/a.mp4"]) == [Path("out/0_a.mp4"), Path("out/1_a.mp4")]
    (tmp_path / "empty.streams").write_text("# nothing\n\n")
    from stream.errors import SourceError
    with pytest.raises(SourceError, match="names no source"):
        read_stream_list(tmp_path / "empty.streams")


def test_two_streams_give_the_pictures_of_one_stream_runs(clips):
    single = []
    for clip in clips:
        sink = ImageSink()
        src = open_source(str(clip))
        stats = run_bounded(lambda: Pipeline(src, [sink], lambda: Unmasker(backend="onnxruntime", threads=1)).run())
        src.close()
        assert stats.frames_out == stats.frames_in
        single.append(sink.images)

    batcher = SharedBatcher(lambda: make_runners("onnxruntime", threads=1), max_wait_ms=200).start()
    sinks = [ImageSink(), ImageSink()]
    sources = [open_source(str(c)) for c in clips]
    multi = MultiStream([(s, [k], lambda: StreamUnmasker(batcher), []) for s, k in zip(sources, sinks)])
    results = run_bounded(multi.run)
    batcher.close()
    for s in sources:
        s.close()
    assert [r.error for r in results] == [None, None]
    for got, want, n in zip((k.images for k in sinks), single, (10, 7)):
        assert [i for i, _ in got] == [i for i, _ in want] == list(range(n))       # frame-exact, in order
        for (i, a), (_, b) in zip(got, want):
            assert np.array_equal(a, b), f"frame {i} differs from the one-stream run"
    assert not np.array_equal(sinks[0].images[3][1], sinks[1].images[3][1])     # the streams really differ
    summary = batcher.summary()
    for model in ("analyser", "inpainter_fast"):
        assert summary[model]["faces"] == 17                                   # every face of both streams
    stats = multi.stats_dict(batcher)
    assert [s["frames_out"] for s in stats["streams"]] == [10, 7]
    assert stats["aggregate"]["frames_out"] == 17 and stats["aggregate"]["frames_dropped"] == 0


def test_faces_of_two_streams_share_each_model_call_and_keep_their_pictures():
    """Two streams busy with a frame at the same time: each model call carries both streams' faces,
    every stream gets its own rows back (the pictures of a one-stream run)."""
    frames = [f for f, _ in face_clip_frames(4)]
    streams = [frames, [cv2.flip(f, 1) for f in frames]]
    batcher = SharedBatcher(lambda: make_runners("onnxruntime", threads=1), max_wait_ms=10_000).start()
    ums = [StreamUnmasker(batcher), StreamUnmasker(batcher)]
    barrier = threading.Barrier(2)
    got = [[], []]

    def play(k):
        for i, f in enumerate(streams[k]):
            batcher.set_busy(ums[k].client, True)     # both streams are into their frame before either submits
            barrier.wait(30)
            got[k].append(ums[k].process(f, timestamp_ms=40.0 * i).image)

    threads = [threading.Thread(target=play, args=(k,), daemon=True) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    summary = batcher.summary()
    for u in ums:
        u.close()
    batcher.close()
    for model in ("analyser", "inpainter_fast"):
        assert summary[model]["streams_per_call"] == {"2": 4}, summary     # 4 calls, 2 streams in each
        assert summary[model]["faces_per_call"] == {"2": 4}
    for k in range(2):
        one = Unmasker(backend="onnxruntime", threads=1)
        for i, f in enumerate(streams[k]):
            assert np.array_equal(got[k][i], one.process(f, timestamp_ms=40.0 * i).image), (k, i)
        one.close()
    assert not np.array_equal(got[0][1], got[1][1])


def test_cli_writes_one_file_per_stream_with_its_audio(clips, tmp_path):
    listing = tmp_path / "cams.streams"
    listing.write_text(f"# two cameras\n{clips[0]}\n{clips[1]}  # mirrored\n")
    out, stats_path = tmp_path / "out", tmp_path / "stats.json"
    cmd = [sys.executable, "run_stream.py", "--source", str(listing), "--output", str(out), "--no-display",
           "--stats-json", str(stats_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    files = [out / "0_left.mp4", out / "1_right.mp4"]
    assert sorted(out.iterdir()) == files
    one = tmp_path / "one.mp4"            # a one-stream run of the first clip, for comparison
    proc1 = subprocess.run([sys.executable, "run_stream.py", "--source", str(clips[0]), "--output", str(one),
                            "--no-display"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc1.returncode == 0, proc1.stderr
    for clip, f in zip(clips, files):
        src, dst = decoded_frames(clip), decoded_frames(f)
        assert len(dst) == len(src)
        assert [float(p * tb) for p, tb, _ in dst] == [float(p * tb) for p, tb, _ in src]
        assert [bytes(p) for p in packets(f, "audio")] == [bytes(p) for p in packets(clip, "audio")]
    for (_, _, a), (_, _, b) in zip(decoded_frames(files[0]), decoded_frames(one)):
        assert np.array_equal(a, b)
    stats = json.loads(stats_path.read_text())
    assert [s["frames_out"] for s in stats["streams"]] == [10, 7]
    assert [Path(s["source"]).name for s in stats["streams"]] == ["left.mp4", "right.mp4"]
    assert stats["aggregate"]["frames_in"] == stats["aggregate"]["frames_out"] == 17
    assert stats["aggregate"]["frames_dropped"] == 0 and stats["aggregate"]["masked_faces"] >= 15
    assert stats["batching"]["analyser"]["faces"] == 17
    # Never overwrites without --overwrite; a second --output is one clear line.
    for extra in ([], ["--overwrite", "--output", str(tmp_path / "other")]):
        again = subprocess.run(cmd + extra, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert again.returncode != 0
        assert [l for l in again.stderr.splitlines() if l.startswith("error:")] == again.stderr.strip().splitlines()[-1:]


class StalledCamera:
    """A live source that gives `n` frames and then hangs (a camera that stopped sending) until closed."""

    def __init__(self, n=2):
        self.n, self.i = n, 0
        self.info = SourceInfo(width=64, height=48, fps=25.0, live=True, description="stalled")
        self.stats = SourceStats()
        self.closed = threading.Event()
        self.stalled = threading.Event()

    def read(self):
        if self.i >= self.n:
            self.stalled.set()
            self.closed.wait()
            return None
        self.i += 1
        return Frame(np.full((48, 64, 3), 90, np.uint8), self.i - 1, time.monotonic())

    def close(self):
        self.closed.set()


class BrokenCamera(StalledCamera):
    def read(self):
        if self.i >= self.n:
            raise RuntimeError("camera unplugged")
        return super().read()


def test_a_stalled_or_dead_stream_does_not_stall_the_others(clips):
    batcher = SharedBatcher(lambda: make_runners("onnxruntime", threads=1), max_wait_ms=50).start()
    good = open_source(str(clips[0]))
    stalled, broken = StalledCamera(), BrokenCamera()
    seen = {0: 0}
    all_good = threading.Event()

    def on_frame(n, frame, res):
        if n == 0:
            seen[0] += 1
            if seen[0] == 10:
                all_good.set()

    multi = MultiStream([(good, [], lambda: StreamUnmasker(batcher), []),
                         (stalled, [], lambda: StreamUnmasker(batcher), []),
                         (broken, [], lambda: StreamUnmasker(batcher), [])], on_frame=on_frame)
    box = {}
    th = threading.Thread(target=lambda: box.update(results=multi.run()), daemon=True)
    th.start()
    assert all_good.wait(60), "the good stream was held up"
    assert stalled.stalled.is_set() and th.is_alive()       # the stalled camera is still hanging
    multi.stop("test over")
    stalled.close()
    th.join(20)
    assert not th.is_alive()
    batcher.close()
    good.close()
    res = box["results"]
    assert res[0].error is None and res[0].stats.frames_out == 10 and res[0].stats.masked_faces >= 8
    st = res[1].stats                                        # live: it may drop its own oldest frame
    assert res[1].error is None and st.frames_out >= 1 and st.frames_out + st.frames_dropped == 2
    assert res[2].error is not None and "camera unplugged" in res[2].error
    agg = multi.stats_dict(batcher)["aggregate"]
    assert agg["failed_streams"] == 1 and agg["frames_out"] >= 11
