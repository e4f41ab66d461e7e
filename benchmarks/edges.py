"""Edge cases of the hole, generated with known truth: a 1080p face with a solid-colour covering
(the fringe measure) and a covering that spreads over the eyes (the eye-region check).

`fringe_case()` -> (frame, truth): scikit-image's public-domain astronaut wearing the MIT
MaskTheFace surgical template recoloured teal (shaded by the face), scaled 2x into a 1920x1080
frame. `OracleSegmentation(truth, short_px)` is an analyser stage that returns that truth as a 128 px
network would see it (area-averaged into its crop), `short_px` crop pixels short of the true edge
(a network that misses the covering's border); `oracle_unmasker` pairs it with OpenCV's Telea as the
reconstructor (it propagates whatever colour is left at the hole's border inward, so a missed edge
shows).
`fringe(out, truth)`: the share of a ring of `ring` px around the true edge that is still
covering-coloured.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from benchmarks.clips import ANCHORS, _astronaut, _astronaut_landmarks, _load_template
from models.spec import ANALYSER
from stream.analyser import LowerFaceAnalyser
from stream.compositing import CpuCompositor
from stream.reconstruct import TeleaReconstructor
from stream.stages import FaceAnalysis

TEAL = np.array([128, 128, 0], np.float32)        # BGR
TEAL_HUE = 90                                      # OpenCV hue (0-180) of TEAL


@functools.lru_cache(maxsize=1)
def _covering() -> np.ndarray:
    """(512, 512) float32 alpha of the surgical template on the astronaut."""
    lm = _astronaut_landmarks()
    rgba, anchors = _load_template()
    dst = np.float64([lm[ANCHORS[k]].mean(0) for k in "abcdef"])
    hom, _ = cv2.findHomography(anchors, dst)
    h, w = _astronaut().shape[:2]
    a = cv2.warpPerspective(rgba[..., 3].astype(np.float32) / 255.0, hom, (w, h), flags=cv2.INTER_LINEAR)
    return np.clip(a, 0, 1)


def fringe_case(size=(1920, 1080)) -> tuple[np.ndarray, np.ndarray]:
    """(BGR frame, bool truth) of the teal-covered astronaut, 2x, centred in a `size` frame."""
    img = _astronaut().astype(np.float32)
    a = _covering()[..., None]
    shade = img.mean(2, keepdims=True) / 128.0
    img = img * (1 - a) + np.clip(TEAL * (0.6 + 0.4 * shade), 0, 255) * a
    side = min(size[1] - 56, 1024)
    big = cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC)
    g = cv2.resize(a[..., 0], (side, side), interpolation=cv2.INTER_LINEAR) > 0.5
    w, h = size
    x0, y0 = (w - side) // 2, (h - side) // 2
    frame = np.full((h, w, 3), 90, np.float32)
    truth = np.zeros((h, w), bool)
    frame[y0:y0 + side, x0:x0 + side] = big
    truth[y0:y0 + side, x0:x0 + side] = g
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8), truth


class OracleSegmentation(LowerFaceAnalyser):
    """Analyser: the true covering at the analyser's resolution, `short_px` crop pixels short of it,
    or covering everything (`everything=True`: a hand over the whole face)."""

    name = "oracle"

    def __init__(self, truth: np.ndarray | None = None, short_px: int = 0, everything: bool = False):
        self.truth = None if truth is None else truth.astype(np.float32)
        self.short_px = short_px
        self.everything = everything

    def analyse(self, image, faces):
        s = ANALYSER["input_size"]
        out = []
        for f in faces:
            if self.everything:
                prob = np.ones((s, s), np.float32)
            else:
                m = f.alignment.matrix * (s / f.alignment.size)
                px = 1 / np.sqrt(abs(np.linalg.det(m[:, :2])))           # frame px per crop px
                prob = cv2.warpAffine(cv2.GaussianBlur(self.truth, (0, 0), px / 2), m, (s, s),
                                      flags=cv2.INTER_LINEAR)
                if self.short_px:
                    k = 2 * self.short_px + 1
                    prob = cv2.erode(prob, np.ones((k, k), np.uint8))
            out.append(FaceAnalysis(prob, 0.5, f.alignment.to_crop(f.landmarks)))
        return out


def oracle_unmasker(segmentation: OracleSegmentation, **kwargs):
    """An Unmasker whose analyser is `segmentation` and whose reconstructor is Telea."""
    from stream.unmasker import Unmasker
    return Unmasker(analyser=segmentation, compositor=CpuCompositor(TeleaReconstructor()), **kwargs)


def covering_coloured(image: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.int32)
    return (np.abs(hsv[..., 0] - TEAL_HUE) < 12) & (hsv[..., 1] > 80) & (hsv[..., 2] > 30)


def fringe(out: np.ndarray, truth: np.ndarray, ring: int = 10) -> float:
    """Share of the pixels within `ring` px of the true covering's edge still covering-coloured."""
    k = np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)
    t = truth.astype(np.uint8)
    band = (cv2.dilate(t, k) > 0) & ~(cv2.erode(t, k) > 0)
    return float((covering_coloured(out) & band).sum() / max(band.sum(), 1))
