"""Skin-tone correction of the generated lower face: a fitted shift of the hole's mean CIELAB colour.

The inpainter's fill is off in colour by CIEDE2000 ~4.6 on real faces (issue 12 §3): pinkish, the
darkest skin lighter and the lightest darker, because its training data and capacity are small. The
visible skin around the hole says what the hole's colour should be, so a ridge regression from it
(fitted on the training split by `python -m training.fit_colour`, checked on the held-out real split)
predicts how far the generated hole's mean Lab colour is from the truth, and that shift is added to
every hole pixel in Lab. Pixels outside the hole keep their exact values (the inpainter's contract).

Features (each a Lab triple, OpenCV's float Lab: L 0..100, a/b about -128..127), per face:

* the mean and the (lower) median of the visible window pixels in rings 3, 6, 12 and 24 px around
  the hole (square dilation), of all visible pixels and of the visible top third (cheeks below
  the eyes); a ring under 10 px falls back to all visible pixels;
* the mean and median of the generated fill inside the hole.

Medians make it robust to pieces of covering, beard or background left in a ring. The numpy path
(`ColourCorrection.correct`) and the torch path (`ColourCorrection.correct_torch`, the GPU
compositor) compute the same features: square dilation = max-pooling, the lower median = torch's
median, and Lab from the same sRGB / D65 formulas as OpenCV (parity tested).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.spec import WEIGHTS_DIR

RING_PX = (3, 6, 12, 24)
REGIONS = tuple(f"ring{r}" for r in RING_PX) + ("visible", "top_third")
FEATURES = tuple(f"{stat}_{region}" for region in REGIONS for stat in ("mean", "median")) + (
    "mean_generated", "median_generated")
MIN_REGION_PX = 10      # a ring with fewer visible pixels (a hole reaching the window's edge) uses all visible ones


def colour_path(inpainter: str | Path) -> Path:
    """Where an inpainter's fitted correction lives: beside its .onnx, `<name>_colour.json`."""
    p = Path(inpainter)
    if p.suffix != ".onnx":
        p = WEIGHTS_DIR / f"{p.name}.onnx"
    return p.with_name(f"{p.stem}_colour.json")


