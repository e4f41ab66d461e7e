"""Benchmark clips: generated test videos with N masked faces, and a pacing source that makes
a file behave like a camera.

Generated clips use permissively licensed material only: scikit-image's
public-domain `astronaut` photo wearing the MIT-licensed MaskTheFace
`surgical_blue` template bundled in assets/mask_templates (placed with a
homography from the template's six anchors to six face-mesh points, as
assets/make_sample.py does). N copies are tiled in a grid over a soft
backdrop, each drifting, zooming and tilting on its own phase, and the clip is
written once as H.264 (so decoding is part of what is measured) to a cache
folder, by default benchmarks/results/clips/ (git-ignored):

    path = generated_clip((1280, 720), faces=4, frames=110)
"""
from __future__ import annotations

import configparser
import dataclasses
import functools
import math
import os
import re
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from benchmarks.report import RESULTS_DIR, ROOT, BenchError

CLIPS_DIR = RESULTS_DIR / "clips"
TEMPLATES = ROOT / "assets" / "mask_templates"
TEMPLATE = "surgical_blue"
GENERATOR_VERSION = 2        # part of the cache file name: bump when the pictures change
DEFAULT_FPS = 25

RESOLUTIONS = {
    "240p": (426, 240), "360p": (640, 360), "480p": (854, 480), "540p": (960, 540),
    "720p": (1280, 720), "1080p": (1920, 1080), "1440p": (2560, 1440), "2160p": (3840, 2160),
    "4k": (3840, 2160),
}
# MaskTheFace anchors a..f as mediapipe face-mesh points (means of the listed), as in make_sample.py.
ANCHORS = {"a": [234, 93], "b": [197], "c": [454, 323], "d": [172, 136], "e": [152], "f": [397, 365]}


def parse_resolution(text: str) -> tuple[int, int]:
    """"720p" / "4k" / "1280x720" -> (width, height); even sizes of at least 64 px."""
    t = str(text).strip().lower()
    if t in RESOLUTIONS:
        return RESOLUTIONS[t]
    m = re.fullmatch(r"(\d+)\s*[x×]\s*(\d+)", t)
    if not m:
        raise ValueError(f"unknown resolution {text!r}: use {', '.join(RESOLUTIONS)} or WIDTHxHEIGHT")
    w, h = int(m.group(1)), int(m.group(2))
    if w < 64 or h < 64 or w > 8192 or h > 8192:
        raise ValueError(f"resolution {text!r} out of range (64..8192 px per side)")
    if w % 2 or h % 2:
        raise ValueError(f"resolution {text!r} must have even sides (H.264 4:2:0)")
    return w, h


def resolution_label(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


# ----------------------------------------------------------------------------- the masked face

@functools.lru_cache(maxsize=1)
def _astronaut() -> np.ndarray:
    import cv2
    try:
        import skimage.data
    except ImportError:
        raise BenchError("generated clips need scikit-image (pip install scikit-image) for the "
                         "public-domain astronaut photo; or pass --source FILE", 1) from None
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@functools.lru_cache(maxsize=1)
def _astronaut_landmarks() -> np.ndarray:
    import cv2
    import mediapipe as mp
    from stream.tracking import quiet_native_stderr
    img = _astronaut()
    with quiet_native_stderr():
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
            res = mesh.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if not res.multi_face_landmarks:
        raise BenchError("mediapipe found no face on the astronaut photo", 1)
    h, w = img.shape[:2]
    return np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark], np.float64)


def _load_template(folder: Path = TEMPLATES, name: str = TEMPLATE) -> tuple[np.ndarray, np.ndarray]:
    """(BGRA template, 6x2 anchors a..f) from a MaskTheFace tree (masks/masks.cfg)."""
    import cv2
    cfg_path = folder / "masks" / "masks.cfg"
    cfg = configparser.ConfigParser()
    if not cfg.read(cfg_path) or name not in cfg:
        raise BenchError(f"mask template [{name}] not found in {cfg_path}", 1)
    sec = cfg[name]
    rgba = cv2.imread(str(folder / sec["template"].strip()), cv2.IMREAD_UNCHANGED)
    if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise BenchError(f"cannot read the RGBA mask template of [{name}] under {folder}", 1)
    anchors = np.float64([[float(v) for v in sec[f"mask_{k}"].split(",")] for k in "abcdef"])
    return rgba, anchors


