"""`Unmasker`: the library API. One frame in, the reconstructed frame and its faces out.

    from stream import Unmasker
    um = Unmasker()                               # shipped models, backend="auto"
    res = um.process(frame_bgr)                   # a still image: no temporal state
    res = um.process(frame_bgr, timestamp_ms=t)   # video: tracking + smoothing
    res.image, res.faces                          # see `Result` and `Face`

Per frame: track faces -> smooth landmarks -> align each face to the canonical
crop -> analyse all faces in one batch (covering mask, hidden landmarks,
gender) -> smooth the mask in the face-aligned frame -> inpaint the masked
faces' lower-face windows in one batch -> warp back and blend inside the
dilated mask only. Pixels outside every face's (dilated) mask are returned
bit-identical to the input, and so are the eyes and brows: the hole is refined at
the frame's resolution and cut below the eye line (stream.hole).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from models.spec import ANALYSER, CANONICAL_SIZE, HIDDEN_REGION, window_matrix
from stream.alignment import Alignment, align_face, load_canonical_shape, transform_points
from stream.errors import ModelError
from stream.hole import frame_hole
from stream.reconstruct import (ClassicalReconstructor, FaceInput, FaceOutput, ModelReconstructor,
                                frame_to_window, landmark_map_for)
from stream.smoothing import LandmarkSmoother, MaskSmoother
from stream.tracking import FaceTracker, RunningMode

WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "weights"
MASKED_FRACTION = 0.03   # share of the canonical crop a covering must fill to count as a mask
UNMASKED_FRACTION = 0.015  # ... and below which a masked track counts as unmasked again (hysteresis)


@dataclass
class Face:
    box: tuple[int, int, int, int]      # x0, y0, x1, y1 in frame pixels
    landmarks: np.ndarray               # (468, 2) float32 frame pixels (hidden ones estimated)
    track_id: int
    mask: np.ndarray                    # (H, W) uint8 0/255: the face covering in the frame
    masked: bool                        # a covering was found on this face
    gender: str                         # "female" | "male" | "unknown"
    gender_score: float                 # probability of `gender`
    landmark_source: str = "mesh"       # "mesh" | "detector" | "analyser"


@dataclass
class Result:
    image: np.ndarray                   # reconstructed BGR frame, same shape and dtype as the input
    faces: list[Face]
    timings_ms: dict[str, float] = field(default_factory=dict)


class _TrackState:
    def __init__(self, min_cutoff, beta, mask_alpha):
        self.landmarks = LandmarkSmoother(min_cutoff, beta)
        self.analyser_landmarks = LandmarkSmoother(min_cutoff, beta)
        self.mask = MaskSmoother(alpha=mask_alpha)
        self.gender = None
        self.matrix = None
        self.coverage = None      # EMA of the covered share of the crop
        self.masked = False


def models_available(preset: str = "fast") -> bool:
    return (WEIGHTS / "analyser.onnx").exists() and (WEIGHTS / f"inpainter_{preset}.onnx").exists()


class Unmasker:
    """Reconstructs masked faces in frames. Not thread-safe: one instance per thread.

    `frame_holes` (default True here): the hole is built at the frame's resolution with the eyes
    and brows cut out (stream.hole); False: the hole of the inpainter's window warped back, as the
    GPU path (GpuUnmasker) still blends."""

    FRAME_HOLES = True

    def __init__(self, method: str = "auto", backend: str = "auto", device: str | None = None,
                 max_faces: int = 16, threads: int | None = None, preset: str = "fast",
                 smoothing: bool = True, min_cutoff: float = 1.0, beta: float = 20.0,
                 mask_alpha: float = 0.5, dilate_px: int = 4, feather_px: int = 3,
                 refine_edges: bool = True, frame_holes: bool | None = None):
        if method == "auto":
            method = "model" if models_available(preset) else "classical"
        if method == "model":
            if not models_available(preset):
                raise ModelError(f"the shipped models are missing from {WEIGHTS} "
                                 f"(analyser.onnx, inpainter_{preset}.onnx); use --method classical")
            self.reconstructor = ModelReconstructor(backend=backend, device=device, threads=threads,
                                                    preset=preset)
        elif method == "classical":
            self.reconstructor = ClassicalReconstructor()
        else:
            raise ValueError(f"unknown method {method!r}: use 'model', 'classical' or 'auto'")
        self.method = method
        self.max_faces = max_faces
        self.smoothing = smoothing
        self.min_cutoff, self.beta, self.mask_alpha = min_cutoff, beta, mask_alpha
        self.dilate_px, self.feather_px = dilate_px, feather_px
        self.refine_edges = refine_edges   # guided refinement of the covering at frame resolution
        self.frame_holes = type(self).FRAME_HOLES if frame_holes is None else frame_holes
        self._trackers: dict[RunningMode, FaceTracker] = {}
        self._states: dict[int, _TrackState] = {}
        self._last_ts: float | None = None
        self._canonical = load_canonical_shape()
        self._frame_holes = []

    @property
    def backend(self) -> str:
        return getattr(self.reconstructor, "backend", "opencv")

    def _tracker(self, mode: RunningMode) -> FaceTracker:
        if mode not in self._trackers:
            self._trackers[mode] = self._make_tracker(mode)
        return self._trackers[mode]

    def _make_tracker(self, mode: RunningMode) -> FaceTracker:
        return FaceTracker(mode, max_faces=self.max_faces)

    def reset(self) -> None:
        """Forget all temporal state (tracks, filters, last timestamp)."""
        for t in self._trackers.values():
            t.close()
        self._trackers.clear()
        self._states.clear()
        self._last_ts = None

    def close(self) -> None:
        self.reset()
        if hasattr(self.reconstructor, "close"):
            self.reconstructor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the frame step ----------------------------------------------------------
    def process(self, frame_bgr: np.ndarray, timestamp_ms: float | None = None) -> Result:
        if not isinstance(frame_bgr, np.ndarray) or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 \
                or frame_bgr.dtype != np.uint8:
            raise ValueError("frame_bgr must be an H x W x 3 uint8 BGR array")
        video = timestamp_ms is not None
        if video:
            if self._last_ts is not None and timestamp_ms <= self._last_ts:
                raise ValueError(f"timestamps must increase: got {timestamp_ms} ms after {self._last_ts} ms")
            self._last_ts = float(timestamp_ms)
        timings = {}
        t0 = time.perf_counter()
        tracker = self._tracker(RunningMode.VIDEO if video else RunningMode.IMAGE)
        tracked = tracker.process(frame_bgr)
        t1 = time.perf_counter()
        timings["track"] = (t1 - t0) * 1e3

        if video:  # drop state of tracks that are gone; fresh state for new tracks
            alive = tracker.active_track_ids
            self._states = {k: v for k, v in self._states.items() if k in alive}
        states, inputs = [], []
        for tf in tracked:
            st = None
            lm = tf.landmarks
            if video:
                st = self._states.get(tf.track_id)
                if st is None or tf.is_new:
                    st = self._states[tf.track_id] = _TrackState(self.min_cutoff, self.beta, self.mask_alpha)
                if self.smoothing:
                    lm = st.landmarks(lm, timestamp_ms / 1000.0)
            states.append(st)
            inputs.append(FaceInput(align_face(lm, self._canonical), lm))
        t2 = time.perf_counter()
        timings["align"] = (t2 - t1) * 1e3

        analyses = self.reconstructor.analyse(frame_bgr, inputs)
        # Faces found only by the detector have coarse landmarks: re-align them
        # on the analyser's own landmark estimate and analyse once more.
        redo = [i for i, tf in enumerate(tracked) if tf.source == "detector" and self.method == "model"]
        if redo:
            for i in redo:
                lm = inputs[i].alignment.to_frame(analyses[i].landmarks_crop)
                inputs[i] = FaceInput(align_face(lm, self._canonical), lm)
            again = self.reconstructor.analyse(frame_bgr, [inputs[i] for i in redo])
            for i, a in zip(redo, again):
                analyses[i] = a
        t3 = time.perf_counter()
        timings["analyse"] = (t3 - t2) * 1e3

        faces, jobs, holes = [], [], []
        h, w = frame_bgr.shape[:2]
        for tf, inp, ana, st in zip(tracked, inputs, analyses, states):
            prob = ana.mask_prob
            if st is not None and self.smoothing:
                if st.matrix is not None and _large_motion(st.matrix, inp.alignment.matrix):
                    st.mask.reset()
                st.matrix = inp.alignment.matrix
                prob, mask_crop = st.mask(prob)
            else:
                mask_crop = prob > 0.5
            coverage = float(mask_crop.mean())
            if st is not None:
                st.coverage = coverage if st.coverage is None else 0.7 * st.coverage + 0.3 * coverage
                st.masked = st.coverage > (UNMASKED_FRACTION if st.masked else MASKED_FRACTION)
                masked, coverage = st.masked, st.coverage
            else:
                masked = coverage > MASKED_FRACTION
            # Landmarks: the tracker's where visible; where a covering hides
            # them, the analyser's (trained for exactly that), cross-faded by
            # how covered the face is so they never jump between the two.
            lm = inp.landmarks.copy()
            source = tf.source
            if self.method == "model":
                lm_analyser = inp.alignment.to_frame(ana.landmarks_crop)
                if st is not None and self.smoothing:
                    lm_analyser = st.analyser_landmarks(lm_analyser, timestamp_ms / 1000.0)
                if tf.source == "detector":
                    lm, source = lm_analyser, "analyser"
                else:
                    blend = float(np.clip((coverage - UNMASKED_FRACTION) / 0.05, 0.0, 1.0))
                    lm[HIDDEN_REGION] = (1 - blend) * lm[HIDDEN_REGION] + blend * lm_analyser[HIDDEN_REGION]
            gender_p = ana.gender_female
            if st is not None and self.method == "model":   # gender is a property of the track
                st.gender = gender_p if st.gender is None else 0.9 * st.gender + 0.1 * gender_p
                gender_p = st.gender
            if self.method == "model":
                gender = "female" if gender_p >= 0.5 else "male"
                gender_score = gender_p if gender_p >= 0.5 else 1 - gender_p
            else:
                gender, gender_score = "unknown", 0.0
            hole = None
            if masked and self.frame_holes:
                # The eyes are protected where the tracker sees them in this frame (unsmoothed: no lag).
                hole = frame_hole(frame_bgr, mask_crop, inp.alignment, tf.landmarks,
                                  frame_to_window(inp.alignment, self.reconstructor.window_size),
                                  self.reconstructor.window_size, self.dilate_px, self.feather_px,
                                  self.refine_edges)
            full_mask = hole.full_mask((h, w)) if hole is not None else \
                self._mask_to_frame(mask_crop, inp.alignment, (h, w))
            faces.append(Face(tf.box, lm.astype(np.float32), tf.track_id, full_mask, bool(masked),
                              gender, float(gender_score), source))
            if masked and (hole is not None or not self.frame_holes):
                # The inpainter is guided by the same (smoothed, combined) landmarks we report.
                guide = FaceOutput(ana.mask_prob, ana.gender_female, inp.alignment.to_crop(lm))
                jobs.append((inp, guide, mask_crop, gender_p))
                holes.append(hole)
        t4 = time.perf_counter()
        if jobs:
            self._frame_holes = holes          # the CPU blend's frame-resolution holes, one per job
            out, t_inpaint = self._inpaint_and_blend(frame_bgr, jobs)
            self._frame_holes = []
            timings["inpaint"] = t_inpaint
        else:
            out = frame_bgr.copy()
        t5 = time.perf_counter()
        # Composite: the per-face mask smoothing and frame holes (t3 -> t4), then warp back and blend.
        timings["composite"] = (t5 - t3) * 1e3 - timings.get("inpaint", 0.0)
        timings.setdefault("inpaint", 0.0)
        return Result(out, faces, timings)

    # -- helpers -----------------------------------------------------------------
    @staticmethod
    def _mask_to_frame(mask_crop: np.ndarray, alignment: Alignment, shape) -> np.ndarray:
        """The crop-space mask in frame pixels; only the face's region is warped (cheap at 4K)."""
        s = mask_crop.shape[0]
        m = alignment.matrix * (s / alignment.size)          # frame -> mask crop
        full = np.zeros(shape[:2], np.uint8)
        x0, y0, x1, y1 = _crop_bounds(cv2.invertAffineTransform(m), s, shape)
        if x1 <= x0 or y1 <= y0:
            return full
        shifted = m.copy()
        shifted[:, 2] += m[:, :2] @ [x0, y0]                 # ROI pixel -> mask crop
        roi = cv2.warpAffine(mask_crop.astype(np.uint8) * 255, shifted, (x1 - x0, y1 - y0),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        full[y0:y1, x0:x1] = np.where(roi >= 128, 255, 0)
        return full

    def _inpaint_and_blend(self, frame, jobs):
        """jobs: (FaceInput, FaceOutput guide, mask crop, P(female)) per masked face; their
        stream.hole.FrameHole in self._frame_holes (set by process)."""
        if not self.frame_holes:
            return self._inpaint_and_blend_window(frame, jobs)
        size = self.reconstructor.window_size
        if len(self._frame_holes) != len(jobs):      # called with jobs alone: their holes from the masks
            self._frame_holes = [frame_hole(frame, mask_crop, inp.alignment, inp.alignment.to_frame(ana.landmarks_crop),
                                            frame_to_window(inp.alignment, size), size, self.dilate_px,
                                            self.feather_px, self.refine_edges)
                                 for inp, ana, mask_crop, _ in jobs]
        windows, holes, maps, genders, mats = [], [], [], [], []
        for (inp, ana, _, gender_p), hole in zip(jobs, self._frame_holes):
            m = frame_to_window(inp.alignment, size)
            windows.append(cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REPLICATE))
            holes.append(hole.window_hole)
            maps.append(landmark_map_for(ana.landmarks_crop, size))
            genders.append(gender_p)
            mats.append(m)
        t = time.perf_counter()
        redrawn = self.reconstructor.inpaint(np.stack(windows), np.stack(holes), np.stack(maps),
                                             np.array(genders, np.float32))
        t_inpaint = (time.perf_counter() - t) * 1e3
        out = frame.copy()
        for m, hole, pred in zip(mats, self._frame_holes, redrawn):
            # The hole's alpha is at frame resolution and exactly 0 outside it and above the eyes.
            x0, y0, x1, y1 = hole.rect
            roi_m = cv2.invertAffineTransform(m)
            roi_m[:, 2] -= [x0, y0]
            p = cv2.warpAffine(pred, roi_m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            a = hole.alpha
            roi = out[y0:y1, x0:x1]
            blended = cv2.blendLinear(p, roi, a, 1.0 - a)
            # Where alpha is 0 the frame keeps its exact pixels (no rounding drift).
            np.copyto(roi, blended, where=(a > 0)[..., None])
        return out, t_inpaint


    def _inpaint_and_blend_window(self, frame, jobs):
        """The hole of the inpainter's window (the analyser's mask, dilated and feathered there),
        warped back: what the GPU path blends (frame_holes=False)."""
        size = self.reconstructor.window_size
        s_an = ANALYSER["input_size"]
        wm = window_matrix(size).copy()          # analyser crop -> window
        wm[:, :2] *= CANONICAL_SIZE / s_an
        windows, holes, maps, genders, mats = [], [], [], [], []
        for inp, ana, mask_crop, gender_p in jobs:
            m = frame_to_window(inp.alignment, size)
            windows.append(cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REPLICATE))
            hole = cv2.warpAffine(mask_crop.astype(np.float32), wm, (size, size), flags=cv2.INTER_LINEAR)
            k = 2 * max(1, round(self.dilate_px * size / 128)) + 1
            hole = cv2.dilate((hole > 0.5).astype(np.uint8), np.ones((k, k), np.uint8)).astype(np.float32)
            holes.append(hole)
            maps.append(landmark_map_for(ana.landmarks_crop, size))
            genders.append(gender_p)
            mats.append(m)
        t = time.perf_counter()
        redrawn = self.reconstructor.inpaint(np.stack(windows), np.stack(holes), np.stack(maps),
                                             np.array(genders, np.float32))
        t_inpaint = (time.perf_counter() - t) * 1e3
        out = frame.copy()
        h, w = frame.shape[:2]
        for m, hole, pred in zip(mats, holes, redrawn):
            fk = 2 * self.feather_px + 1
            alpha = cv2.GaussianBlur(hole, (fk, fk), 0) * hole      # feathered inside the hole only
            ys, xs = np.nonzero(alpha > 0)
            if len(xs) == 0:
                continue
            inv = cv2.invertAffineTransform(m)
            x0, y0, x1, y1 = _crop_bounds(inv, size, (h, w), rect=(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1),
                                          margin=1)
            if x1 <= x0 or y1 <= y0:
                continue
            roi_m = inv.copy()
            roi_m[:, 2] -= [x0, y0]
            a = cv2.warpAffine(alpha, roi_m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            p = cv2.warpAffine(pred, roi_m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            roi = out[y0:y1, x0:x1]
            blended = cv2.blendLinear(p, roi, a, 1.0 - a)
            np.copyto(roi, blended, where=(a > 0)[..., None])
        return out, t_inpaint


def _crop_bounds(crop_to_frame: np.ndarray, size: int, shape, rect=None,
                margin: int = 0) -> tuple[int, int, int, int]:
    """Frame-pixel bounding box (clipped to the frame) of a crop region mapped by `crop_to_frame`.

    The region is the whole `size` x `size` crop, or `rect` = (x0, y0, x1, y1) inside it,
    grown by `margin` frame pixels.
    """
    x0, y0, x1, y1 = rect if rect is not None else (0, 0, size, size)
    pts = transform_points(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64), crop_to_frame)
    fx0, fy0 = np.maximum(np.floor(pts.min(0)).astype(int) - margin, 0)
    fx1, fy1 = np.minimum(np.ceil(pts.max(0)).astype(int) + margin, [shape[1], shape[0]])
    return int(fx0), int(fy0), int(fx1), int(fy1)


def _large_motion(prev: np.ndarray, cur: np.ndarray) -> bool:
    """True when the face jumped (scale change > 25 % or shift > 15 % of the crop)."""
    s_prev = np.sqrt(abs(np.linalg.det(prev[:, :2])))
    s_cur = np.sqrt(abs(np.linalg.det(cur[:, :2])))
    if not 0.8 < s_cur / s_prev < 1.25:
        return True
    # Where the previous crop centre lands in the current crop.
    c_frame = cv2.invertAffineTransform(prev) @ np.array([CANONICAL_SIZE / 2, CANONICAL_SIZE / 2, 1])
    c_now = cur[:, :2] @ c_frame + cur[:, 2]
    return bool(np.linalg.norm(c_now - CANONICAL_SIZE / 2) > 0.15 * CANONICAL_SIZE)
