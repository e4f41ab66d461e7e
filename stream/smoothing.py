"""Temporal smoothing: One Euro filter for landmarks, EMA + hysteresis for masks.

The One Euro filter (Casiez et al., CHI 2012) is a low-pass filter whose
cutoff rises with speed: still faces get heavy smoothing (no jitter), moving
faces little (no lag). Landmarks are normalised by the face size first, so the
same `min_cutoff` / `beta` work for a face 80 px or 800 px wide.
"""
from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff_hz: float, dt: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Vectorised One Euro filter over an array of values (e.g. (468, 2) landmarks)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 20.0, d_cutoff: float = 1.0):
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.reset()

    def reset(self) -> None:
        self._x = None
        self._dx = None
        self._t = None

    def __call__(self, x: np.ndarray, t_s: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or self._x.shape != x.shape or t_s <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t_s
            return x.copy()
        dt = t_s - self._t
        self._t = t_s
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        tau = 1.0 / (2 * math.pi * cutoff)
        a = 1.0 / (1.0 + tau / dt)
        self._x = a * x + (1 - a) * self._x
        return self._x.copy()


class LandmarkSmoother:
    """One Euro filter on landmarks expressed relative to the face's size and centre.

    Normalising by the face size makes the tuning independent of resolution;
    the centre and size themselves are smoothed by a second filter so head
    motion is followed without lag.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 20.0):
        self.shape_filter = OneEuroFilter(min_cutoff, beta)
        self.pose_filter = OneEuroFilter(min_cutoff * 2, beta)

    def reset(self) -> None:
        self.shape_filter.reset()
        self.pose_filter.reset()

    def __call__(self, landmarks: np.ndarray, t_s: float) -> np.ndarray:
        lm = np.asarray(landmarks, np.float64)
        centre = lm.mean(0)
        size = max(float(np.ptp(lm[:, 0])), float(np.ptp(lm[:, 1])), 1.0)
        pose = self.pose_filter(np.array([centre[0] / size, centre[1] / size, np.log(size)]), t_s)
        size_s = math.exp(pose[2])
        centre_s = pose[:2] * size_s
        shape = self.shape_filter((lm - centre) / size, t_s)
        return (shape * size_s + centre_s).astype(np.float32)


class MaskSmoother:
    """EMA of a mask probability map (in the face-aligned crop) with hysteresis.

    Working in the aligned crop means the map is face-locked: the EMA removes
    flicker without smearing the mask when the head moves. Hysteresis keeps a
    pixel's state until the probability clearly crosses the other threshold.
    """

    def __init__(self, alpha: float = 0.5, on: float = 0.6, off: float = 0.4):
        self.alpha = alpha
        self.on = on
        self.off = off
        self.reset()

    def reset(self) -> None:
        self._p = None
        self._state = None

    def __call__(self, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """prob: (H, W) float in [0,1] -> (smoothed probability, boolean mask)."""
        prob = np.asarray(prob, np.float32)
        if self._p is None or self._p.shape != prob.shape:
            self._p = prob.copy()
            self._state = prob > 0.5
        else:
            self._p = self.alpha * prob + (1 - self.alpha) * self._p
            self._state = np.where(self._state, self._p > self.off, self._p > self.on)
        return self._p.copy(), self._state.copy()
