"""Serve an H.264 mp4 over RTSP (TCP only) on 127.0.0.1, looping, for the tests.

Run with the system Python, which has GStreamer's bindings (Debian packages
python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,bad}):
    /usr/bin/python3 tests/rtsp_server.py CLIP.mp4 PORT [/path]
Prints "ready" once it listens. Every client gets its own pipeline from the clip's start.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

clip, port = sys.argv[1], sys.argv[2]
mount = sys.argv[3] if len(sys.argv) > 3 else "/stream"
Gst.init(None)

factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(f'( filesrc location="{clip}" ! qtdemux ! h264parse config-interval=-1 '
                   '! rtph264pay name=pay0 pt=96 )')
factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)

server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
server.get_mount_points().add_factory(mount, factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
print("ready", flush=True)
GLib.MainLoop().run()
