"""Sinks: video files (timestamps, audio, safety), image folders, network, preview."""
from __future__ import annotations

import importlib.util
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from media import decoded_frames, frame_image, make_clip, packets, read_index, write_images
from stream import sinks
from stream.errors import SinkError
from stream.frame import Frame
from stream.sinks import (ImageFolderSink, NetworkSink, PreviewSink, VideoFileSink, draw_overlay,
                          open_sink)
from stream.sources import SourceInfo, open_source


def one_line(error: Exception) -> str:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text
    return text


def copy_through(source_spec, sink, *, transform=lambda image: image) -> int:
    """Run every frame of `source_spec` through `sink`; returns the number of frames."""
    count = 0
    with open_source(str(source_spec)) as source, sink:
        sink.open(source.info)
        for frame in source:
            sink.write(frame, transform(frame.image))
            count += 1
    return count


def leftovers(folder) -> list[str]:
    return [name for name in os.listdir(folder) if ".partial" in name]


# ------------------------------------------------------------------------------ video files

def test_mp4_round_trip_keeps_frames_timestamps_and_audio_bytes(clip, tmp_path):
    out = tmp_path / "out.mp4"
    sink = open_sink(str(out), source_path=str(clip))
    assert isinstance(sink, VideoFileSink)
    assert copy_through(clip, sink) == 30
    source_frames, output_frames = decoded_frames(clip), decoded_frames(out)
    assert len(output_frames) == 30
    assert [pts for pts, _, _ in output_frames] == [pts for pts, _, _ in source_frames]
    assert output_frames[0][1] == source_frames[0][1] == Fraction(1, 12800)
    assert [read_index(image) for _, _, image in output_frames] == list(range(30))
    source_audio = [bytes(p) for p in packets(clip, "audio")]
    output_audio = [bytes(p) for p in packets(out, "audio")]
    assert len(source_audio) > 50 and output_audio == source_audio
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert (video.codec_context.width, video.codec_context.height) == (320, 240)
    assert leftovers(tmp_path) == []
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask   # an ordinary new file, not mkstemp's 0600


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize("audio_s", [0.5, 1.2, 2.5], ids=["audio-shorter", "audio-equal", "audio-longer"])
def test_every_audio_packet_is_copied_whatever_the_lengths(tmp_path, suffix, audio_s):
    # 30 frames at 25 fps = 1.2 s of video; the AAC track lasts audio_s.
    clip = make_clip(tmp_path / f"in{suffix}", n_frames=30, audio_s=audio_s)
    out = tmp_path / f"out{suffix}"
    copy_through(clip, open_sink(str(out)))
    source_audio = [bytes(p) for p in packets(clip, "audio")]
    output_audio = [bytes(p) for p in packets(out, "audio")]
    assert len(source_audio) >= round(audio_s * 48_000 / 1024)
    assert len(output_audio) == len(source_audio) and output_audio == source_audio
    assert len(decoded_frames(out)) == 30


