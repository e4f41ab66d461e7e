"""Face test images from permissive sources only.

scikit-image's public-domain `astronaut`, with a MIT MaskTheFace template
(assets/mask_templates) placed on her lower face exactly as the training
synthesiser does, so the ground-truth covering mask is known per pixel.
"""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def astronaut() -> np.ndarray:
    import skimage.data
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@functools.lru_cache(maxsize=1)
def astronaut_landmarks() -> np.ndarray:
    import mediapipe as mp
    img = astronaut()
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        res = mesh.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    h, w = img.shape[:2]
    return np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark], np.float32)


@functools.lru_cache(maxsize=4)
def masked_astronaut(kind: str = "surgical_blue") -> tuple[np.ndarray, np.ndarray]:
    """(image, ground-truth covering mask uint8 0/255) for the astronaut wearing `kind`."""
    from training.data.synth import MaskSynthesizer
    synth = MaskSynthesizer(ROOT / "assets" / "mask_templates")
    img = astronaut()
    rgb, alpha, _ = synth._template_cover(astronaut_landmarks(), img.shape[0], kind,
                                          np.random.default_rng(0))
    a = alpha[..., None]
    out = np.clip(img * (1 - a) + rgb * a, 0, 255).astype(np.uint8)
    return out, ((alpha > 0.5) * 255).astype(np.uint8)


def side_by_side(*images: np.ndarray, gap: int = 40) -> np.ndarray:
    """Several faces in one frame (for multi-face tests)."""
    h = max(i.shape[0] for i in images)
    pad = np.full((h, gap, 3), 90, np.uint8)
    parts = []
    for i, im in enumerate(images):
        if i:
            parts.append(pad)
        parts.append(cv2.copyMakeBorder(im, 0, h - im.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=90))
    return np.hstack(parts)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def face_clip_frames(n: int = 20, size: tuple[int, int] = (640, 480), step_px: int = 3):
    """Frames of the masked astronaut's head drifting sideways; yields (image, gt_mask)."""
    img, gt = masked_astronaut()
    w, h = size
    head = img[0:400, 56:456]       # a head-and-shoulders crop (400 x 400)
    head_gt = gt[0:400, 56:456]
    for i in range(n):
        frame = np.full((h, w, 3), 70, np.uint8)
        mask = np.zeros((h, w), np.uint8)
        x = 40 + abs((i * step_px) % 400 - 200) - 40   # back and forth, always inside
        frame[40:440, x:x + 400] = head
        mask[40:440, x:x + 400] = head_gt
        yield frame, mask


def make_face_clip(path, n: int = 20, fps: int = 25, audio: bool = True) -> Path:
    """An H.264 mp4 of `face_clip_frames` with an AAC tone; returns the path."""
    from fractions import Fraction

    import av
    path = Path(path)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 640, 480, "yuv420p"
        v.codec_context.options = {"preset": "veryfast", "crf": "18"}
        a = None
        if audio:
            a = c.add_stream("aac", rate=48000)
            a.layout = "mono"
        for i, (frame, _) in enumerate(face_clip_frames(n)):
            vf = av.VideoFrame.from_ndarray(frame, format="bgr24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            c.mux(v.encode(vf))
        c.mux(v.encode(None))
        if a is not None:
            total = round(n / fps * 48000)
            samples = (0.2 * np.sin(2 * np.pi * 440 * np.arange(total) / 48000)).astype(np.float32)
            for s in range(0, total, 1024):
                af = av.AudioFrame.from_ndarray(samples[None, s:s + 1024], format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 48000, s, Fraction(1, 48000)
                c.mux(a.encode(af))
            c.mux(a.encode(None))
    return path
