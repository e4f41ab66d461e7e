"""Multi-scale face detection with YuNet-n (boxes, five keypoints, a score), for small and many faces.

YuNet-n (libfacedetection.train, Apache-2.0; `models/weights/yunet_n.onnx`, see the model card)
finds faces down to ~11 px at its input resolution and masked faces. OpenCV's `FaceDetectorYN`
would run the same network, but OpenCV 4.11's DNN importer rejects this dynamic-shape export
(`parseShape: dynamic 'zero' shapes are not supported`), so it runs on ONNX Runtime, which the
inference install already has, and the decoding of its three strides is the one OpenCV's
`FaceDetectorYN` does (sigmoid scores cls * obj, box offsets and log-sizes per anchor point).

Scales (`YuNetDetector.scan_passes`): the frame at up to `fine_side` px, cut into overlapping tiles
of `TILE` px (small faces), and the whole frame at `coarse_side` px (faces too large for the
network's receptive field at full size); results merged by non-maximum suppression. `detect` runs
every pass (still images); a video tracker runs one pass per scheduled frame, round-robin
(`ScanSchedule`), so a 720p frame is covered at full resolution every few frames at the cost of
one 640 px pass (~20 ms on one core) instead of spikes of ~150 ms. `detect_near` looks only around
given boxes (lost tracks), each region resized so the face is seen at ~100 px.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

YUNET_PATH = Path(__file__).resolve().parent.parent / "models" / "weights" / "yunet_n.onnx"
STRIDES = (8, 16, 32)
SCAN_BACKOFF = 2           # scan passes this many times less often after a whole cycle found nothing new
TILE = (640, 384)          # fine-pass tile (w, h) in network pixels: ~20 ms on one core
TILE_OVERLAP = 64          # a face up to this size lies wholly inside some tile
TILE_EDGE = 12             # a tile drops faces within this many network pixels of an inner edge (cut ones)


@dataclass
class Detection:
    """A face found by the detector, in frame pixels."""
    box: tuple[int, int, int, int]      # x0, y0, x1, y1
    keypoints: np.ndarray               # (5, 2) float32: image-left eye, image-right eye, nose tip,
    #                                     image-left mouth corner, image-right mouth corner
    score: float

    @property
    def eyes_nose_mouth(self) -> np.ndarray:
        """(4, 2) the tracker's keypoint layout (BlazeFace's first four): both eyes, nose tip,
        mouth centre."""
        k = self.keypoints
        return np.vstack([k[0], k[1], k[2], k[3:5].mean(0)]).astype(np.float32)

    @property
    def side(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def box_iou(a, b) -> float:
    ix0, iy0, ix1, iy1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, ix1 - ix0) * max(0, iy1 - iy0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _inside_share(a, b) -> float:
    """The share of box a's area that lies inside box b."""
    ix0, iy0, ix1, iy1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    area = (a[2] - a[0]) * (a[3] - a[1])
    return max(0, ix1 - ix0) * max(0, iy1 - iy0) / area if area > 0 else 0.0


def non_max_suppression(found: list[Detection], iou_threshold: float = 0.3,
                        inside_threshold: float = 0.7) -> list[Detection]:
    """The best of each group of overlapping detections, best first (OpenCV's NMSBoxes), without
    the boxes lying mostly inside a better one (part of a face seen by one tile)."""
    if not found:
        return []
    boxes = [[d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]] for d in found]
    keep = cv2.dnn.NMSBoxes(boxes, [d.score for d in found], 0.0, iou_threshold)
    kept = []
    for d in sorted((found[i] for i in np.asarray(keep).reshape(-1)), key=lambda d: -d.score):
        if all(_inside_share(d.box, k.box) < inside_threshold for k in kept):
            kept.append(d)
    return kept


