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

Rings are measured at the window's resolution; the statistics are taken on every second pixel of
every second row (SAMPLE_STRIDE: a quarter of the pixels, the same means and medians within noise,
a quarter of the cost: this runs per face per frame). Medians make it robust to pieces of covering, beard or background left in a ring. The numpy path
(`ColourCorrection.correct`) and the torch path (`ColourCorrection.correct_torch`, the GPU
compositor) compute the same features: square dilation = max-pooling, the lower median = torch's
median, and Lab from the same sRGB / D65 formulas as OpenCV (parity tested).
"""
from __future__ import annotations

import functools
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
MIN_REGION_PX = 10      # a ring with fewer sampled pixels (a hole reaching the window's edge) uses all visible ones
SAMPLE_STRIDE = 2       # statistics on pixels [::2, ::2]


# The own-face path's render (stream.reference) gets its own fit (`training.fit_colour --path own-face`):
# the relighting there already matches the hole's border, so its shift ramps in over RAMP_PX from the
# border (no new step there) and is stronger inside to move the hole's mean as much.
REFERENCE_COLOUR_PATH = WEIGHTS_DIR / "reference_colour.json"
RAMP_PX = 4
MIN_RAMP_MEAN = 0.3      # a thin hole (mostly ramp) is not pushed more than 1 / 0.3 x inside


def colour_path(inpainter: str | Path) -> Path:
    """Where an inpainter's fitted correction lives: beside its .onnx, `<name>_colour.json`."""
    p = Path(inpainter)
    if p.suffix != ".onnx":
        p = WEIGHTS_DIR / f"{p.name}.onnx"
    return p.with_name(f"{p.stem}_colour.json")


