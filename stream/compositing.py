"""The compositor stage on the CPU (numpy / OpenCV): cut each masked face's lower-face window out of
the frame, build its hole (models.spec's hole rule) and guide map, have the reconstructor redraw all
windows in one batch, and blend them back, feathered inside the dilated hole only: pixels outside it
keep their exact values.

The torch implementation of the same stage is `stream.gpu.TorchCompositor`.
"""
from __future__ import annotations

import time

import cv2
import numpy as np

from models.spec import ANALYSER, CANONICAL_SIZE, HOLE_DILATE_PX, dilate_hole, window_matrix
from stream.alignment import Alignment, border_classes, compose_affine, transform_points
from stream.hole import window_protected_region
from stream.reconstruct import frame_to_window, landmark_map_for
from stream.reference import REFERENCE_PX, match_fallback_border, render_size
from stream.stages import FrameContext, InpaintJob, Reconstructor, Redraw

FEATHER_PX = 3     # Gaussian feathering of the hole's edge: a (2 * 3 + 1) px kernel
# The generated fill's inner border ring is moved this share of the way to what lies just outside the
# hole, each kind to its own (stream.reference.match_fallback_border within stream.alignment.border_classes:
# the face's skin to the skin, past the face's outline to the background, nothing to the eyes above a
# covering worn high), fading a few pixels into the hole. Chosen on the val split (300 faces; 400 at
# 0.5 / 0.75 / 1 with the skin alone matched: the seams fell with the share, PSNR stayed within 0.05 dB):
# border steps above 2.3 ΔE on the skin 10.7 -> 2.0 % of faces, on the whole border 11.7 -> 3.3 %, hole
# colour 2.64 -> 2.61 ΔE, PSNR +0.02 dB. Matching toward the eyes as well darkened the cheeks under them
# (identity cosine on the real clip 04 -0.015).
GENERATED_BORDER_MATCH = 1.0


def match_generated_borders(fills: np.ndarray, windows: np.ndarray, holes: np.ndarray, window_points,
                            strength: float = GENERATED_BORDER_MATCH) -> np.ndarray:
    """The generated fills (N, S, S, 3 uint8) with their border moved toward the face around the hole
    (GENERATED_BORDER_MATCH); `window_points` (N, 468, 2) the faces' landmarks in window pixels."""
    if strength <= 0:
        return fills
    out = np.empty_like(fills)
    for i, (fill, window, hole, points) in enumerate(zip(fills, windows, holes, window_points)):
        offset, _ = match_fallback_border(fill, window, hole, regions=border_classes(points, window.shape[0]))
        # Added and saturated in one pass (rounded to nearest), not through float copies of the window.
        out[i] = cv2.add(fill, offset if strength == 1 else strength * offset, dtype=cv2.CV_8U)
    return out


