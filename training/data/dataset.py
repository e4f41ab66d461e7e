"""Training samples: cached canonical crops + synthetic coverings, made on the fly.

Samples are plain numpy dicts so the same code feeds training (PyTorch) and
evaluation (ONNX Runtime). Each split draws its own random stream; the val and
test streams are seeded per index, so a given test sample is the same every
time it is drawn (the evaluation is repeatable).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.spec import (ANALYSER, CANONICAL_SIZE, INPAINTER_PRESETS, TRAINING_HOLE_DILATE_PX, dilate_hole,
                         load_canonical_face, window_matrix)
from training.data.synth import MaskSynthesizer, augment, estimate_yaw

ROOT = Path(__file__).resolve().parents[2]
UNMASKED_SHARE = 0.12   # analyser samples shown without any covering
CACHE = ROOT / "data" / "cache"
RAW = ROOT / "data" / "raw"


class FaceCache:
    """The aligned crops of one split, decoded once into memory."""

    def __init__(self, split: str, cache: Path = CACHE, limit: int = 0, datasets=None):
        meta = np.load(cache / "meta.npz")
        sel = meta["split"] == split
        if datasets:
            sel &= np.isin(meta["dataset"], datasets)
        idx = np.flatnonzero(sel)
        if limit:
            idx = idx[:limit]
        self.keys = meta["keys"][idx]
        self.dataset = meta["dataset"][idx]
        self.gender = meta["gender"][idx].astype(np.int64)
        self.age = meta["age"][idx].astype(np.int64)
        self.landmarks = meta["landmarks"][idx]
        self.has_parsing = meta["has_parsing"][idx]
        self.matrix = meta["matrix"][idx] if "matrix" in meta else None
        self.source_hw = meta["source_hw"][idx] if "source_hw" in meta else None
        self.cache = cache
        self.images = [cv2.imread(str(cache / "crops" / f"{k}.jpg")) for k in self.keys]

    def __len__(self):
        return len(self.keys)

    def valid(self, i: int) -> np.ndarray | None:
        """(256, 256) bool: pixels of the crop that come from the photo (not border fill)."""
        if self.matrix is None:
            return None
        h, w = self.source_hw[i]
        ones = np.ones((int(h), int(w)), np.uint8)
        v = cv2.warpAffine(ones, self.matrix[i].astype(np.float64), (CANONICAL_SIZE, CANONICAL_SIZE),
                           flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return v > 0

    def parsing(self, i: int) -> np.ndarray | None:
        if not self.has_parsing[i]:
            return None
        return cv2.imread(str(self.cache / "parsing" / f"{self.keys[i]}.png"), cv2.IMREAD_GRAYSCALE)


class RealSegCache:
    """MaskedFace-Net photos with hand labels, aligned to the canonical crop (see realseg.py)."""

    def __init__(self, fold: str, cache: Path = CACHE):
        meta_path = cache / "realseg" / "meta.npz"
        if not meta_path.exists():
            self.images, self.masks = [], []
            return
        meta = np.load(meta_path)
        keys = meta["keys"][meta["fold"] == fold]
        self.keys = keys
        self.images = [cv2.imread(str(cache / "realseg" / f"{k}.jpg")) for k in keys]
        self.masks = [cv2.imread(str(cache / "realseg" / f"{k}_mask.png"), cv2.IMREAD_GRAYSCALE)
                      for k in keys]

    def __len__(self):
        return len(self.images)


class SampleMaker:
    def __init__(self, faces: FaceCache, templates: Path = RAW / "maskthefacetemplates",
                 train: bool = True, seed: int = 0):
        self.faces = faces
        self.synth = MaskSynthesizer(templates)
        self.train = train
        self.seed = seed

    def _rng(self, i: int, step: int):
        if self.train:
            return np.random.default_rng((self.seed, step, i))
        return np.random.default_rng((12345, i))

    def _with_background(self, i: int, rng) -> np.ndarray:
        """The crop, its border fill replaced by a random background half of the time.

        Tightly cropped photos leave part of the canonical crop outside the photo;
        a fixed fill there (mirrored or smeared pixels) is a shortcut the models
        learn and real frames never show.
        """
        crop = self.faces.images[i]
        if rng.random() < 0.5:
            return crop
        valid = self.faces.valid(i)
        if valid is None or valid.all():
            return crop
        small = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
        bg = cv2.resize(small, (CANONICAL_SIZE, CANONICAL_SIZE), interpolation=cv2.INTER_CUBIC)
        bg += cv2.GaussianBlur(rng.normal(0, 25, bg.shape).astype(np.float32), (0, 0), rng.uniform(1, 6))
        alpha = cv2.GaussianBlur(valid.astype(np.float32), (0, 0), 2)[..., None]
        return np.clip(crop * alpha + bg * (1 - alpha), 0, 255).astype(np.uint8)

    def analyser_sample(self, i: int, step: int = 0, kind: str | None = None) -> dict:
        """Masked crop at the analyser's input size with mask / gender / landmark targets."""
        rng = self._rng(i, step)
        size = ANALYSER["input_size"]
        s = size / CANONICAL_SIZE
        crop = cv2.resize(self._with_background(i, rng), (size, size), interpolation=cv2.INTER_AREA)
        lm = self.faces.landmarks[i] * s
        if self.train and rng.random() < 0.5:  # mirror: a free doubling of poses
            crop = crop[:, ::-1].copy()
            lm = _mirror_landmarks(lm, size)
        if kind is None and rng.random() < UNMASKED_SHARE:
            kind = "none"
        masked, alpha, kind = self.synth(crop, lm, rng, kind=kind)
        if self.train:
            masked, (alpha,), lm = augment(masked, [alpha], lm, rng)
        return dict(image=masked, mask=(alpha > 0.5).astype(np.float32), landmarks=lm / size,
                    gender=self.faces.gender[i], age=self.faces.age[i], kind=kind,
                    yaw=estimate_yaw(self.faces.landmarks[i]))

    def inpainter_sample(self, i: int, step: int = 0, preset: str = "fast",
                         kind: str | None = None) -> dict:
        """Lower-face window: masked input, hole, clean target, teacher landmarks (window px)."""
        rng = self._rng(i, step)
        size = INPAINTER_PRESETS[preset]["size"]
        m = window_matrix(size)
        crop = self._with_background(i, rng)
        lm = self.faces.landmarks[i]
        if self.train and rng.random() < 0.5:
            crop = crop[:, ::-1].copy()
            lm = _mirror_landmarks(lm, CANONICAL_SIZE)
        if self.train:  # small pose jitter so the window framing varies like tracked faces
            ang, sc, t = rng.normal(0, 4), rng.uniform(0.95, 1.05), rng.normal(0, 3, 2)
            r = cv2.getRotationMatrix2D((CANONICAL_SIZE / 2, CANONICAL_SIZE / 2), ang, sc)
            r[:, 2] += t
            m = m @ np.vstack([r, [0, 0, 1]])
        win = cv2.warpAffine(crop, m, (size, size), flags=cv2.INTER_AREA,
                             borderMode=cv2.BORDER_REFLECT)
        lm_w = lm @ m[:, :2].T + m[:, 2]
        masked, alpha, kind = self.synth(win, lm_w, rng, kind=kind)
        # The hole: the covering, grown by the hole rule (with training's margin: models.spec).
        hole = dilate_hole((alpha > 0.5).astype(np.uint8), size, TRAINING_HOLE_DILATE_PX)
        target = win
        if self.train and rng.random() < 0.5:  # photometric only; same on input and target
            gain = rng.uniform(0.6, 1.2) * rng.uniform(0.93, 1.07, 3)
            target = np.clip(target.astype(np.float32) * gain, 0, 255).astype(np.uint8)
            masked = np.clip(masked.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        return dict(image=masked, hole=hole.astype(np.float32), target=target,
                    landmarks=lm_w.astype(np.float32), gender=self.faces.gender[i],
                    age=self.faces.age[i], kind=kind, yaw=estimate_yaw(self.faces.landmarks[i]),
                    index=i, matrix=m)


# Mirror pairs of the 468-point mesh are found geometrically from the canonical shape.
_MIRROR = None


def mirror_index() -> np.ndarray:
    global _MIRROR
    if _MIRROR is None:
        canon = load_canonical_face()
        flipped = canon.copy()
        flipped[:, 0] = CANONICAL_SIZE - flipped[:, 0]
        d = ((canon[:, None] - flipped[None]) ** 2).sum(-1)
        _MIRROR = d.argmin(0)
    return _MIRROR


def _mirror_landmarks(lm: np.ndarray, size: int) -> np.ndarray:
    out = lm[mirror_index()].copy()
    out[:, 0] = size - out[:, 0]
    return out