@functools.lru_cache(maxsize=1)
def masked_face_tile() -> tuple[np.ndarray, np.ndarray]:
    """(tile BGR uint8 (S, S, 3), alpha float32 (S, S)): the astronaut's head and shoulders
    wearing the surgical mask, with a soft elliptical vignette to blend it into a backdrop."""
    import cv2
    img = _astronaut()
    lm = _astronaut_landmarks()
    rgba, anchors = _load_template()
    dst = np.float64([lm[ANCHORS[k]].mean(0) for k in "abcdef"])
    # Shrink the template to about its final size first (area averaging: no aliasing), with
    # premultiplied alpha so transparent pixels do not bleed into the edge.
    f = np.linalg.norm(dst[2] - dst[0]) / np.linalg.norm(anchors[2] - anchors[0])
    small = cv2.resize(rgba, None, fx=f, fy=f, interpolation=cv2.INTER_AREA).astype(np.float32)
    src = (anchors + 0.5) * [small.shape[1] / rgba.shape[1], small.shape[0] / rgba.shape[0]] - 0.5
    small[..., :3] *= small[..., 3:] / 255.0
    hom, _ = cv2.findHomography(src, dst)
    h, w = img.shape[:2]
    warped = cv2.warpPerspective(small, hom, (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = np.clip(warped[..., 3:] / 255.0, 0, 1)
    masked = np.clip(img * (1 - a) + warped[..., :3] + 0.5, 0, 255).astype(np.uint8)

    # A tight head crop (the face is ~60 % of the tile's width) so that many faces still fill the
    # frame enough for mediapipe's detectors, which see the whole frame at 128-192 px.
    x0, y0, side = _tile_crop(lm, w, h)
    tile = np.ascontiguousarray(masked[y0:y0 + side, x0:x0 + side])
    # Soft rounded-square vignette: opaque over the face, fading over the outer ~8 %.
    alpha = np.zeros((side, side), np.float32)
    m = int(side * 0.06)
    cv2.rectangle(alpha, (m, m), (side - 1 - m, side - 1 - m), 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), side * 0.03)
    return tile, alpha


def _tile_crop(lm: np.ndarray, w: int, h: int) -> tuple[int, int, int]:
    """(x0, y0, side) of the tile's square in the astronaut photo."""
    face_w = float(np.linalg.norm(lm[454] - lm[234]))
    cx, cy = lm.mean(0)
    side = int(round(1.65 * face_w))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - 0.12 * face_w - side / 2), 0, h - side))
    return x0, y0, side


@functools.lru_cache(maxsize=1)
def tile_face_points() -> np.ndarray:
    """(468, 2) the face mesh's points in tile pixels (ground truth for detection benchmarks)."""
    lm = _astronaut_landmarks()
    h, w = _astronaut().shape[:2]
    x0, y0, _ = _tile_crop(lm, w, h)
    return lm - [x0, y0]


def _backdrop(width: int, height: int, seed: int = 7) -> np.ndarray:
    import cv2
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None]
    top, bottom = np.float32([150, 140, 128]), np.float32([98, 88, 80])   # BGR
    img = (top * (1 - y) + bottom * y) * (1 - 0.18 * x ** 2)
    blotch = cv2.resize(rng.normal(0, 1, (9, 16)).astype(np.float32), (width, height),
                        interpolation=cv2.INTER_CUBIC)
    return np.clip(img + 7 * blotch[..., None] + 0.5, 0, 255).astype(np.uint8)


def grid_for(faces: int, width: int = 1, height: int = 1) -> tuple[int, int]:
    """(columns, rows) of the tiling of `faces` faces that gives each face the largest square cell."""
    best = None
    for cols in range(1, faces + 1):
        rows = math.ceil(faces / cols)
        side = min(width / cols, height / rows)
        if best is None or side > best[0] + 1e-9:
            best = (side, cols, rows)
    return best[1], best[2]