class CpuCompositor:
    renders_references = True     # draws InpaintJob.reference (the own-face path) over the generated face
    carries_redraws = True        # blends InpaintJob.carry and returns InpaintJob.redraw (the crowd cadence)

    def __init__(self, reconstructor: Reconstructor, dilate_px: int = HOLE_DILATE_PX, feather_px: int = FEATHER_PX,
                 reference_px: int | None = REFERENCE_PX):
        self.reconstructor = reconstructor
        self.dilate_px, self.feather_px = dilate_px, feather_px
        self.border_match = GENERATED_BORDER_MATCH     # 0: the generated fill as drawn
        # The own-face path's largest render (px): a face whose window spans more frame pixels than the
        # window is rendered at its frame resolution up to this size; None (or the window's size or
        # less) renders in the inpainting window.
        self.reference_px = reference_px

    @property
    def window_size(self) -> int:
        return self.reconstructor.window_size

    def composite(self, ctx: FrameContext, jobs: list[InpaintJob]) -> tuple[np.ndarray, float]:
        if ctx.as_tensor:
            raise ValueError("as_tensor needs the GPU path (stream.gpu.GpuUnmasker); this one returns arrays")
        if not jobs:
            return ctx.image.copy(), 0.0
        return self.inpaint_and_blend(ctx.image, jobs, video=ctx.video)

    def inpaint_and_blend(self, frame: np.ndarray, jobs: list[InpaintJob], video: bool = False) -> tuple[np.ndarray, float]:
        size = self.window_size
        fresh = [job for job in jobs if job.carry is None]
        mats, holes, redrawn, t_inpaint = self._redraw(frame, fresh, video) if fresh else ([], [], [], 0.0)
        out = frame.copy()
        h, w = frame.shape[:2]
        for job, m, hole, pred in zip(fresh, mats, holes, redrawn):
            if job.frame_hole is not None:
                blend_frame_hole(out, job.frame_hole, m, pred)
                # Kept for the crowd cadence: the window as drawn, and how it sits on the face's window.
                to_window = frame_to_window(job.alignment, size)
                job.redraw = Redraw(pred, compose_affine(m, cv2.invertAffineTransform(to_window)), to_window,
                                    job.frame_hole)
                continue
            # Feather inside the dilated hole only: alpha is exactly 0 outside it.
            fk = 2 * self.feather_px + 1
            alpha = cv2.GaussianBlur(hole, (fk, fk), 0) * hole
            # Only the part of the window the feathered hole touches is warped and blended.
            ys, xs = np.nonzero(alpha > 0)
            if len(xs) == 0:
                continue
            inv = cv2.invertAffineTransform(m)
            x0, y0, x1, y1 = crop_bounds(inv, size, (h, w), rect=(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1),
                                         margin=1)
            if x1 <= x0 or y1 <= y0:
                continue
            roi_m = inv.copy()
            roi_m[:, 2] -= [x0, y0]
            a = cv2.warpAffine(alpha, roi_m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            p = cv2.warpAffine(pred, roi_m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            _blend_into(out[y0:y1, x0:x1], p, a)
        for job in jobs:
            if job.carry is not None:
                # The last frame's redraw, on the face where it is now (its hole moved with it: stream.unmasker).
                m = compose_affine(job.carry.from_window, frame_to_window(job.alignment, size))
                blend_frame_hole(out, job.frame_hole, m, job.carry.pixels)
        return out, t_inpaint

    def _redraw(self, frame: np.ndarray, jobs: list[InpaintJob], video: bool):
        """The jobs' windows redrawn in one batch: (frame -> redrawn-pixels matrices, window holes,
        redrawn windows, ms spent drawing)."""
        size = self.window_size
        s_an = ANALYSER["input_size"]
        # analyser crop -> window: (window <- canonical) o (canonical <- analyser crop); the same for every face
        wm = window_matrix(size).copy()
        wm[:, :2] *= CANONICAL_SIZE / s_an
        windows, holes, maps, genders, mats = [], [], [], [], []
        for job in jobs:
            m = frame_to_window(job.alignment, size)
            windows.append(cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REPLICATE))
            if job.frame_hole is not None:
                hole = job.frame_hole.window_hole
            else:
                hole = cv2.warpAffine(np.asarray(job.mask).astype(np.float32), wm, (size, size),
                                      flags=cv2.INTER_LINEAR)
                hole = dilate_hole((hole > 0.5).astype(np.uint8), size, self.dilate_px).astype(np.float32)
                # Never over the eyes, the brows or above them, whatever the mask says.
                hole[window_protected_region(job.landmarks_crop, size)] = 0.0
            holes.append(hole)
            maps.append(landmark_map_for(job.landmarks_crop, size))
            genders.append(job.gender)
            mats.append(m)
        t = time.perf_counter()
        window_stack, hole_stack = np.stack(windows), np.stack(holes)
        redrawn = self.reconstructor.inpaint(window_stack, hole_stack, np.stack(maps), np.array(genders, np.float32))
        # Every face's landmarks in window pixels: the border match and the own-face render both use them.
        points = [transform_points(j.landmarks_crop, window_matrix(size)) for j in jobs]
        if self.border_match and self.reconstructor.name == "model":
            # Telea's fill grows from the border already; the network's may not meet it.
            redrawn = match_generated_borders(redrawn, window_stack, hole_stack, points, self.border_match)
        # The own-face path replaces the generated face wherever the reference has texture; with
        # reference_px, a large face's reference is rendered at (up to) the frame's resolution.
        redrawn, mats = list(redrawn), list(mats)
        for i, job in enumerate(jobs):
            if job.reference is None:
                continue
            r = render_size(mats[i], size, self.reference_px) if job.frame_hole is not None else size
            if r == size:
                redrawn[i], _ = job.reference.render(points[i], windows[i], holes[i], redrawn[i], smooth=video)
                continue
            # Drawn at r px around the hole only: frame -> that part of the r-px window.
            redrawn[i], _, (x0, y0) = job.reference.render_region(points[i], windows[i], holes[i], redrawn[i], r,
                                                                  smooth=video)
            mats[i] = mats[i] * (r / size)
            mats[i][:, 2] -= (x0, y0)
        return mats, holes, redrawn, (time.perf_counter() - t) * 1e3

    def close(self) -> None:
        self.reconstructor.close()


def blend_frame_hole(out: np.ndarray, hole, frame_to_window_m: np.ndarray, pred: np.ndarray) -> None:
    """Blend a redrawn window into `out` in place through a frame-resolution hole (stream.hole.FrameHole):
    its alpha is exactly 0 outside the hole and above the eyes, so those pixels keep their values."""
    x0, y0, x1, y1 = hole.rect
    roi_m = cv2.invertAffineTransform(frame_to_window_m)
    roi_m[:, 2] -= [x0, y0]
    p = cv2.warpAffine(pred, roi_m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    _blend_into(out[y0:y1, x0:x1], p, hole.alpha)


def _blend_into(roi: np.ndarray, pred: np.ndarray, alpha: np.ndarray) -> None:
    """roi = pred * alpha + roi * (1 - alpha), in place. Where alpha is 0 the frame keeps its exact
    pixels: OpenCV's 8-bit blend returns the second image exactly at weight 1 (tested bit for bit
    outside every hole), so no masked copy is needed (that copy cost 5x the blend)."""
    cv2.blendLinear(pred, roi, alpha, 1.0 - alpha, dst=roi)


def mask_to_frame(mask_crop: np.ndarray, alignment: Alignment, shape) -> np.ndarray:
    """A crop-space mask in frame pixels (uint8 0/255); only the face's region is warped (cheap at 4K)."""
    s = mask_crop.shape[0]
    m = alignment.matrix * (s / alignment.size)          # frame -> mask crop
    full = np.zeros(shape[:2], np.uint8)
    x0, y0, x1, y1 = crop_bounds(cv2.invertAffineTransform(m), s, shape)
    if x1 <= x0 or y1 <= y0:
        return full
    shifted = m.copy()
    shifted[:, 2] += m[:, :2] @ [x0, y0]                 # ROI pixel -> mask crop
    roi = cv2.warpAffine(mask_crop.astype(np.uint8) * 255, shifted, (x1 - x0, y1 - y0),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    full[y0:y1, x0:x1] = np.where(roi >= 128, 255, 0)
    return full


def crop_bounds(crop_to_frame: np.ndarray, size: int, shape, rect=None,
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