class YuNetDetector:
    """YuNet-n on ONNX Runtime, multi-scale. `detect(image)` -> list[Detection], best first.

    `image` is BGR uint8 (the network was trained on BGR), or RGB with `rgb=True`."""

    def __init__(self, path: str | Path = YUNET_PATH, score_threshold: float = 0.5,
                 nms_threshold: float = 0.3, fine_side: int = 1280, coarse_side: int = 320,
                 min_face: int = 10, threads: int | None = 1):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES]
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.fine_side = fine_side
        self.coarse_side = coarse_side
        self.min_face = min_face
        self.runs = 0

    # -- one pass ----------------------------------------------------------------------------------
    def detect_at(self, image: np.ndarray, scale: float, rgb: bool = False,
                  offset: tuple[float, float] = (0.0, 0.0)) -> list[Detection]:
        """One pass of the network on `image` resized by `scale`; detections mapped back to
        `image` pixels plus `offset` (before NMS)."""
        h, w = image.shape[:2]
        sw, sh = max(32, int(round(w * scale))), max(32, int(round(h * scale)))
        small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR) \
            if (sw, sh) != (w, h) else image
        if rgb:
            small = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        pw, ph = -(-sw // 32) * 32, -(-sh // 32) * 32     # the network needs multiples of 32
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :sh, :sw] = small.transpose(2, 0, 1)
        outs = dict(zip(self._outputs, self._session.run(self._outputs, {self._input: blob})))
        self.runs += 1
        fx, fy = w / sw, h / sh
        found = []
        for s in STRIDES:
            cols = pw // s
            score = np.sqrt(np.clip(outs[f"cls_{s}"][0, :, 0], 0, 1) * np.clip(outs[f"obj_{s}"][0, :, 0], 0, 1))
            idx = np.nonzero(score >= self.score_threshold)[0]
            if len(idx) == 0:
                continue
            r, c = (idx // cols).astype(np.float32), (idx % cols).astype(np.float32)
            bb = outs[f"bbox_{s}"][0, idx]
            cx, cy = (c + bb[:, 0]) * s, (r + bb[:, 1]) * s
            bw, bh = np.exp(bb[:, 2]) * s, np.exp(bb[:, 3]) * s
            kp = outs[f"kps_{s}"][0, idx].reshape(-1, 5, 2)
            kp = (kp + np.stack([c, r], 1)[:, None]) * s
            for i in range(len(idx)):
                x0, y0 = (cx[i] - bw[i] / 2) * fx + offset[0], (cy[i] - bh[i] / 2) * fy + offset[1]
                x1, y1 = (cx[i] + bw[i] / 2) * fx + offset[0], (cy[i] + bh[i] / 2) * fy + offset[1]
                if min(x1 - x0, y1 - y0) < self.min_face:
                    continue
                pts = (kp[i] * [fx, fy] + offset).astype(np.float32)
                found.append(Detection((int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))),
                                       pts, float(score[idx[i]])))
        return found

    # -- the frame -------------------------------------------------------------------------------
    def scales(self, h: int, w: int) -> list[float]:
        long_side = max(h, w)
        out = [min(1.0, self.fine_side / long_side)]
        if long_side * out[0] > 2 * self.coarse_side:
            out.append(self.coarse_side / long_side)
        return out

    def scan_passes(self, h: int, w: int) -> list[tuple[tuple[int, int, int, int], float]]:
        """(region x0, y0, x1, y1 in frame pixels, scale) of every pass that covers a frame: the
        fine tiles, then the coarse whole frame (when the fine scale leaves it over 2x coarse)."""
        scales = self.scales(h, w)
        fine = scales[0]
        ov = TILE_OVERLAP / fine
        passes = []
        for y0, y1 in _tile_spans(h, TILE[1] / fine, ov):
            for x0, x1 in _tile_spans(w, TILE[0] / fine, ov):
                passes.append(((x0, y0, x1, y1), fine))
        if len(scales) > 1:
            passes.append(((0, 0, w, h), scales[1]))
        return passes

    def run_pass(self, image: np.ndarray, region, scale: float, rgb: bool = False) -> list[Detection]:
        """One scan pass. A tile drops the faces its inner edges cut (they are whole in a
        neighbouring tile, or, when larger than the overlap, in the coarse pass)."""
        x0, y0, x1, y1 = region
        found = self.detect_at(image[y0:y1, x0:x1], scale, rgb, (x0, y0))
        h, w = image.shape[:2]
        margin = TILE_EDGE / scale
        return [d for d in found
                if not ((x0 > 0 and d.box[0] <= x0 + margin) or (y0 > 0 and d.box[1] <= y0 + margin) or
                        (x1 < w and d.box[2] >= x1 - margin) or (y1 < h and d.box[3] >= y1 - margin))]

    def detect(self, image: np.ndarray, rgb: bool = False) -> list[Detection]:
        """Every scan pass: all faces of a still image."""
        h, w = image.shape[:2]
        found = []
        for region, scale in self.scan_passes(h, w):
            found += self.run_pass(image, region, scale, rgb)
        return [_clip(d, w, h) for d in non_max_suppression(found, self.nms_threshold)]

    def detect_near(self, image: np.ndarray, boxes, rgb: bool = False, face_px: int = 96) -> list[Detection]:
        """Only around `boxes` (x0, y0, x1, y1: where faces were): a region 2.5x each box, resized so
        the face is ~`face_px` px."""
        h, w = image.shape[:2]
        found = []
        for x0, y0, x1, y1 in boxes:
            side = max(x1 - x0, y1 - y0, 8)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            rx0, ry0 = int(max(0, cx - 1.25 * side)), int(max(0, cy - 1.25 * side))
            rx1, ry1 = int(min(w, cx + 1.25 * side)), int(min(h, cy + 1.25 * side))
            if rx1 - rx0 < 8 or ry1 - ry0 < 8:
                continue
            scale = float(np.clip(face_px / side, 0.25, 4.0))
            found += self.detect_at(image[ry0:ry1, rx0:rx1], scale, rgb, (rx0, ry0))
        return [_clip(d, w, h) for d in non_max_suppression(found, self.nms_threshold)]