def file_sha256(path: Path) -> str:
    """The file's sha256, hashed once per version of the file (every Unmasker checks its weights' ties:
    many streams would otherwise hash the same megabytes again)."""
    st = Path(path).stat()
    return _sha256_of(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _mean_and_lower_median(px: np.ndarray) -> list[np.ndarray]:
    """Mean and median of (3, P) values; for an even count the lower middle one (as torch.median)."""
    k = (px.shape[1] - 1) // 2
    return [px.mean(1, dtype=np.float64), np.partition(px, k, axis=1)[:, k].astype(np.float64)]


def _sampled(a: np.ndarray) -> np.ndarray:
    return a[:: SAMPLE_STRIDE, :: SAMPLE_STRIDE]


def face_features(window_lab: np.ndarray, hole: np.ndarray, fill_lab: np.ndarray) -> np.ndarray | None:
    """One face's (len(FEATURES) * 3,) float64 features, or None with too little visible skin or no hole.

    window_lab: the window's Lab on the sampled grid (window[::2, ::2]); hole: (S, S) bool at the
    window's resolution; fill_lab: (n, 3) the fill's Lab on the hole's pixels (row-major order).
    """
    visible = ~hole
    if len(fill_lab) < 1:
        return None
    # A ring of r px (square dilation of the hole) = the visible pixels within chessboard distance r
    # of it: one distance transform, then one sort by distance makes every ring a prefix of the same
    # sampled array; channels first keeps the reductions contiguous.
    dist = _sampled(cv2.distanceTransform(visible.astype(np.uint8), cv2.DIST_C, 3))
    seen = _sampled(visible)
    if np.count_nonzero(seen) < MIN_REGION_PX:
        return None
    channels = np.ascontiguousarray(window_lab.transpose(2, 0, 1))
    px = channels[:, seen]
    top = np.zeros_like(seen)
    top[: -(-(hole.shape[0] // 3) // SAMPLE_STRIDE)] = True      # the sampled rows above S // 3
    top_px = channels[:, top & seen]
    dist = dist[seen]
    order = np.argsort(dist, kind="stable")
    by_distance, dist = px[:, order], dist[order]
    feats = []
    for r in RING_PX:
        n = int(np.searchsorted(dist, r, side="right"))
        feats += _mean_and_lower_median(by_distance[:, :n] if n >= MIN_REGION_PX else px)
    feats += _mean_and_lower_median(px)
    feats += _mean_and_lower_median(top_px if top_px.shape[1] >= MIN_REGION_PX else px)
    on_grid = np.zeros_like(hole)
    _sampled(on_grid)[:] = True
    fill = fill_lab[on_grid[hole]]
    feats += _mean_and_lower_median(np.ascontiguousarray((fill if len(fill) else fill_lab).T))
    return np.concatenate(feats)


def lab_features(windows_lab: np.ndarray, generated_lab: np.ndarray, holes: np.ndarray) -> list:
    """Per face (windows and fills (N, S, S, 3) Lab at full resolution, holes (N, S, S) bool):
    face_features or None."""
    return [face_features(_sampled(w), h, g[h]) for w, g, h in zip(windows_lab, generated_lab, holes)]


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
        correction = cls.load(path)
        # The checkpoint's files beside it (the .onnx for the runners, the .pt for the torch path;
        # a folder may hold either) must be the ones it was fitted on.
        stem = path.name[: -len("_colour.json")]
        for suffix, key in ((".onnx", "inpainter_sha256"), (".pt", "state_dict_sha256")):
            weights = path.with_name(stem + suffix)
            if weights.exists() and correction.provenance.get(key) != file_sha256(weights):
                import logging
                logging.getLogger(__name__).warning(
                    "%s was fitted on another %s: no colour correction (refit: python -m training.fit_colour)",
                    path.name, weights.name)
                return None
        return correction

    @classmethod
    def load(cls, path: Path) -> "ColourCorrection":
        spec = json.loads(Path(path).read_text())
        if (tuple(spec["features"]) != FEATURES or tuple(spec["ring_px"]) != RING_PX
                or spec.get("sample_stride") != SAMPLE_STRIDE):
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

    @classmethod
    def for_reference(cls, path: Path = REFERENCE_COLOUR_PATH) -> "ColourCorrection | None":
        """The own-face render's correction, or None when none is shipped."""
        return cls.load(path) if Path(path).exists() else None

    def shift(self, window: np.ndarray, hole: np.ndarray, fill: np.ndarray) -> np.ndarray:
        """(3,) Lab shift for one face: (S, S, 3) uint8 window and fill, (S, S) bool hole."""
        return self._shift_and_fill_lab(window, hole, fill)[0]

    def _shift_and_fill_lab(self, window: np.ndarray, hole: np.ndarray, fill: np.ndarray):
        """The shift and the fill's (n, 3) Lab on the hole's pixels (converted there only: float Lab
        is the costly step)."""
        fill_lab = bgr_to_lab(fill[hole][:, None])[:, 0]
        window_lab = bgr_to_lab(np.ascontiguousarray(_sampled(window)))
        return self.shifts([face_features(window_lab, hole, fill_lab)])[0], fill_lab

    @staticmethod
    def ramped_offset(fill: np.ndarray, hole: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """(S, S, 3) float32 BGR offset moving the fill's mean Lab colour by `shift`: 0 outside the
        hole, 1 / RAMP_PX of its full strength on the hole's outermost pixels, full from RAMP_PX px
        inward; scaled so that its mean over the hole is the shift's BGR equivalent at the fill's mean
        colour."""
        out = np.zeros(fill.shape, np.float32)
        if not hole.any() or not np.any(shift):
            return out
        mean_lab = bgr_to_lab(fill[hole][:, None])[:, 0].mean(0)
        ends = np.stack([mean_lab, mean_lab + shift]).astype(np.float32)[:, None]
        bgr = cv2.cvtColor(ends, cv2.COLOR_Lab2BGR)[:, 0] * 255.0
        ramp = np.clip(cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3) / RAMP_PX, 0, 1)
        ramp /= max(float(ramp[hole].mean()), MIN_RAMP_MEAN)
        return (ramp[..., None] * (bgr[1] - bgr[0])).astype(np.float32)

    def correct(self, windows: np.ndarray, holes: np.ndarray, generated: np.ndarray) -> np.ndarray:
        """Colour-corrected copies of the (N, S, S, 3) uint8 generated windows: every pixel of the
        (N, S, S) hole (> 0.5) shifted in Lab; the others unchanged."""
        inside = holes > 0.5
        out = generated.copy()
        for i in range(len(generated)):
            if not inside[i].any():
                continue
            shift, fill = self._shift_and_fill_lab(windows[i], inside[i], generated[i])
            if not shift.any():
                continue
            bgr = cv2.cvtColor((fill + shift.astype(np.float32))[:, None], cv2.COLOR_Lab2BGR)[:, 0] * 255.0
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

        def sampled(t):
            return t[..., :: SAMPLE_STRIDE, :: SAMPLE_STRIDE]

        win_lab, gen_lab = lab_from_bgr_torch(sampled(windows)), lab_from_bgr_torch(generated)
        seen = sampled(visible)
        masks = []
        for r in RING_PX:
            ring = F.max_pool2d(inside.float(), 2 * r + 1, stride=1, padding=r) > 0.5
            masks.append(sampled(ring) & seen)
        top = torch.zeros_like(visible)
        top[..., : windows.shape[-2] // 3, :] = True
        masks += [seen, sampled(top) & seen]
        n_seen = seen.flatten(1).sum(1)
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
            mask = torch.where(small[:, None, None, None], seen, mask)
            feats += list(stats(win_lab, mask))
        # The fill on the sampled grid; a hole with no pixel on it (a sliver) uses all of its own.
        on_grid = sampled(inside).flatten(1).any(1)[:, None]
        for grid, full in zip(stats(sampled(gen_lab), sampled(inside)), stats(gen_lab, inside)):
            feats.append(torch.where(on_grid, grid, full))
        x = torch.cat(feats + [torch.ones_like(feats[0][:, :1])], 1).double()
        w = torch.as_tensor(self.weights, device=x.device)
        usable = (n_seen >= MIN_REGION_PX) & (inside.flatten(1).sum(1) >= 1)
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
