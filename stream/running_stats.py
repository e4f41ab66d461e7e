"""Bounded statistics for runs of any length.

A pipeline left running for a month sees ~80 million frames: keeping every latency to
compute percentiles would grow without end. `RunningStats` keeps the count, sum, min and max
exactly and a fixed-size uniform sample (reservoir sampling, Vitter's algorithm R) for
percentiles: exact until `capacity` values, approximate after (a 4096-sample reservoir puts
p95 within a fraction of a percentile point).
"""
from __future__ import annotations

import random

import numpy as np

DEFAULT_CAPACITY = 4096


class RunningStats:
    def __init__(self, capacity: int | None = None, seed: int = 0):
        self._reservoir = np.empty(capacity or DEFAULT_CAPACITY, np.float64)
        self._random = random.Random(seed)   # seeded: the same run gives the same percentiles
        self.count = 0
        self.total = 0.0
        self.min: float | None = None
        self.max: float | None = None
        self.last: float | None = None

    def add(self, value: float) -> None:
        value = float(value)
        capacity = len(self._reservoir)
        if self.count < capacity:
            self._reservoir[self.count] = value
        else:
            slot = self._random.randrange(self.count + 1)   # keep it with probability capacity/n
            if slot < capacity:
                self._reservoir[slot] = value
        self.count += 1
        self.total += value
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)
        self.last = value

    def samples(self) -> np.ndarray:
        return self._reservoir[:min(self.count, len(self._reservoir))]

    @property
    def nbytes(self) -> int:
        return self._reservoir.nbytes

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.samples(), q)) if self.count else None
