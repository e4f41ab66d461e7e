"""stream.logfilter: the thread that keeps native logs off the terminal must never hang or kill
the process, whatever happens to the real stderr."""
from __future__ import annotations

import os
import selectors
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Stands in for native code (glog, FFmpeg): writes straight to fd 2 and ignores write errors.
CHILD = r"""
import os, sys
sys.path.insert(0, {root!r})
from stream.logfilter import filter_native_stderr
filter_native_stderr()
native = b"W0000 00:00:1795991802.918422  18835 file.cc:186] chatter\n" * 20
other = b"a message the user should see " * 10 + b"\n"
for i in range(4000):                     # about 1 MB each: far more than a pipe holds
    for chunk in (native, other):
        try:
            os.write(2, chunk)
        except OSError:
            pass
print("finished", flush=True)
"""


def run_child(close_stderr: bool, timeout_s: float = 60.0) -> tuple[int | None, str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if close_stderr:
        proc.stderr.close()          # the reader went away: writes to it fail with EPIPE
    output = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if selector.select(timeout_s):
            output = proc.stdout.readline()
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    proc.stdout.close()
    if not close_stderr:
        proc.stderr.close()
    return code, output.decode()


def test_a_closed_stderr_neither_kills_the_filter_nor_hangs_the_process():
    code, output = run_child(close_stderr=True)
    assert output.strip() == "finished" and code == 0


def test_a_full_non_blocking_stderr_delays_messages_but_loses_none():
    # Some parents hand over a non-blocking pipe (O_NONBLOCK is shared with the child): once it
    # is full, a write fails with EAGAIN. The filter must wait for the reader, not die (and
    # then lose every later message).
    import fcntl
    import time
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT))],
                            stdout=subprocess.PIPE, stderr=write_end)
    os.close(write_end)
    try:
        time.sleep(2.0)                   # nobody reads: the pipe fills
        with os.fdopen(read_end, "rb") as reader:
            received = reader.read()      # now read everything, to the end
        assert proc.stdout.read().decode().strip() == "finished" and proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.stdout.close()
    assert received.count(b"a message the user should see " * 10 + b"\n") == 4000
    assert b"chatter" not in received


def test_passed_lines_are_redacted_and_native_lines_dropped():
    child = r"""
import os, sys
sys.path.insert(0, {root!r})
from stream.logfilter import filter_native_stderr
filter_native_stderr()
os.write(2, b"I0000 00:00:1795991802.918422  18835 file.cc:186] dropped\n")
os.write(2, b"[rtsp @ 0x1] cannot open rtsp://alice:p@ss@cam/x?token=T0KEN\n")
sys.stderr.write("python line\n")
"""
    proc = subprocess.run([sys.executable, "-c", child.format(root=str(ROOT))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "dropped" not in proc.stderr and "python line" in proc.stderr
    assert "rtsp://***@cam/x?token=***" in proc.stderr
    assert "p@ss" not in proc.stderr and "T0KEN" not in proc.stderr


def test_the_cli_log_handler_follows_stderr_and_is_never_doubled(monkeypatch):
    # An embedding program (or a test) that replaces stderr, then closes the old one, must not get
    # "--- Logging error ---" from the CLI's handler; running main() twice must not print twice.
    import io
    import logging
    import run_stream
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        first = io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        run_stream.configure_logging(False)
        run_stream.configure_logging(False)
        ours = [h for h in root.handlers if h not in before]
        assert len(ours) == 1
        first.close()
        second = io.StringIO()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("stream.sources").warning("rtsp://alice:pw@cam/x: reconnecting in 1.0 s")
        assert second.getvalue() == "warning: rtsp://***@cam/x: reconnecting in 1.0 s\n"
    finally:
        for h in [h for h in root.handlers if h not in before]:
            root.removeHandler(h)
        root.setLevel(level)
