"""Metrics and picture grids shared by training-time validation and `training.evaluate`.

numpy + OpenCV only, so evaluation can run on the exported ONNX models alone.
"""
from __future__ import annotations

import cv2
import numpy as np

from models.spec import HIDDEN_REGION

LEFT_EYE = [33, 133, 160, 159, 158, 144, 145, 153]
RIGHT_EYE = [362, 263, 387, 386, 385, 373, 374, 380]


def iou_dice(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    p, g = pred > 0.5, gt > 0.5
    inter = np.logical_and(p, g).sum()
    union = np.logical_or(p, g).sum()
    tot = p.sum() + g.sum()
    return (float(inter / union) if union else 1.0), (float(2 * inter / tot) if tot else 1.0)


def nme(pred: np.ndarray, gt: np.ndarray, points=HIDDEN_REGION) -> float:
    """Mean point error over `points`, normalised by the inter-ocular distance."""
    iod = np.linalg.norm(gt[LEFT_EYE].mean(0) - gt[RIGHT_EYE].mean(0))
    return float(np.linalg.norm(pred[points] - gt[points], axis=1).mean() / max(iod, 1e-6))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    accs = [float((y_pred[y_true == c] == c).mean()) for c in (0, 1) if (y_true == c).any()]
    return float(np.mean(accs)) if accs else float("nan")


def analyser_metrics(samples: list[dict], preds: list[dict]) -> dict:
    ious, dices, nmes = [], [], []
    for s, p in zip(samples, preds):
        mask = p["mask"]
        if mask.shape != s["mask"].shape:
            mask = cv2.resize(mask, s["mask"].shape[::-1], interpolation=cv2.INTER_LINEAR)
        i, d = iou_dice(mask, s["mask"])
        ious.append(i)
        dices.append(d)
        nmes.append(nme(p["landmarks"], s["landmarks"]))
    g = np.array([s["gender"] for s in samples])
    age = np.array([s["age"] for s in samples])
    gp = np.array([int(p["gender"] > 0.5) for p in preds])
    adult = (g >= 0) & ((age < 0) | (age >= 18))
    child = (g >= 0) & (age >= 0) & (age < 13)
    return dict(iou=float(np.mean(ious)), dice=float(np.mean(dices)),
                nme_hidden=float(np.mean(nmes)),
                gender_bacc_adult=balanced_accuracy(g[adult], gp[adult]) if adult.any() else float("nan"),
                gender_bacc_child=balanced_accuracy(g[child], gp[child]) if child.any() else float("nan"))


def paste_window(crop256: np.ndarray, window: np.ndarray, matrix: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Put an inpainted window back into the canonical crop, inside the hole only."""
    size = window.shape[0]
    inv = cv2.invertAffineTransform(matrix)
    w = cv2.warpAffine(window, inv, (crop256.shape[1], crop256.shape[0]), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    h = cv2.warpAffine(hole, inv, (crop256.shape[1], crop256.shape[0]), flags=cv2.INTER_LINEAR)
    out = crop256.copy()
    sel = h > 0.5
    out[sel] = w[sel]
    return out


def mean_lab(image_bgr: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Mean CIELAB colour of the selected pixels of a BGR uint8 image."""
    from skimage.color import rgb2lab
    px = image_bgr[where][:, ::-1].reshape(-1, 1, 3)
    return rgb2lab(px).reshape(-1, 3).mean(0)


def delta_e(lab_a: np.ndarray, lab_b: np.ndarray) -> float:
    from skimage.color import deltaE_ciede2000
    return float(deltaE_ciede2000(lab_a[None], lab_b[None])[0])


SEAM_BAND_PX = 3   # each side of the hole border (at 256 px a face is ~200 px wide)


def border_seam(image: np.ndarray, truth: np.ndarray, hole: np.ndarray, band: int = SEAM_BAND_PX,
                region: np.ndarray | None = None) -> dict:
    """How visible the border of a redrawn hole is, against the true face on the same pixels.

    * gradient: mean L* gradient magnitude (Sobel, L* units per px) on the band straddling the
      border, minus the true face's there: the edge a seam adds beyond the face's own texture
      (0 = none; a clean step of d in L* adds d / (2 band) on average).
    * colour_step: CIEDE2000 between the mean colours just inside and just outside the border,
      minus the true face's own inside/outside difference (0 = the colour runs on as in reality).
    Both are computed on `image` and `truth` (BGR uint8, same size) with `hole` (> 0.5 inside);
    `region` (bool, same size): only the border's pixels there (e.g. on the face, not the background).
    """
    inside = (hole > 0.5).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    grown, shrunk = cv2.dilate(inside, kernel), cv2.erode(inside, kernel)
    straddle = (grown > 0) & (shrunk == 0)
    ring_in, ring_out = (inside > 0) & (shrunk == 0), (grown > 0) & (inside == 0)
    if region is not None:
        straddle, ring_in, ring_out = straddle & region, ring_in & region, ring_out & region
    if not ring_in.any() or not ring_out.any():
        return {"gradient": float("nan"), "colour_step": float("nan")}

    def gradient(img):
        light = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)[..., 0]
        gx, gy = cv2.Sobel(light, cv2.CV_32F, 1, 0, ksize=3) / 8, cv2.Sobel(light, cv2.CV_32F, 0, 1, ksize=3) / 8
        return float(np.hypot(gx, gy)[straddle].mean())

    def step(img):
        return delta_e(mean_lab(img, ring_in), mean_lab(img, ring_out))

    return {"gradient": gradient(image) - gradient(truth), "colour_step": step(image) - step(truth)}


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if where is not None:
        sel = where > 0.5
        if not sel.any():
            return float("nan")
        mse = ((a - b) ** 2)[sel].mean()
    else:
        mse = ((a - b) ** 2).mean()
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def ssim_gray(a: np.ndarray, b: np.ndarray) -> float:
    a = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).astype(np.float64)
    b = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)
    mu_a, mu_b = blur(a), blur(b)
    sa = blur(a * a) - mu_a ** 2
    sb = blur(b * b) - mu_b ** 2
    sab = blur(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (sa + sb + c2))
    return float(m.mean())


