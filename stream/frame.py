"""The per-frame data object passed between pipeline stages."""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


@dataclass
class Frame:
    """One decoded video frame and where it came from.

    `pts` / `time_base` are the source's own presentation timestamp (kept so an
    offline output file carries exactly the input's timestamps); `capture_time`
    is `time.monotonic()` when the frame entered the process, for latency.
    """

    image: np.ndarray                   # H x W x 3 uint8 BGR
    index: int                          # 0-based position in the source's frame sequence
    capture_time: float                 # time.monotonic() at capture
    pts: int | None = None              # source pts in `time_base` units (None: unknown)
    time_base: Fraction | None = None   # seconds per pts unit
    stages: dict[str, float] = field(default_factory=dict)  # stage name -> ms spent on this frame

    @property
    def timestamp_s(self) -> float | None:
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.image.shape[1], self.image.shape[0]
