"""Keep native libraries' log chatter (mediapipe / TFLite / absl) off the user's terminal.

Those libraries write straight to file descriptor 2, bypassing Python. We point
Python's own `sys.stderr` at a duplicate of the real stderr (so our messages are
never delayed or lost), and route fd 2 through a pipe whose reader thread drops
lines that look like native INFO / WARNING logs and passes everything else on.
"""
from __future__ import annotations

import io
import os
import re
import sys
import threading

# absl / glog lines look like "W0000 00:00:1795991802.918422  18835 file.cc:186] ...".
_NATIVE_LOG = re.compile(rb"^(?:[IW]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w.]+:\d+\]|INFO: |WARNING: All log messages before absl)")
_installed = False


def filter_native_stderr() -> None:
    global _installed
    if _installed:
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return
    _installed = True
    sys.stderr.flush()
    real = os.dup(fd)
    sys.stderr = io.TextIOWrapper(os.fdopen(real, "wb", buffering=0), write_through=True,
                                  encoding=sys.stderr.encoding or "utf-8", errors="replace")
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    os.close(write_end)

    def pump():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not _NATIVE_LOG.match(line):
                    os.write(real, line)

    threading.Thread(target=pump, name="native-log-filter", daemon=True).start()
