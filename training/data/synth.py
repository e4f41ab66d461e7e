"""Synthetic face coverings on aligned, unmasked face crops, with exact ground truth.

`MaskSynthesizer(templates_dir)(crop, landmarks, rng)` returns the masked crop,
the covering's alpha (float32 0..1, the segmentation target) and the kind of
covering. Kinds:

* MaskTheFace templates (surgical in three colours, N95, KN95, cloth, gas),
  mapped by a homography from their six anchor points to six mesh points; the
  front / left / right view is chosen from the face's yaw;
* the same templates worn incorrectly (pulled below the nose);
* procedural bandanas and neck gaiters (a polygon from the face oval down
  past the crop), plain, patterned or textured with the fabric images.

Colours and textures vary, and the covering is shaded by the low-frequency
lighting of the face under it so that it matches the scene.
"""
from __future__ import annotations

import configparser
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream.alignment import yaw_proxy

# MaskTheFace's six anchors (a..f) as mesh points: a/c on the face outline at
# mid-nose height, b on the nose bridge, d/f on the jaw, e under the chin.
ANCHORS = {
    "a": [234, 93], "b": [197], "c": [454, 323],
    "d": [172, 136], "e": [152], "f": [397, 365],
}
# Below-the-nose wearing: anchors slide down to the upper lip.
ANCHORS_LOW = {
    "a": [132, 58], "b": [164, 0], "c": [361, 288],
    "d": [150, 149], "e": [152], "f": [379, 378],
}
KINDS = ["surgical", "surgical_blue", "surgical_green", "N95", "KN95", "cloth", "gas"]
ALL_KINDS = KINDS + ["incorrect", "bandana", "gaiter"]

JAW_LEFT = [234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152]
JAW_RIGHT = [454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152]


@dataclass
class Template:
    rgba: np.ndarray      # HxWx4 uint8 (BGRA)
    anchors: np.ndarray   # 6x2 float32, a..f


def templates_missing(root: Path) -> str | None:
    """One line saying how to get the MaskTheFace templates, or None when `root` holds them."""
    root = Path(root)
    if root.is_dir() and next(root.rglob("masks.cfg"), None) is not None:
        return None
    return (f"no mask templates (masks.cfg) in {root}: run python -m training.data.prepare "
            "(it extracts ../shared/data/masks/maskthefacetemplates.tar)")


def load_templates(root: Path) -> dict[str, Template]:
    """MaskTheFace templates keyed by section name (e.g. 'surgical_left')."""
    root = Path(root)
    problem = templates_missing(root)
    if problem:
        raise FileNotFoundError(problem)
    cfg_path = next(root.rglob("masks.cfg"))
    base = cfg_path.parent.parent  # paths in the cfg start with masks/
    cfg = configparser.ConfigParser()
    cfg.read(cfg_path)
    out = {}
    for name in cfg.sections():
        sec = cfg[name]
        if "template" not in sec or "mask_a" not in sec:
            continue
        rgba = cv2.imread(str(base / sec["template"].strip()), cv2.IMREAD_UNCHANGED)
        if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
            continue
        pts = np.float32([[float(v) for v in sec[f"mask_{k}"].split(",")] for k in "abcdef"])
        out[name] = Template(rgba, pts)
    return out


def load_textures(root: Path) -> list[np.ndarray]:
    tex = []
    for p in sorted(Path(root).rglob("textures/**/*")):
        if p.suffix.lower() in (".png", ".jpg", ".jpeg"):
            im = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if im is not None:
                tex.append(im)
    return tex


# The training crops' yaw is the stream's own proxy (stream.alignment.yaw_proxy).
estimate_yaw = yaw_proxy