def test_audio_ends_with_the_video_when_the_input_was_cut_short(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", n_frames=30, audio_s=2.5)
    out = tmp_path / "out.mp4"
    with open_source(str(clip)) as source, open_sink(str(out)) as sink:
        sink.open(source.info)
        for frame in source:
            sink.write(frame, frame.image)
            if frame.index == 9:
                break
        sink.end_audio_with_video()
    audio = packets(out, "audio")
    end = max(float((p.pts + p.duration) * p.time_base) for p in audio)
    assert 0.35 <= end <= 0.45 + 1024 / 48_000   # 10 frames = 0.4 s, not the input's 2.5 s


def test_mkv_keeps_audio_bytes_and_relative_timing(clip, tmp_path):
    out = tmp_path / "out.mkv"
    copy_through(clip, open_sink(str(out)))
    assert [bytes(p) for p in packets(out, "audio")] == [bytes(p) for p in packets(clip, "audio")]
    times = [float(pts * tb) for pts, tb, _ in decoded_frames(out)]
    # Matroska cannot start below zero, so it may shift every stream by the audio priming delay.
    assert np.allclose(np.diff(times), 0.04, atol=0.0015) and len(times) == 30


def test_processed_pixels_are_what_gets_written(clip, tmp_path):
    out = tmp_path / "negative.mp4"
    copy_through(clip, open_sink(str(out)), transform=lambda image: 255 - image)
    _, _, first = decoded_frames(out)[0]
    assert read_index(255 - first) == 0


def test_frames_without_pts_are_timed_by_index_and_fps(tmp_path):
    out = tmp_path / "out.mp4"
    info = SourceInfo(width=64, height=48, fps=10.0, description="test")
    with open_sink(str(out)) as sink:
        sink.open(info)
        for index in range(12):
            image = frame_image(index, (64, 48))
            sink.write(Frame(image, index, time.monotonic()), image)
    frames = decoded_frames(out)
    assert [float(pts * tb) for pts, tb, _ in frames] == pytest.approx([i / 10 for i in range(12)])


def test_timestamps_that_go_back_continue_after_the_last_frame(tmp_path):
    # What a live source does after a reconnect: its clock starts again from zero.
    out = tmp_path / "out.mp4"
    info = SourceInfo(width=64, height=48, fps=25.0, time_base=Fraction(1, 90000), live=True)
    pts_in = [0, 3600, 7200, 10800, 0, 3600, 7200]
    with open_sink(str(out)) as sink:
        sink.open(info)
        for index, pts in enumerate(pts_in):
            image = frame_image(index, (64, 48))
            sink.write(Frame(image, index, time.monotonic(), pts, Fraction(1, 90000)), image)
    times = [float(pts * tb) for pts, tb, _ in decoded_frames(out)]
    assert times == pytest.approx([0, 0.04, 0.08, 0.12, 0.16, 0.20, 0.24])


@pytest.mark.parametrize("size", [(321, 241), (320, 241), (321, 240)])
def test_odd_frame_sizes_are_kept_exactly(tmp_path, size):
    width, height = size
    out = tmp_path / "odd.mp4"
    info = SourceInfo(width=width, height=height, fps=25.0, description="test")
    with open_sink(str(out)) as sink:
        sink.open(info)
        for index in range(5):
            image = frame_image(index, size)
            sink.write(Frame(image, index, time.monotonic()), image)
    frames = decoded_frames(out)
    assert [image.shape for _, _, image in frames] == [(height, width, 3)] * 5
    assert [read_index(image) for _, _, image in frames] == list(range(5))
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv444p"


def test_frames_that_change_size_are_scaled_to_the_first_size(tmp_path):
    out = tmp_path / "out.mp4"
    with open_sink(str(out)) as sink:
        sink.open(SourceInfo(width=320, height=240, fps=25.0))
        for index in range(6):
            size = (320, 240) if index < 3 else (160, 96)
            image = frame_image(index, size)
            sink.write(Frame(image, index, time.monotonic()), image)
    frames = decoded_frames(out)
    assert [image.shape for _, _, image in frames] == [(240, 320, 3)] * 6
    assert [read_index(image) for _, _, image in frames] == list(range(6))


def test_size_unknown_at_open_is_taken_from_the_first_frame(tmp_path):
    out = tmp_path / "out.mkv"
    with open_sink(str(out)) as sink:
        sink.open(SourceInfo(fps=25.0))
        for index in range(3):
            image = frame_image(index, (96, 64))
            sink.write(Frame(image, index, time.monotonic()), image)
    assert [image.shape for _, _, image in decoded_frames(out)] == [(64, 96, 3)] * 3


def test_webm_uses_vp9_and_drops_audio_it_cannot_hold(clip, tmp_path):
    out = tmp_path / "out.webm"
    assert copy_through(clip, open_sink(str(out))) == 30
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
        assert len(container.streams.audio) == 0
    assert [read_index(image) for _, _, image in decoded_frames(out)] == list(range(30))


def test_existing_output_is_refused_without_overwrite(clip, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(SinkError) as error:
        open_sink(str(out))
    assert one_line(error.value) == f"output {out} already exists (use --overwrite to replace it)"
    assert out.read_bytes() == b"precious"


def test_overwrite_replaces_only_when_the_video_is_complete(clip, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    with open_source(str(clip)) as source:
        sink = open_sink(str(out), overwrite=True)
        sink.open(source.info)
        for frame in source:
            sink.write(frame, frame.image)
            assert out.read_bytes() == b"precious"   # untouched until close()
        sink.close()
    assert len(decoded_frames(out)) == 30
    assert leftovers(tmp_path) == []


def test_a_failed_run_leaves_the_users_file_and_no_half_file(clip, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(RuntimeError):
        with open_source(str(clip)) as source, open_sink(str(out), overwrite=True) as sink:
            sink.open(source.info)
            for frame in source:
                sink.write(frame, frame.image)
                if frame.index == 5:
                    raise RuntimeError("the pipeline failed")
    assert out.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]


def test_abort_without_an_existing_file_creates_nothing(clip, tmp_path):
    out = tmp_path / "out.mp4"
    sink = open_sink(str(out))
    with open_source(str(clip)) as source:
        sink.open(source.info)
        sink.write(source.read(), np.zeros((240, 320, 3), np.uint8))
    sink.abort()
    sink.close()   # idempotent after abort
    assert os.listdir(tmp_path) == []


def test_output_equal_to_input_is_refused_even_with_overwrite(clip, tmp_path):
    for spelling in (str(clip), os.path.relpath(clip), str(clip.parent / "." / clip.name)):
        with pytest.raises(SinkError) as error:
            open_sink(spelling, overwrite=True, source_path=str(clip))
        assert "is the input file" in one_line(error.value)
    link = tmp_path / "link.mp4"
    link.symlink_to(clip)
    with pytest.raises(SinkError):
        open_sink(str(link), overwrite=True, source_path=str(clip))


def test_missing_output_folder_is_refused(tmp_path):
    with pytest.raises(SinkError) as error:
        open_sink(str(tmp_path / "no" / "such" / "out.mp4"))
    assert "does not exist" in one_line(error.value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc, which nobody can write")
def test_unwritable_folder_fails_at_open():
    sink = VideoFileSink("/proc/unmask-test.mp4")
    with pytest.raises(SinkError) as error:
        sink.open(SourceInfo(width=64, height=48, fps=25.0))
    assert one_line(error.value).startswith("cannot write to folder /proc")


def test_unknown_codec_is_a_sink_error(tmp_path):
    sink = open_sink(str(tmp_path / "out.mp4"), codec="no-such-codec")
    with pytest.raises(SinkError) as error:
        sink.open(SourceInfo(width=64, height=48, fps=25.0))
    assert "unknown video codec no-such-codec" in one_line(error.value)
    assert os.listdir(tmp_path) == []


def test_unsupported_output_is_refused(tmp_path):
    with pytest.raises(SinkError) as error:
        open_sink(str(tmp_path / "out.xyz"))
    assert "unsupported output" in one_line(error.value)
    with pytest.raises(SinkError) as error:
        open_sink("ftp://user:pw@127.0.0.1/out.mp4")
    assert "pw" not in one_line(error.value)


# -------------------------------------------------------------------------------- images

@pytest.mark.parametrize("spelling", ["frames/", "frames"])
def test_image_folder_sink_writes_indexed_pngs(clip, tmp_path, spelling):
    folder = tmp_path / "frames"
    sink = open_sink(str(tmp_path / spelling))
    assert isinstance(sink, ImageFolderSink)
    assert copy_through(clip, sink) == 30
    names = sorted(os.listdir(folder))
    assert names == [f"frame_{i:06d}.png" for i in range(30)]
    originals = [f.image for f in open_source(str(clip))]
    with open_source(str(folder)) as written:
        assert all(np.array_equal(f.image, originals[i]) for i, f in enumerate(written))  # lossless


def test_image_folder_sink_refuses_a_non_empty_folder(tmp_path):
    write_images(tmp_path / "out", [1])
    with pytest.raises(SinkError) as error:
        open_sink(str(tmp_path / "out"))
    assert "is not empty" in one_line(error.value)
    sink = open_sink(str(tmp_path / "out"), overwrite=True)
    sink.open(SourceInfo())
    image = frame_image(4, (64, 48))
    sink.write(Frame(image, 4, time.monotonic()), image)
    assert read_index(cv2.imread(str(tmp_path / "out" / "frame_000004.png"))) == 4


def test_image_folder_sink_refuses_the_input_folder(tmp_path):
    write_images(tmp_path / "in", [1])
    with pytest.raises(SinkError) as error:
        open_sink(str(tmp_path / "in") + "/", overwrite=True, source_path=str(tmp_path / "in"))
    assert "is the input folder" in one_line(error.value)


def test_image_file_sink_holds_one_frame(tmp_path):
    out = tmp_path / "out.png"
    sink = open_sink(str(out))
    sink.open(SourceInfo())
    image = frame_image(9, (40, 30))
    sink.write(Frame(image, 0, time.monotonic()), image)
    assert read_index(cv2.imread(str(out))) == 9
    with pytest.raises(SinkError) as error:
        sink.write(Frame(image, 1, time.monotonic()), image)
    assert "holds one image" in one_line(error.value)


# ------------------------------------------------------------------------------- network

def test_udp_mpegts_sink_is_received_by_a_url_source(udp_port):
    url = f"udp://127.0.0.1:{udp_port}"
    sink = open_sink(url)
    assert isinstance(sink, NetworkSink)
    sink.open(SourceInfo(width=320, height=240, fps=25.0, time_base=Fraction(1, 25), live=True))
    stop = threading.Event()

    def send():   # real time, bounded: at most 10 s of video
        for index in range(250):
            if stop.is_set():
                return
            image = frame_image(index)
            sink.write(Frame(image, index, time.monotonic(), index, Fraction(1, 25)), image)
            time.sleep(0.04)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        with open_source(url, open_timeout_s=5, read_timeout_s=3) as source:
            assert source.info.live and (source.info.width, source.info.height) == (320, 240)
            frames = [source.read() for _ in range(8)]
    finally:
        stop.set()
        sender.join(5)
        sink.close()
    assert all(f is not None and f.image.shape == (240, 320, 3) for f in frames)
    indices = [read_index(f.image) for f in frames]
    assert indices == sorted(indices) and len(set(indices)) == 8 and indices[-1] < 250
    assert all(f.time_base == Fraction(1, 90000) for f in frames)   # MPEG-TS clock


def test_rtsp_sink_to_a_closed_port_fails_with_a_redacted_error(tcp_port):
    sink = open_sink(f"rtsp://alice:hunter2@127.0.0.1:{tcp_port}/live")
    started = time.monotonic()
    with pytest.raises(SinkError) as error:
        sink.open(SourceInfo(width=64, height=48, fps=25.0))
    assert time.monotonic() - started < 10   # bounded: no hang
    message = one_line(error.value)
    assert "hunter2" not in message and "alice" not in message
    assert message.startswith(f"cannot publish to rtsp://***@127.0.0.1:{tcp_port}/live")
    sink.close()


def test_rtsp_sink_to_a_server_that_never_answers_times_out(silent_server):
    sink = NetworkSink(f"rtsp://127.0.0.1:{silent_server}/live", timeout_s=1)
    started = time.monotonic()
    with pytest.raises(SinkError) as error:
        sink.open(SourceInfo(width=64, height=48, fps=25.0))
    assert time.monotonic() - started < 10   # bounded by the 1 s timeout, not hanging
    assert one_line(error.value) == f"cannot publish to rtsp://127.0.0.1:{silent_server}/live: no answer within 1 s"


# ------------------------------------------------------------------- virtual camera, preview

@pytest.mark.skipif(importlib.util.find_spec("pyvirtualcam") is not None,
                    reason="pyvirtualcam is installed")
def test_virtualcam_without_pyvirtualcam_names_the_extra():
    for spec in ("virtualcam", "virtualcam:/dev/video9"):
        with pytest.raises(SinkError) as error:
            open_sink(spec)
        message = one_line(error.value)
        assert "pip install pyvirtualcam" in message and "[virtualcam]" in message


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="display detection is X11 on Linux")
@pytest.mark.parametrize("display", [None, ":97"])
def test_preview_without_a_display_tells_to_pass_no_display(monkeypatch, display):
    if display is None:
        monkeypatch.delenv("DISPLAY", raising=False)
    else:
        monkeypatch.setenv("DISPLAY", display)   # nothing listens there: Qt would abort()
    with pytest.raises(SinkError) as error:
        PreviewSink().open(SourceInfo())
    assert one_line(error.value).endswith("pass --no-display")


PREVIEW_SCRIPT = """
import sys, time
sys.path[:0] = sys.argv[1:3]
from media import frame_image
from stream.frame import Frame
from stream.sinks import PreviewSink
from stream.sources import SourceInfo
preview = PreviewSink(title="Unmask test")
preview.open(SourceInfo())
image = frame_image(3)
for index in range(10):
    preview.write(Frame(image, index, time.monotonic()), image, {"fps": 25.0})
print("stop_requested", preview.stop_requested)
preview.close()
"""


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb (Debian package xvfb)")
def test_preview_shows_frames_in_a_real_window():
    # Xvfb picks a free display and writes its number to the pipe (-displayfd). The preview runs
    # in a child process because Qt ends the whole process when its X server goes away.
    read_end, write_end = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", "640x480x24",
                             "-nolisten", "tcp"], pass_fds=(write_end,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as display_pipe:
            ready, _, _ = select.select([display_pipe], [], [], 20)
            assert ready, "Xvfb did not start"
            display = ":" + display_pipe.readline().strip()
        tests = os.path.dirname(os.path.abspath(__file__))
        result = subprocess.run([sys.executable, "-c", PREVIEW_SCRIPT, os.path.dirname(tests), tests],
                                env={**os.environ, "DISPLAY": display}, capture_output=True,
                                text=True, timeout=60)
    finally:
        xvfb.terminate()   # not kill: Xvfb then removes its socket and lock files
        xvfb.wait(10)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stop_requested False" in result.stdout


def test_preview_keys_toggle_the_overlay_and_request_a_stop(monkeypatch):
    keys = iter([ord("o"), -1, ord("o"), ord("q")])
    shown = []
    monkeypatch.setattr(sinks.cv2, "imshow", lambda title, image: shown.append(image))
    monkeypatch.setattr(sinks.cv2, "waitKey", lambda delay: next(keys))
    monkeypatch.setattr(sinks.cv2, "getWindowProperty", lambda title, prop: 1.0)
    preview = PreviewSink(overlay=True)
    image = np.full((120, 160, 3), 200, np.uint8)
    frame = Frame(image, 0, time.monotonic())
    stats = {"fps": 24.5, "latency ms": 41.0, "faces": 1, "drops": 0}
    overlays = []
    for _ in range(4):
        overlays.append(preview.overlay)
        preview.write(frame, image, stats)
    assert overlays == [True, False, False, True]
    assert preview.stop_requested
    assert not np.array_equal(shown[0], image)      # drawn with the overlay
    assert np.array_equal(shown[1], image)          # overlay toggled off by "o"
    assert np.array_equal(image, np.full((120, 160, 3), 200, np.uint8))   # caller's image untouched


def test_closing_the_preview_window_requests_a_stop(monkeypatch):
    monkeypatch.setattr(sinks.cv2, "imshow", lambda title, image: None)
    monkeypatch.setattr(sinks.cv2, "waitKey", lambda delay: -1)
    monkeypatch.setattr(sinks.cv2, "getWindowProperty", lambda title, prop: 0.0)
    preview = PreviewSink()
    image = np.zeros((10, 10, 3), np.uint8)
    preview.write(Frame(image, 0, 0.0), image)
    assert preview.stop_requested


def test_overlay_draws_every_stat_in_the_top_left_corner():
    image = np.full((240, 320, 3), 255, np.uint8)
    draw_overlay(image, {"fps": 25.0, "faces": 2})
    changed = np.argwhere((image != 255).any(axis=2))
    assert len(changed) > 100
    assert changed[:, 0].max() < 80 and changed[:, 1].max() < 200   # a small box, top left
    more = np.full((240, 320, 3), 255, np.uint8)
    draw_overlay(more, {"fps": 25.0, "faces": 2, "drops": 3})
    assert np.argwhere((more != 255).any(axis=2))[:, 0].max() > changed[:, 0].max()   # one more line