def inpainter_metrics(samples: list[dict], outputs: list[np.ndarray]) -> dict:
    ph, pa, ss, l1 = [], [], [], []
    for s, o in zip(samples, outputs):
        h = s["hole"]
        ph.append(psnr(o, s["target"], h))
        pa.append(psnr(o, s["target"]))
        ss.append(ssim_gray(o, s["target"]))
        l1.append(float(np.abs(o.astype(np.float64) - s["target"])[h > 0.5].mean() / 255))
    return dict(psnr_hole=float(np.nanmean(ph)), psnr_all=float(np.mean(pa)),
                ssim_all=float(np.mean(ss)), l1_hole=float(np.mean(l1)))


def analyser_grid(samples, preds, cols: int = 8) -> np.ndarray:
    tiles = []
    for s, p in zip(samples, preds):
        im = s["image"].copy()
        size = im.shape[0]
        m = p["mask"]
        if m.shape[0] != size:
            m = cv2.resize(m, (size, size))
        overlay = im.copy()
        overlay[m > 0.5] = (0.5 * overlay[m > 0.5] + [0, 0, 127]).astype(np.uint8)
        for x, y in p["landmarks"][HIDDEN_REGION] * size:
            cv2.circle(overlay, (int(x), int(y)), 1, (0, 255, 0), -1)
        label = "F" if p["gender"] > 0.5 else "M"
        cv2.putText(overlay, f"{label} {max(p['gender'], 1 - p['gender']):.2f}", (2, 12),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(np.vstack([im, overlay]))
    return _tile(tiles, cols)


def inpainter_grid(samples, outputs, cols: int = 6) -> np.ndarray:
    tiles = []
    for s, o in zip(samples, outputs):
        tiles.append(np.vstack([s["image"], o, s["target"]]))
    return _tile(tiles, cols)


def _tile(tiles, cols):
    h, w = tiles[0].shape[:2]
    rows = []
    for r in range(0, len(tiles), cols):
        row = tiles[r:r + cols]
        row += [np.zeros((h, w, 3), np.uint8)] * (cols - len(row))
        rows.append(np.hstack(row))
    return np.vstack(rows)
