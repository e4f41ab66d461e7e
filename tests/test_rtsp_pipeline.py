"""The whole pipeline against a real RTSP camera on 127.0.0.1 that dies and comes back."""
from __future__ import annotations

import threading
import time

import pytest

from stream import Unmasker
from stream.pipeline import Pipeline
from stream.sources import open_source
from tests.faces import make_face_clip
from tests.test_rtsp import RtspServer, gstreamer_rtsp_server_available  # noqa: F401 (skips without GStreamer)


class CountingSink:
    def __init__(self):
        self.frames, self.faces, self.closed = 0, 0, False

    def open(self, info):
        pass

    def write(self, frame, image):
        self.frames += 1

    def close(self):
        self.closed = True


def wait_for(condition, timeout_s):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_live_pipeline_reconnects_after_the_camera_restarts_and_keeps_going(tmp_path, tcp_port):
    clip = make_face_clip(tmp_path / "cam.mp4", n=600, audio=False)    # 24 s of a masked face
    url = f"rtsp://cam:pa55word@127.0.0.1:{tcp_port}/stream"
    server = RtspServer("serve", clip, tcp_port).start()
    sink, faces = CountingSink(), []
    try:
        source = open_source(url, open_timeout_s=10, read_timeout_s=3, max_backoff_s=1,
                             give_up_after_s=30)
        assert source.info.live
        pipe = Pipeline(source, [sink], lambda: Unmasker(method="classical"),
                        on_frame=lambda f, r: faces.append(len(r.faces)))
        result = {}
        runner = threading.Thread(target=lambda: result.setdefault("stats", pipe.run()), daemon=True)
        runner.start()
        assert wait_for(lambda: sink.frames >= 10, 30), "no frames from the camera"
        server.stop()                                   # the camera dies mid-stream…
        before = sink.frames
        time.sleep(1.0)
        server = RtspServer("serve", clip, tcp_port).start()   # …and comes back
        assert wait_for(lambda: sink.frames >= before + 10, 40), "the pipeline did not resume"
        pipe.stop("test")
        runner.join(20)
        assert not runner.is_alive(), "pipeline hung on shutdown"
        stats = result["stats"]
        assert stats.reconnects >= 1
        assert stats.mode == "live" and sink.closed
        assert stats.frames_out == sink.frames >= before + 10
        assert sum(faces) > 0.8 * len(faces)            # the face is found in the streamed frames
    finally:
        server.stop()