class ScanSchedule:
    """Round-robin over a frame's scan passes: `next(h, w)` -> the pass to run on this frame.

    `record(found)` after each pass: once a whole cycle of passes has found nothing new (no face
    that the mesh had not, no track gone missing), `backoff` is SCAN_BACKOFF and the tracker runs
    the passes that much less often, until a pass finds something again. A steady scene (one person
    at a webcam) then pays half the scanning; a crowd where faces keep coming keeps the full rate,
    and a new face is still found within two cycles (~1.3 s at 720p and 30 FPS)."""

    def __init__(self, detector: YuNetDetector):
        self.detector = detector
        self._passes: list = []
        self._shape = None
        self._k = 0
        self._quiet_passes = 0
        self._eager = False

    @property
    def backoff(self) -> int:
        return SCAN_BACKOFF if self._passes and self._quiet_passes >= len(self._passes) else 1

    @property
    def eager(self) -> bool:
        """The last pass found a new face beside the tracked ones: run the next pass on the next frame.
        A crowd coming into view is found in about one cycle of frames instead of `redetect_every`
        cycles; the first pass that finds nobody new ends it (one extra pass after a lone face)."""
        return self._eager

    def record(self, found: bool, new_face: bool = False) -> None:
        self._quiet_passes = 0 if found else self._quiet_passes + 1
        self._eager = new_face

    def next(self, h: int, w: int):
        if self._shape != (h, w):
            self._shape, self._passes, self._k = (h, w), self.detector.scan_passes(h, w), 0
        p = self._passes[self._k % len(self._passes)]
        self._k += 1
        return p

    @property
    def passes_per_scan(self) -> int:
        return len(self._passes)


def _tile_spans(length: int, tile: float, overlap: float) -> list[tuple[int, int]]:
    """(start, end) of about-`tile`-long spans covering `length`, neighbours overlapping by `overlap`."""
    n = max(1, int(round((length - overlap) / (tile - overlap))))
    span = (length + (n - 1) * overlap) / n
    return [(int(round(k * (span - overlap))), min(length, int(round(k * (span - overlap) + span))))
            for k in range(n)]


def _clip(d: Detection, w: int, h: int) -> Detection:
    x0, y0, x1, y1 = d.box
    return Detection((max(0, x0), max(0, y0), min(w, x1), min(h, y1)), d.keypoints, d.score)