class FrameRenderer:
    """Draws frame i of a clip with `faces` masked faces at (width, height)."""

    def __init__(self, size: tuple[int, int], faces: int, fps: float = DEFAULT_FPS):
        if faces < 1:
            raise ValueError("faces must be at least 1")
        self.width, self.height = size
        self.faces, self.fps = faces, fps
        self.tile, self.alpha = masked_face_tile()
        self.background = _backdrop(self.width, self.height)
        self.cols, self.rows = grid_for(faces, self.width, self.height)

    def placements(self, i: int) -> list[np.ndarray]:
        """2x3 affine tile -> frame of every face at frame i (smooth, periodic, deterministic)."""
        import cv2
        t = i / self.fps
        cw, ch = self.width / self.cols, self.height / self.rows
        s = self.tile.shape[0]
        base = 0.95 * min(cw, ch) / s / 1.05   # fits its cell at the largest zoom
        out = []
        for k in range(self.faces):
            col, row = k % self.cols, k // self.cols
            ph = 0.37 * k
            cx = (col + 0.5) * cw + 0.06 * cw * math.sin(2 * math.pi * (t / 3.0 + ph))
            cy = (row + 0.5) * ch + 0.05 * ch * math.sin(2 * math.pi * (t / 2.3 + 1.7 * ph))
            zoom = 1.0 + 0.05 * math.sin(2 * math.pi * (t / 4.0 + 0.5 * ph))
            tilt = 4.0 * math.sin(2 * math.pi * (t / 3.5 + 1.3 * ph))
            m = cv2.getRotationMatrix2D((s / 2, s / 2), tilt, base * zoom)
            m[:, 2] += [cx - s / 2, cy - s / 2]
            out.append(m)
        return out

    def face_boxes(self, i: int) -> list[tuple[float, float, float, float]]:
        """Ground truth: each face's mesh bounding box (x0, y0, x1, y1) in frame i, clipped to the frame."""
        pts = tile_face_points()
        out = []
        for m in self.placements(i):
            p = pts @ m[:, :2].T + m[:, 2]
            x0, y0 = np.maximum(p.min(0), 0)
            x1, y1 = np.minimum(p.max(0), [self.width, self.height])
            out.append((float(x0), float(y0), float(x1), float(y1)))
        return out

    def render(self, i: int) -> np.ndarray:
        import cv2
        frame = self.background.copy()
        s = self.tile.shape[0]
        corners = np.float64([[0, 0], [s, 0], [0, s], [s, s]])
        for m in self.placements(i):
            pts = corners @ m[:, :2].T + m[:, 2]
            x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int), 0)
            x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int), [self.width, self.height])
            if x1 <= x0 or y1 <= y0:
                continue
            roi_m = m.copy()
            roi_m[:, 2] -= [x0, y0]
            size = (int(x1 - x0), int(y1 - y0))
            fg = cv2.warpAffine(self.tile, roi_m, size, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
            a = cv2.warpAffine(self.alpha, roi_m, size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
            roi = frame[y0:y1, x0:x1]
            roi[:] = np.clip(fg * a + roi * (1 - a) + 0.5, 0, 255).astype(np.uint8)
        return frame


def clip_name(size: tuple[int, int], faces: int, frames: int, fps: int) -> str:
    return f"astronaut_{size[0]}x{size[1]}_{faces}faces_{frames}frames_{fps}fps_v{GENERATOR_VERSION}.mp4"


def generated_clip(size: tuple[int, int], faces: int, frames: int, fps: int = DEFAULT_FPS,
                   cache_dir: str | os.PathLike | None = None, log=None) -> Path:
    """The cached H.264 clip with `faces` masked faces at `size` (made once, then reused)."""
    import av
    cache = Path(cache_dir) if cache_dir is not None else CLIPS_DIR
    path = cache / clip_name(size, faces, frames, fps)
    if path.is_file() and path.stat().st_size > 0:
        return path
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create the clip cache {cache}: {exc.strerror or exc}", 1) from None
    if log:
        log(f"generating {path.name} (once; cached in {cache})")
    renderer = FrameRenderer(size, faces, fps)
    handle, tmp = tempfile.mkstemp(prefix=".gen-", suffix=".mp4", dir=cache)
    os.close(handle)
    try:
        with av.open(tmp, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            stream.codec_context.gop_size = 2 * fps
            stream.codec_context.options = {"crf": "23", "preset": "veryfast"}
            for i in range(frames):
                vf = av.VideoFrame.from_ndarray(renderer.render(i), format="bgr24")
                vf.pts, vf.time_base = i, Fraction(1, fps)
                for packet in stream.encode(vf):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ------------------------------------------------------------------------------ pacing source

class PacedSource:
    """Plays an opened offline source like a camera: a thread decodes its frames and publishes
    each at the clip's frame rate (capture_time = publish time); `read()` returns the newest
    frame and frames nobody read in time are dropped (counted in stats.dropped), as
    stream.sources' live sources do. The decode time of each frame is put in
    frame.stages["source_decode"] (the pipeline's own "decode" is then the wait for a frame).
    """

    def __init__(self, source, fps: float | None = None, max_frames: int | None = None):
        from stream.sources import SourceStats
        self.inner = source
        self.fps = float(fps or source.info.fps or DEFAULT_FPS)
        self.max_frames = max_frames
        self.info = dataclasses.replace(source.info, live=True, frame_count=None,
                                        description=f"paced {source.info.description}")
        self.stats = SourceStats()
        self.published = 0
        self.late = 0                # frames published more than one interval after their slot
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._cond = threading.Condition()
        self._latest = None
        self._seq = 0
        self._returned = 0
        self._finished = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        interval = 1.0 / self.fps
        t0 = None
        i = 0
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and i >= self.max_frames:
                    break
                t = time.perf_counter()
                frame = self.inner.read()
                decode_ms = (time.perf_counter() - t) * 1e3
                if frame is None:
                    break
                now = time.monotonic()
                if t0 is None:
                    t0 = self.started_at = now
                due = t0 + i * interval
                if due > now:
                    if self._stop.wait(due - now):
                        break
                elif now - due > interval:
                    self.late += 1
                frame.capture_time = time.monotonic()
                frame.stages["source_decode"] = decode_ms
                with self._cond:
                    if self._latest is not None:
                        self.stats.dropped += 1
                    self._latest = frame
                    self._seq += 1
                    self.published += 1
                    self._cond.notify_all()
                i += 1
        finally:
            with self._cond:
                self.ended_at = time.monotonic()
                self._finished = True
                self._cond.notify_all()

    def read(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="paced-source", daemon=True)
            self._thread.start()
        with self._cond:
            while self._seq <= self._returned:
                if self._finished or self._stop.is_set():
                    return None
                self._cond.wait(0.1)
            frame, self._latest = self._latest, None
            self._returned = self._seq
        self.stats.frames_read += 1
        return frame

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self.inner.close()