def _anchor_points(lm: np.ndarray, table: dict) -> np.ndarray:
    return np.float32([lm[table[k]].mean(0) for k in "abcdef"])


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(0, 256), rng.integers(40, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _tile(texture: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    s = rng.uniform(0.3, 1.0)
    t = cv2.resize(texture, None, fx=s, fy=s)
    reps = (size // t.shape[0] + 2, size // t.shape[1] + 2, 1)
    big = np.tile(t, reps)
    y, x = rng.integers(0, t.shape[0]), rng.integers(0, t.shape[1])
    return big[y:y + size, x:x + size]


class MaskSynthesizer:
    def __init__(self, templates_root: Path):
        self.templates = load_templates(templates_root)
        self.textures = load_textures(templates_root)
        self._missing_kinds: set[str] = set()
        if not self.templates:
            raise FileNotFoundError(f"no MaskTheFace templates under {templates_root}")

    # -- colouring -----------------------------------------------------------
    def _paint(self, rgb: np.ndarray, alpha: np.ndarray, kind: str, rng) -> np.ndarray:
        """Recolour / texture a covering (float32 BGR) keeping its folds as shading."""
        size = rgb.shape[0]
        r = rng.random()
        if kind in ("bandana", "gaiter") or r < 0.45:
            gray = cv2.cvtColor(rgb.clip(0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
            folds = gray / max(float(gray[alpha > 0.5].mean()) if (alpha > 0.5).any() else 1.0, 1.0)
            folds = np.clip(folds, 0.6, 1.3)[..., None]
            if self.textures and rng.random() < 0.5:
                base = _tile(self.textures[rng.integers(len(self.textures))], size, rng).astype(np.float32)
            else:
                base = np.broadcast_to(_random_colour(rng), rgb.shape).astype(np.float32)
            if kind in ("bandana", "gaiter"):
                folds = 1.0
            return base * folds
        return rgb

    # -- geometry ------------------------------------------------------------
    def _template_cover(self, lm, size, kind, rng):
        yaw = estimate_yaw(lm)
        incorrect = kind == "incorrect"
        if incorrect:
            kind = str(rng.choice(["surgical", "surgical_blue", "KN95", "cloth", "N95"]))
        # Templates named *_left show the face turned towards image-left.
        view = "_left" if yaw < -0.25 else ("_right" if yaw > 0.25 else "")
        tpl = self.templates.get(kind + view) or self.templates.get(kind)
        if tpl is None:
            # A partial template set (the repository's bundled one holds surgical_blue only): any
            # template it has, said once. training.data.prepare extracts the full set.
            if kind not in self._missing_kinds:
                self._missing_kinds.add(kind)
                logging.getLogger(__name__).warning("no %r mask template here: drawing another kind", kind)
            tpl = next(iter(self.templates.values()))
        dst = _anchor_points(lm, ANCHORS_LOW if incorrect else ANCHORS)
        dst += rng.normal(0, 1.5, dst.shape).astype(np.float32)  # imperfect fit, like real wear
        h, _ = cv2.findHomography(tpl.anchors, dst)
        warped = cv2.warpPerspective(tpl.rgba, h, (size, size), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        alpha = warped[..., 3].astype(np.float32) / 255.0
        return warped[..., :3].astype(np.float32), alpha, kind

    def _procedural_cover(self, lm, size, kind, rng):
        top = lm[[234, 197, 454]] if kind == "bandana" else lm[[93, 4, 323]]
        top = top + rng.normal(0, 2, top.shape)
        left = lm[JAW_LEFT[1:-1]] - [rng.uniform(2, 8), 0]
        right = lm[JAW_RIGHT[1:-1]] + [rng.uniform(2, 8), 0]
        if kind == "bandana":   # a triangle hanging below the chin
            tip = lm[152] + [rng.uniform(-10, 10), rng.uniform(25, 60)]
            poly = np.vstack([top[0], top[1], top[2], right[::-1][-1:], right, tip[None], left[::-1]])
            poly = np.vstack([top, right, tip[None], left[::-1]])
        else:                   # a tube down to the neck and past the crop
            bottom = np.array([[right[-1, 0] + 10, size + 10], [left[-1, 0] - 10, size + 10]])
            poly = np.vstack([top, right, bottom, left[::-1]])
        alpha = np.zeros((size, size), np.float32)
        cv2.fillPoly(alpha, [np.round(poly * 4).astype(np.int32)], 1.0, cv2.LINE_AA, shift=2)
        rgb = np.zeros((size, size, 3), np.float32)
        return rgb, alpha, kind

    def __call__(self, crop: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                 kind: str | None = None):
        size = crop.shape[0]
        kind = kind or str(rng.choice(ALL_KINDS, p=_KIND_P))
        if kind == "none":   # an uncovered face: teaches the analyser to say "no mask"
            return crop.copy(), np.zeros((size, size), np.float32), kind
        if kind in ("bandana", "gaiter"):
            rgb, alpha, kind_used = self._procedural_cover(landmarks, size, kind, rng)
        else:
            rgb, alpha, kind_used = self._template_cover(landmarks, size, kind, rng)
        rgb = self._paint(rgb, alpha, kind, rng)
        # Lighting: the face's low-frequency luminance (relative to its mean) shades the covering.
        face_l = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
        light = cv2.GaussianBlur(face_l, (0, 0), size / 12)
        light = light / max(float(light[alpha > 0.5].mean()) if (alpha > 0.5).any() else 128.0, 1.0)
        strength = rng.uniform(0.3, 0.8)
        shade = (1 - strength) + strength * np.clip(light, 0.4, 1.6)
        rgb = rgb * shade[..., None]
        a = alpha[..., None]
        out = crop.astype(np.float32) * (1 - a) + rgb * a
        # Straps from the mask's upper corners towards the ears.
        if kind_used not in ("bandana", "gaiter", "gas") and rng.random() < 0.7:
            col = tuple(float(c) for c in (rgb[alpha > 0.5].mean(0) if (alpha > 0.5).any() else (200, 200, 200)))
            strap = np.zeros((size, size), np.float32)
            for side, ear in ((ANCHORS["a"], 234), (ANCHORS["c"], 454)):
                p0 = landmarks[side].mean(0)
                p1 = landmarks[ear] + [(-1 if ear == 234 else 1) * 6, -12]
                cv2.line(strap, tuple(np.int32(p0)), tuple(np.int32(p1)), 1.0, 2, cv2.LINE_AA)
            strap = np.clip(strap - alpha, 0, 1)
            out = out * (1 - strap[..., None]) + np.array(col, np.float32) * strap[..., None]
            alpha = np.maximum(alpha, strap)
        return np.clip(out, 0, 255).astype(np.uint8), alpha.astype(np.float32), kind


_KIND_P = np.array([0.14, 0.1, 0.06, 0.12, 0.14, 0.14, 0.05, 0.1, 0.07, 0.08])
_KIND_P = _KIND_P / _KIND_P.sum()


def augment(image: np.ndarray, maps: list[np.ndarray], landmarks: np.ndarray, rng,
            geometric: bool = True):
    """Photometric + small geometric augmentation shared by image, maps and landmarks."""
    size = image.shape[0]
    if geometric:
        ang = rng.normal(0, 6)
        scale = rng.uniform(0.92, 1.08)
        t = rng.normal(0, 4, 2)
        m = cv2.getRotationMatrix2D((size / 2, size / 2), ang, scale)
        m[:, 2] += t
        image = cv2.warpAffine(image, m, (size, size), borderMode=cv2.BORDER_REFLECT)
        maps = [cv2.warpAffine(x, m, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT) for x in maps]
        landmarks = landmarks @ m[:, :2].T + m[:, 2]
    img = image.astype(np.float32)
    if rng.random() < 0.8:   # colour and exposure, including low light
        gain = rng.uniform(0.35, 1.3) if rng.random() < 0.3 else rng.uniform(0.8, 1.2)
        img = img * gain * rng.uniform(0.9, 1.1, 3) + rng.normal(0, 8)
    if rng.random() < 0.3:
        k = rng.uniform(0.5, 1.8)
        img = cv2.GaussianBlur(img, (0, 0), k)
    if rng.random() < 0.3:
        img = img + rng.normal(0, rng.uniform(2, 10), img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        q = int(rng.integers(30, 90))
        img = cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_COLOR)
    return img, maps, landmarks.astype(np.float32)
