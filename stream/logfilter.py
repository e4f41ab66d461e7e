"""Keep native libraries' log chatter (mediapipe / TFLite / absl) off the user's terminal.

Those libraries write straight to file descriptor 2, bypassing Python. We point
Python's own `sys.stderr` at a duplicate of the real stderr (so our messages are
never delayed or lost), and route fd 2 through a pipe whose reader thread drops
lines that look like native INFO / WARNING logs and passes everything else on
(with URL credentials redacted). The reader never dies while fd 2 leads to its pipe (a
full pipe would block native code): a broken stderr makes fd 2 pass logs straight through.
"""
from __future__ import annotations

import atexit
import io
import os
import re
import select
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

    pump = threading.Thread(target=_pump, args=(read_end, real, fd), name="native-log-filter",
                            daemon=True)
    pump.start()
    atexit.register(_drain_at_exit, pump, real, fd)


def _drain_at_exit(pump: threading.Thread, real: int, fd: int) -> None:
    """At exit the daemon pump would be killed with lines still in its pipe: point fd 2 back at
    the real stderr (the pipe then ends) and give the pump a moment to pass on what is left."""
    try:
        os.dup2(real, fd)
    except OSError:
        return
    pump.join(timeout=2.0)


def _redacted(line: bytes) -> bytes:
    if b"://" not in line and b"=" not in line:
        return line
    from stream.errors import redact_url   # FFmpeg's messages may repeat a URL with its password
    return redact_url(line.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data`; a non-blocking fd that is full (EAGAIN) is waited for, not fatal."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


def _pump(read_end: int, real: int, fd: int) -> None:
    """Pass the non-log lines written to fd 2 on to the real stderr. It must never stop
    reading while fd 2 still leads to its pipe (native writers would block once it fills): if
    the real stderr breaks (a closed pipe), fd 2 is pointed straight at it (logs pass through,
    as without the filter) and the pipe is drained to its end."""
    passing = True
    with os.fdopen(read_end, "rb") as pipe:
        for line in pipe:
            if not passing or _NATIVE_LOG.match(line):
                continue
            try:
                try:
                    line = _redacted(line)
                except Exception:  # noqa: BLE001 - an odd line is passed as it is
                    pass
                _write_all(real, line)
            except OSError:
                passing = False
                try:
                    os.dup2(real, fd)   # no more filtering; the pipe ends once drained
                except OSError:
                    pass
