"""An RTSP server on 127.0.0.1 (TCP transport only) for the tests, built on GStreamer.

Run with the system Python, which has GStreamer's bindings (Debian packages python3-gi
gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,bad} gstreamer1.0-libav):
    /usr/bin/python3 tests/rtsp_server.py serve CLIP.mp4 PORT   # play an H.264 mp4 to clients
    /usr/bin/python3 tests/rtsp_server.py record OUT.ts PORT    # take a published H.264 stream
Both use the path /stream, and print "ready" once listening. When serving, every client
gets its own playback from the clip's start, in real time; tests use clips longer than they
read, and a client that reaches the end sees the stream end (UrlSource then reconnects).
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

mode, path, port = sys.argv[1:4]
Gst.init(None)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
if mode == "serve":
    factory.set_launch(f'( filesrc location="{path}" ! qtdemux ! h264parse config-interval=-1 '
                       '! rtph264pay name=pay0 pt=96 )')
else:
    factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
    factory.set_launch(f'( rtph264depay name=depay0 ! h264parse ! mpegtsmux '
                       f'! filesink location="{path}" buffer-mode=unbuffered )')

server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
server.get_mount_points().add_factory("/stream", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
print("ready", flush=True)
GLib.MainLoop().run()