def file_sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _region_masks(holes: np.ndarray) -> list[np.ndarray]:
    """(N, S, S) bool holes -> the REGIONS' (N, S, S) bool masks, in order."""
    n, size = holes.shape[0], holes.shape[-1]
    inside = holes.astype(np.uint8)
    visible = ~holes
    out = []
    for r in RING_PX:
        kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
        out.append(np.stack([cv2.dilate(h, kernel) > 0 for h in inside]) & visible)
    top = np.zeros_like(visible)
    top[:, : size // 3] = True
    return out + [visible, top & visible]


def _lower_median(values: np.ndarray) -> np.ndarray:
    """Median of (P, 3) values; for an even count the lower middle one (as torch.median)."""
    return np.sort(values, axis=0)[(len(values) - 1) // 2]


def lab_features(windows_lab: np.ndarray, generated_lab: np.ndarray, holes: np.ndarray) -> list:
    """Per face: its (len(FEATURES) * 3,) float64 features, or None with too little visible skin or no hole."""
    regions = _region_masks(holes)
    rows = []
    for i in range(len(holes)):
        visible = regions[len(RING_PX)][i]
        if visible.sum() < MIN_REGION_PX or holes[i].sum() < 1:
            rows.append(None)
            continue
        row = []
        for mask in regions:
            m = mask[i] if mask[i].sum() >= MIN_REGION_PX else visible
            px = windows_lab[i][m]
            row += [px.mean(0), _lower_median(px)]
        px = generated_lab[i][holes[i]]
        row += [px.mean(0), _lower_median(px)]
        rows.append(np.concatenate(row).astype(np.float64))
    return rows


def bgr_to_lab(images: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 BGR -> float32 Lab (OpenCV's float conversion)."""
    flat = images.reshape(-1, images.shape[-2], 3).astype(np.float32) * (1 / 255.0)
    return cv2.cvtColor(flat, cv2.COLOR_BGR2Lab).reshape(images.shape)


@dataclass(frozen=True)
class ColourCorrection:
    """shift (Lab) = [features, 1] @ weights; weights (len(FEATURES) * 3 + 1, 3)."""

    weights: np.ndarray
    provenance: dict

    @classmethod
    def for_inpainter(cls, inpainter: str | Path) -> "ColourCorrection | None":
        """The correction fitted on this inpainter's outputs (`inpainter`: a name in models/weights or
        an .onnx path), or None when there is none, or when it was fitted on another checkpoint (a
        retrained inpainter runs uncorrected, with a warning, until `training.fit_colour` is rerun)."""
        path = colour_path(inpainter)
        if not path.exists():
            return None
        onnx = path.with_name(path.name.replace("_colour.json", ".onnx"))
        correction = cls.load(path)
        if onnx.exists() and correction.provenance.get("inpainter_sha256") != file_sha256(onnx):
            import logging
            logging.getLogger(__name__).warning(
                "%s was fitted on another %s: no colour correction (refit: python -m training.fit_colour)",
                path.name, onnx.name)
            return None
        return correction

    @classmethod
    def load(cls, path: Path) -> "ColourCorrection":
        spec = json.loads(Path(path).read_text())
        if tuple(spec["features"]) != FEATURES or tuple(spec["ring_px"]) != RING_PX:
            raise ValueError(f"{path}: fitted for other features than models.colour computes; refit it "
                             "(python -m training.fit_colour)")
        weights = np.asarray(spec["weights"], np.float64)
        if weights.shape != (len(FEATURES) * 3 + 1, 3):
            raise ValueError(f"{path}: weights must be {(len(FEATURES) * 3 + 1, 3)}, got {weights.shape}")
        return cls(weights, {k: v for k, v in spec.items() if k != "weights"})

    def shifts(self, features: list) -> np.ndarray:
        """(N, 3) Lab shifts; 0 for a face without features."""
        out = np.zeros((len(features), 3))
        for i, f in enumerate(features):
            if f is not None:
                out[i] = np.append(f, 1.0) @ self.weights
        return out

    def correct(self, windows: np.ndarray, holes: np.ndarray, generated: np.ndarray) -> np.ndarray:
        """Colour-corrected copies of the (N, S, S, 3) uint8 generated windows: every pixel of the
        (N, S, S) hole (> 0.5) shifted in Lab; the others unchanged."""
        inside = holes > 0.5
        # Float Lab costs ~1 ms per 128 px window on one core: the fill is converted on its hole only.
        gen_lab = np.zeros(generated.shape, np.float32)
        for i in np.flatnonzero(inside.any(axis=(1, 2))):
            gen_lab[i][inside[i]] = bgr_to_lab(generated[i][inside[i]][:, None])[:, 0]
        shifts = self.shifts(lab_features(bgr_to_lab(windows), gen_lab, inside))
        out = generated.copy()
        for i, shift in enumerate(shifts):
            if not inside[i].any() or not shift.any():
                continue
            lab = gen_lab[i][inside[i]] + shift.astype(np.float32)
            bgr = cv2.cvtColor(lab[:, None], cv2.COLOR_Lab2BGR)[:, 0] * 255.0
            out[i][inside[i]] = np.clip(bgr + 0.5, 0, 255).astype(np.uint8)
        return out

    # -- torch (the GPU compositor) ------------------------------------------------------------

    def correct_torch(self, windows, holes, generated):
        """As `correct`, on (N, 3, S, S) float tensors in 0..255 (BGR; holes (N, 1, S, S)); returns
        float 0..255 tensors. Runs on any torch device, batched over faces."""
        import torch
        import torch.nn.functional as F

        inside = holes > 0.5
        visible = ~inside
        win_lab, gen_lab = lab_from_bgr_torch(windows), lab_from_bgr_torch(generated)
        masks = []
        for r in RING_PX:
            ring = F.max_pool2d(inside.float(), 2 * r + 1, stride=1, padding=r) > 0.5
            masks.append(ring & visible)
        top = torch.zeros_like(visible)
        top[..., : windows.shape[-2] // 3, :] = True
        masks += [visible, top & visible]
        n_visible = visible.flatten(1).sum(1)
        feats = []

        def stats(lab, mask):
            flat = lab.flatten(2)                                       # (N, 3, P)
            m = mask.flatten(2).expand_as(flat)
            count = m[:, :1].sum(-1).clamp(min=1)                       # (N, 1)
            mean = torch.where(m, flat, 0).sum(-1) / count
            median = torch.where(m, flat, torch.nan).nanmedian(-1).values
            return mean, median

        for mask in masks:
            small = mask.flatten(1).sum(1) < MIN_REGION_PX
            mask = torch.where(small[:, None, None, None], visible, mask)
            feats += list(stats(win_lab, mask))
        feats += list(stats(gen_lab, inside))
        x = torch.cat(feats + [torch.ones_like(feats[0][:, :1])], 1).double()
        w = torch.as_tensor(self.weights, device=x.device)
        usable = (n_visible >= MIN_REGION_PX) & (inside.flatten(1).sum(1) >= 1)
        shift = torch.where(usable[:, None], torch.nan_to_num(x) @ w, 0).float()
        lab = gen_lab + shift[:, :, None, None] * inside
        return torch.where(inside, bgr_from_lab_torch(lab).clamp(0, 255), generated)


# OpenCV's float BGR <-> Lab (sRGB companding, D65 white), so both paths compute the same Lab.
_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])
_WHITE = np.array([0.950456, 1.0, 1.088754])
_EPS, _KAPPA = 0.008856, 903.3


def lab_from_bgr_torch(bgr):
    """(N, 3, H, W) BGR 0..255 -> Lab (as cv2.COLOR_BGR2Lab on float images)."""
    import torch

    c = bgr.flip(1) * (1 / 255.0)
    lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = torch.as_tensor(_RGB_TO_XYZ / _WHITE[:, None], dtype=bgr.dtype, device=bgr.device)
    xyz = torch.einsum("ij,njhw->nihw", m, lin)
    f = torch.where(xyz > _EPS, xyz.clamp(min=1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    y = xyz[:, 1]
    L = torch.where(y > _EPS, 116 * f[:, 1] - 16, _KAPPA * y)
    return torch.stack([L, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def bgr_from_lab_torch(lab):
    """(N, 3, H, W) Lab -> BGR 0..255 (as cv2.COLOR_Lab2BGR on float images, before clipping)."""
    import torch

    L, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    y = torch.where(L <= _KAPPA * _EPS, L / _KAPPA, ((L + 16) / 116) ** 3)
    fy = torch.where(y > _EPS, y.clamp(min=1e-12) ** (1 / 3), 7.787 * y + 16 / 116)
    fx, fz = fy + a / 500, fy - b / 200

    def finv(f):
        return torch.where(f ** 3 > _EPS, f ** 3, (f - 16 / 116) / 7.787)

    xyz = torch.stack([finv(fx), y, finv(fz)], 1)
    m = torch.as_tensor(np.linalg.inv(_RGB_TO_XYZ / _WHITE[:, None]), dtype=lab.dtype, device=lab.device)
    lin = torch.einsum("ij,njhw->nihw", m, xyz).clamp(0, 1)
    c = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin.clamp(min=1e-12) ** (1 / 2.4) - 0.055)
    return c.flip(1) * 255.0
