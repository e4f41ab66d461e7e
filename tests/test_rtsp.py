"""Against a real RTSP server on 127.0.0.1 (GStreamer's, run by the system Python): UrlSource
reading, reconnecting after a server restart (with a new frame size), stalls and close();
NetworkSink publishing."""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest

from media import frame_image, make_clip, read_index
from stream.frame import Frame
from stream.sinks import NetworkSink, open_sink
from stream.sources import SourceInfo, UrlSource, open_source

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
DEBIAN_PACKAGES = ("gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base "
                   "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav")
PROBE = """
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
needed = ("filesrc", "qtdemux", "h264parse", "rtph264pay", "rtph264depay", "mpegtsmux", "filesink")
missing = [e for e in needed if not Gst.ElementFactory.find(e)]
assert not missing, missing
"""


def _server_environment() -> dict[str, str]:
    # The system Python must not pick up this virtualenv's packages.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@pytest.fixture(scope="module", autouse=True)
def gstreamer_rtsp_server_available():
    if not sys.platform.startswith("linux") or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"needs {SYSTEM_PYTHON} with GStreamer's RTSP server (Debian: {DEBIAN_PACKAGES})")
    probe = subprocess.run([SYSTEM_PYTHON, "-c", PROBE], capture_output=True, text=True, timeout=60,
                           env=_server_environment())
    if probe.returncode != 0:
        pytest.skip(f"GStreamer's RTSP server is not installed for {SYSTEM_PYTHON}: "
                    f"apt-get install {DEBIAN_PACKAGES}")


class RtspServer:
    """tests/rtsp_server.py in a child process at rtsp://127.0.0.1:PORT/stream: mode "serve"
    plays `path` (an mp4) to clients, mode "record" writes what a client publishes to `path`."""

    def __init__(self, mode: str, path: Path, port: int):
        self.mode, self.path, self.port = mode, path, port
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> RtspServer:
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER_SCRIPT), self.mode, str(self.path), str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_server_environment())
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if selector.select(timeout_s) and self.process.stdout.readline().strip() == "ready":
                return self
        self.stop()
        raise RuntimeError(f"the RTSP server did not start: {self.process.stderr.read()[-2000:]}")

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)   # connections stay open; nothing more is sent

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()   # SIGKILL also ends a paused (SIGSTOPped) process
            self.process.wait(timeout=10)
        if self.process is not None:
            self.process.stdout.close()
            self.process.stderr.close()


