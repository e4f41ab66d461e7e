"""Keep frames flowing while a remote inference server is away.

`PassThroughOnOutage(unmasker)` has the unmasker's `process` API. When a model call fails because the
server did not answer (`engines.triton_runner.ServerUnavailable`: stopped, restarting, unreachable),
the frame is returned as it came in (no faces reconstructed) and counted in `passed_through`; the
runner reconnects by itself, so reconstruction resumes with the first call that succeeds. Tracking
and smoothing state stays with the wrapped unmasker, so tracks survive a short outage.
"""
from __future__ import annotations

import logging

from engines.triton_runner import ServerUnavailable

log = logging.getLogger("unmask.outage")


class PassThroughOnOutage:
    def __init__(self, unmasker):
        self.unmasker = unmasker
        self.passed_through = 0      # frames returned unreconstructed because the server was away
        self.outages = 0             # times the server went away (reconstruction stopped)
        self._down = False

    def __getattr__(self, name):     # backend, method, reset, ... of the wrapped unmasker
        return getattr(self.unmasker, name)

    def process(self, frame_bgr, timestamp_ms=None):
        from stream.unmasker import Result
        try:
            res = self.unmasker.process(frame_bgr, timestamp_ms=timestamp_ms)
        except ServerUnavailable as exc:
            if not self._down:
                self.outages += 1
                log.warning("%s: passing frames through until it is back", exc)
            self._down = True
            self.passed_through += 1
            return Result(frame_bgr.copy(), [], {})
        if self._down:
            log.warning("inference server back: reconstruction resumed")
            self._down = False
        return res

    def close(self):
        self.unmasker.close()