@pytest.fixture
def servers():
    """Start servers with servers(clip, port) (or servers(out, port, mode="record")); every one
    is killed at teardown."""
    started: list[RtspServer] = []

    def start(path: Path, port: int, mode: str = "serve") -> RtspServer:
        server = RtspServer(mode, path, port)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Two clips of different sizes, long enough (40 s, 16 s) never to end during a test, with a
    keyframe every second as live cameras have."""
    folder = tmp_path_factory.mktemp("rtsp")
    return {"small": make_clip(folder / "small.mp4", n_frames=1000, size=(160, 120), audio=False, gop=25),
            "large": make_clip(folder / "large.mp4", n_frames=400, size=(192, 144), audio=False, gop=25)}


def read_until(source, condition, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    frames = []
    while time.monotonic() < deadline:
        frame = source.read()
        if frame is None:
            break
        frames.append(frame)
        if condition(frame):
            return frames
    raise AssertionError(f"condition not met within {timeout_s} s after {len(frames)} frames; "
                         f"error={getattr(source, 'error', None)}")


def test_reads_frames_and_reconnects_after_the_server_restarts(servers, clips, tcp_port):
    url = f"rtsp://viewer:op3nsesame@127.0.0.1:{tcp_port}/stream"
    server = servers(clips["small"], tcp_port)
    source = open_source(url, open_timeout_s=5, read_timeout_s=2, max_backoff_s=1, give_up_after_s=30)
    try:
        assert isinstance(source, UrlSource)
        info = source.info
        assert info.live and (info.width, info.height) == (160, 120) and info.fps == 25.0
        assert info.time_base == Fraction(1, 90000) and info.frame_count is None
        assert info.description == f"rtsp://***@127.0.0.1:{tcp_port}/stream"
        before = [source.read() for _ in range(10)]
        assert all(f is not None and f.image.shape == (120, 160, 3) for f in before)
        contents = [read_index(f.image) for f in before]
        assert contents == sorted(set(contents))               # the clip's frames, in order
        assert [f.index for f in before] == sorted({f.index for f in before})

        server.stop()
        servers(clips["large"], tcp_port)   # same port, new frame size
        after = read_until(source, lambda f: f.image.shape == (144, 192, 3), timeout_s=20)
        assert source.stats.reconnects >= 1
        assert (source.info.width, source.info.height) == (192, 144)
        indices = [f.index for f in before + after]
        assert indices == sorted(set(indices))                  # never repeats or goes back
        assert source.error is None
    finally:
        source.close()


def test_a_stalled_server_is_detected_and_then_given_up_on(servers, clips, tcp_port, caplog):
    server = servers(clips["small"], tcp_port)
    url = f"rtsp://viewer:op3nsesame@127.0.0.1:{tcp_port}/stream"
    source = open_source(url, open_timeout_s=1, read_timeout_s=1, max_backoff_s=0.5, give_up_after_s=2)
    try:
        assert all(source.read() is not None for _ in range(3))
        server.pause()
        paused_at = time.monotonic()
        while source.read() is not None:
            assert time.monotonic() - paused_at < 15
        elapsed = time.monotonic() - paused_at
    finally:
        source.close()
    # 1 s to notice the stall, then reconnect attempts (each timing out after 1 s) for 2 s.
    assert 2 <= elapsed < 14
    assert source.error.startswith(f"lost rtsp://***@127.0.0.1:{tcp_port}/stream: ")
    assert source.error.endswith("no answer within 1 s; gave up reconnecting after 2 s")
    assert "op3nsesame" not in source.error and "viewer" not in source.error
    assert "op3nsesame" not in caplog.text and "viewer" not in caplog.text
    assert "reconnecting in" in caplog.text


def test_close_unblocks_a_read_waiting_on_a_stalled_server(servers, clips, tcp_port):
    server = servers(clips["small"], tcp_port)
    source = open_source(f"rtsp://127.0.0.1:{tcp_port}/stream", open_timeout_s=5, read_timeout_s=10)
    assert source.read() is not None
    server.pause()
    time.sleep(0.3)   # let the frames already on their way arrive
    while source._latest is not None:   # take what is buffered so the next read() must wait
        source.read()
    results = []
    reader = threading.Thread(target=lambda: results.append(source.read()), daemon=True)
    reader.start()
    time.sleep(0.3)
    assert reader.is_alive()
    started = time.monotonic()
    source.close()
    reader.join(3)
    assert not reader.is_alive() and results == [None]
    assert time.monotonic() - started < 5   # not the 10 s read timeout


def test_network_sink_publishes_h264_to_an_rtsp_server(servers, tcp_port, tmp_path):
    received = tmp_path / "received.ts"
    servers(received, tcp_port, mode="record")
    sink = open_sink(f"rtsp://127.0.0.1:{tcp_port}/stream")
    assert isinstance(sink, NetworkSink)
    sink.open(SourceInfo(width=320, height=240, fps=25.0, time_base=Fraction(1, 25), live=True))
    for index in range(30):   # in real time, as a live publisher does
        image = frame_image(index)
        sink.write(Frame(image, index, time.monotonic(), index, Fraction(1, 25)), image)
        time.sleep(0.04)
    sink.close()   # TEARDOWN: the server finishes its file
    deadline, indices = time.monotonic() + 10, []
    while time.monotonic() < deadline and len(indices) < 30:
        time.sleep(0.2)
        try:
            with av.open(str(received)) as container:
                indices = [read_index(f.to_ndarray(format="bgr24")) for f in container.decode(video=0)]
        except (av.error.FFmpegError, OSError):
            continue
    assert indices == list(range(30))
