"""The hole to redraw, at the frame's own resolution: edge-refined, and never above the eyes.

The analyser segments the covering in a 128 px crop: at 1080p one of its pixels spans 4-6 frame
pixels, and a mask warped up from it leaves a ring of the covering's colour wherever its edge
falls inside the true edge. `frame_hole` therefore refines the covering in the frame: the crop's
mask is warped to the frame; in a band of a few mask pixels around its edge every frame pixel is
re-decided by colour (nearest of a few k-means colours, Lab, of the surely-covered inside and of the
surely-not-covered outside, sampled in this frame), and the result is smoothed along the frame's
own edges by a guided filter (cv2.ximgproc.guidedFilter, opencv-contrib); then grown by a little
and feathered outwards. (A guided filter alone only smooths the crop's edge: it does not move it
onto the colour edge when the segmentation falls a few pixels short, as measured in
benchmarks.detection's fringe case.)
The inpainter's hole in its window is that frame hole warped back (plus one window pixel), so
everything the blend shows is redrawn content.

Eyes and brows are never redrawn: each side's eye and brow (the convex hull of their mesh points,
grown by a margin that takes in the lower lid) and everything above the line through the brows
(forehead; in the face-aligned crop, so tilted heads are handled) are cut out of the hole, in the
window and in the frame, so those pixels stay bit-identical to the input whatever the segmentation
says (a hand or a mask moving over the upper face). The hole may still reach up between the eyes
(the nose bridge, where a mask's top edge sits).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.spec import CANONICAL_SIZE, window_matrix
from stream.alignment import EYE_CONTOURS, Alignment, compose_affine, transform_points

BROWS = [[70, 63, 105, 66, 107, 46, 53, 52, 65, 55], [336, 296, 334, 293, 300, 276, 283, 282, 295, 285]]
EYE_MARGIN = 0.05        # of the distance between the eye centres: how far around each eye is kept (0.10 left a
                         # white sliver of a KN94 worn high under the eyes on the real clip 04)
REFINE_ABOVE = 1.5       # guided refinement when one mask pixel spans more frame pixels than this
GUIDE_EPS = 1e-3         # guided filter regularisation, guide in [0, 1] (edges of contrast >~ 0.03)
BAND = 4.0               # mask pixels each side of the crop's edge re-decided by colour
COLOURS = 4              # k-means colours per side (patterned coverings, skin + background)
KMEANS_SAMPLES = 1200    # pixels per side the colours are fitted to
RELEASE = 4.0            # a covered pixel is released when its squared colour distance to the inside is this many times the outside's


@dataclass
class FrameHole:
    rect: tuple[int, int, int, int]   # x0, y0, x1, y1: the frame region alpha covers
    alpha: np.ndarray                 # (y1-y0, x1-x0) float32 blend weight; exactly 0 above the eye line
    covering: np.ndarray              # (y1-y0, x1-x0) bool: the covering at frame resolution (outside the eyes and brows)
    window_hole: np.ndarray           # (S, S) float32 0/1: what the inpainter redraws
    refined: bool

    def full_mask(self, shape) -> np.ndarray:
        """The covering as a frame-sized uint8 0/255 mask."""
        out = np.zeros(shape[:2], np.uint8)
        x0, y0, x1, y1 = self.rect
        out[y0:y1, x0:x1][self.covering] = 255
        return out


def protected_region(landmarks: np.ndarray, to_canonical: np.ndarray, rect) -> np.ndarray:
    """(h, w) bool over `rect` (x0, y0, x1, y1) in the landmarks' pixel space: each eye with its
    brow (grown by EYE_MARGIN) and everything above the line through the brows (in the canonical
    crop, whose y axis `to_canonical` (2x3, these pixels -> canonical) gives)."""
    x0, y0, x1, y1 = rect
    eyes = landmarks[EYE_CONTOURS]
    iod = float(np.linalg.norm(eyes[:16].mean(0) - eyes[16:].mean(0)))
    brows = landmarks[BROWS[0] + BROWS[1]]
    line_y = float(transform_points(brows, to_canonical)[:, 1].mean())
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)
    a, b, c = to_canonical[1]
    keep = (b * ys[:, None] + a * xs[None, :] + c) <= line_y
    h, w = keep.shape
    hulls = np.zeros(keep.shape, np.uint8)
    margin = max(1.0, EYE_MARGIN * iod)
    boxes = []
    for eye, brow in ((eyes[:16], BROWS[0]), (eyes[16:], BROWS[1])):
        pts = np.vstack([eye, landmarks[brow]])
        hull = cv2.convexHull(np.round((pts - [x0, y0]) * 16).astype(np.int32))
        cv2.fillConvexPoly(hulls, hull, 1, cv2.LINE_8, shift=4)
        bx, by, bw, bh = cv2.boundingRect(hull >> 4)
        pad = int(np.ceil(margin)) + 3
        boxes.append((max(bx - pad, 0), max(by - pad, 0), min(bx + bw + pad, w), min(by + bh + pad, h)))
    # Each hull grown by the margin: the distance transform only on a patch around each eye (the
    # hull and its margin lie inside it; over the whole region it cost ten times more).
    grown = keep.copy()
    for px0, py0, px1, py1 in boxes:
        if px1 > px0 and py1 > py0:
            patch = 1 - hulls[py0:py1, px0:px1]
            grown[py0:py1, px0:px1] |= cv2.distanceTransform(patch, cv2.DIST_L2, 3) <= margin
    return grown


def window_protected_region(landmarks_crop: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: the inpainting-window pixels a hole made in the window itself (a job without
    a FrameHole: the GPU path, and jobs passed on their own) must never reach: each eye with its brow
    (grown by EYE_MARGIN) and everything above the brows, from the canonical-crop landmarks.

    Such a window is blended by reading its alpha bilinearly at each frame pixel: a frame pixel just
    inside the region can read window pixels up to two away across its edge (one for the bilinear
    footprint, one for where the edge falls between pixel centres), so the region is grown by two.
    """
    wm = window_matrix(size)
    points = transform_points(np.asarray(landmarks_crop, np.float32), wm)
    region = protected_region(points, cv2.invertAffineTransform(wm), (0, 0, size, size)).astype(np.uint8)
    return cv2.dilate(region, np.ones((5, 5), np.uint8)) > 0


def snap_to_colours(roi_bgr: np.ndarray, inside: np.ndarray, band: int, seed: int = 0) -> np.ndarray:
    """`inside` with the pixels within `band` px of its edge re-decided by colour: covered where the
    pixel is nearer (Lab) to one of the inside's k-means colours than to the outside's."""
    # Distances to the edge (a distance transform is far cheaper than morphology with wide disks).
    m = inside.astype(np.uint8)
    depth_in = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    depth_out = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)
    sure_in = depth_in > band
    near_out = (depth_out > band) & (depth_out <= 3 * band)
    unsure = ~sure_in & (depth_out <= band)
    if min(np.count_nonzero(sure_in), np.count_nonzero(near_out)) < COLOURS * 4 or not unsure.any():
        return inside
    def sample(sel, n=KMEANS_SAMPLES):
        # Evenly spaced over the region's pixels (deterministic, and spread like random picks).
        flat = np.flatnonzero(sel)
        if len(flat) > n:
            flat = flat[np.linspace(0, len(flat) - 1, n).astype(np.intp)]
        return roi_bgr.reshape(-1, 3)[flat]

    # Only the pixels looked at go to Lab (the band and two samples: ~a third of the region).
    px_in, px_out, px_unsure = sample(sure_in), sample(near_out), roi_bgr[unsure]
    lab = cv2.cvtColor(np.concatenate([px_in, px_out, px_unsure])[None], cv2.COLOR_BGR2LAB)[0]
    lab = lab.astype(np.float32)
    lab_in, lab_out, px = lab[:len(px_in)], lab[len(px_in):len(px_in) + len(px_out)], lab[len(px_in) + len(px_out):]

    def centres(samples):
        crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 8, 1.0)
        cv2.setRNGSeed(seed)
        _, _, c = cv2.kmeans(samples, COLOURS, None, crit, 1, cv2.KMEANS_PP_CENTERS)
        return c

    c_in, c_out = centres(lab_in), centres(lab_out)

    channels = np.ascontiguousarray(px.T)          # (3, N): whole-row operations per centre

    def nearest(c):      # squared distance to the nearest centre (per centre and channel: a third of a matmul's cost)
        best = None
        for centre in c:
            d = (channels[0] - centre[0]) ** 2 + (channels[1] - centre[1]) ** 2 + (channels[2] - centre[2]) ** 2
            best = d if best is None else np.minimum(best, d, out=best)
        return best

    d_in, d_out = nearest(c_in), nearest(c_out)
    out = sure_in.copy()
    # What the analyser calls covered is released only when clearly nearer the outside's colours: a
    # white covering against a white wall (or shaded grey over a grey shirt) is near both, and a
    # fragment left at the border shows far more than a little more skin redrawn.
    out[unsure] = d_in < np.where(inside[unsure], RELEASE * d_out, d_out)
    # Keep what touches the sure inside (a stray pixel of covering colour far out is not it).
    n, labels = cv2.connectedComponents(out.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[sure_in])] = True
    keep[0] = False
    return keep[labels]


def fast_guided_upsample(guide: np.ndarray, guide_small: np.ndarray, src_small: np.ndarray,
                         radius: int, eps: float = GUIDE_EPS) -> np.ndarray:
    """He & Sun's fast guided filter: the local linear model (src ~ a * guide + b) fitted at low
    resolution, its coefficients upsampled and applied to the full-resolution `guide`, so edges
    land on the full-resolution frame's edges at a fraction of the full filter's cost."""
    k = (2 * radius + 1, 2 * radius + 1)

    def box(x):
        return cv2.boxFilter(x, -1, k, borderType=cv2.BORDER_REFLECT)

    m_i, m_p = box(guide_small), box(src_small)
    a = (box(guide_small * src_small) - m_i * m_p) / (box(guide_small * guide_small) - m_i * m_i + eps)
    b = m_p - a * m_i
    size = guide.shape[1::-1]
    return cv2.resize(box(a), size, interpolation=cv2.INTER_LINEAR) * guide + \
        cv2.resize(box(b), size, interpolation=cv2.INTER_LINEAR)


def frame_hole(frame: np.ndarray, mask_crop: np.ndarray, alignment: Alignment, landmarks: np.ndarray,
               frame_to_window: np.ndarray, size: int, dilate_px: int = 4, feather_px: int = 3,
               refine: bool = True) -> FrameHole | None:
    """The frame-resolution hole of one face (None when nothing is left to redraw).

    `mask_crop` is the covering in the analyser crop (bool / 0-1, S x S); `landmarks` the face's
    frame landmarks (for the eye line); `frame_to_window` the 2x3 map into the inpainter's window
    of `size` px. `dilate_px` / `feather_px` are in window pixels, as before refinement; a refined
    covering fits the edge, so it is grown by a quarter of that (and feathered outwards)."""
    h, w = frame.shape[:2]
    s = mask_crop.shape[0]
    to_mask = alignment.matrix * (s / alignment.size)                 # frame -> mask crop
    to_canonical = alignment.matrix * (CANONICAL_SIZE / alignment.size)
    px_per_mask = 1.0 / np.sqrt(abs(np.linalg.det(to_mask[:, :2])))
    px_per_window = 1.0 / np.sqrt(abs(np.linalg.det(frame_to_window[:, :2])))

    ys, xs = np.nonzero(mask_crop > 0.5)
    if len(xs) == 0:
        return None
    refined = refine and px_per_mask > REFINE_ABOVE
    grow = max(1, int(round((0.25 if refined else 1.0) * dilate_px * px_per_window)))
    sigma = max(0.5, feather_px * px_per_window / 3)
    margin = grow + int(np.ceil(3 * sigma)) + int(np.ceil(2 * px_per_mask)) + 2
    corners = np.float64([[xs.min(), ys.min()], [xs.max() + 1, ys.min()], [xs.min(), ys.max() + 1],
                          [xs.max() + 1, ys.max() + 1]])
    pts = transform_points(corners, cv2.invertAffineTransform(to_mask))
    # ... and inside the inpainting window (the only place with redrawn pixels).
    win = transform_points(np.float64([[0, 0], [size, 0], [0, size], [size, size]]),
                           cv2.invertAffineTransform(frame_to_window))
    x0 = int(max(0, np.floor(pts[:, 0].min()) - margin, np.floor(win[:, 0].min())))
    y0 = int(max(0, np.floor(pts[:, 1].min()) - margin, np.floor(win[:, 1].min())))
    x1 = int(min(w, np.ceil(pts[:, 0].max()) + margin, np.ceil(win[:, 0].max())))
    y1 = int(min(h, np.ceil(pts[:, 1].max()) + margin, np.ceil(win[:, 1].max())))
    if x1 <= x0 or y1 <= y0:
        return None
    rect = (x0, y0, x1, y1)
    shifted = to_mask.copy()
    shifted[:, 2] += to_mask[:, :2] @ [x0, y0]                         # ROI pixel -> mask crop
    mask_f = mask_crop.astype(np.float32)
    warp_mask = lambda m, dsize: cv2.warpAffine(mask_f, m, dsize, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                                borderMode=cv2.BORDER_CONSTANT)
    # Colours are decided at ~1.5-2.5 frame pixels per mask pixel (a quarter of the work at 720p, a
    # ninth at 1080p); the guided filter below puts the edge back at full resolution (the fringe
    # test holds at both).
    step = max(1, int(round(px_per_mask / 2))) if refined else 1
    if step == 1:
        prob = warp_mask(shifted, (x1 - x0, y1 - y0))
    if refined:
        roi = frame[y0:y1, x0:x1]
        # Smoothed along the frame's edges (a grey guide: a third of a colour guide's cost).
        guide = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY).astype(np.float32) * (1.0 / 255.0)
        if step > 1:
            small = cv2.resize(roi, ((x1 - x0) // step, (y1 - y0) // step), interpolation=cv2.INTER_AREA)
            # The mask sampled straight onto the small grid (at each small pixel's centre in the
            # region): no full-resolution warp that would only be shrunk again.
            to_small = shifted @ np.array([[step, 0, (step - 1) / 2], [0, step, (step - 1) / 2], [0, 0, 1]])
            inside = warp_mask(to_small, small.shape[1::-1]) > 0.5
            covered = snap_to_colours(small, inside, int(np.ceil(BAND * px_per_mask / step))).astype(np.float32)
            prob = fast_guided_upsample(guide, cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0,
                                        covered, max(1, int(np.ceil(px_per_mask / step))))
        else:
            covered = snap_to_colours(roi, prob > 0.5, int(np.ceil(BAND * px_per_mask))).astype(np.float32)
            prob = cv2.ximgproc.guidedFilter(guide, covered, int(np.ceil(px_per_mask)), GUIDE_EPS)
    allowed = ~protected_region(landmarks, to_canonical, rect)
    covering = (prob > 0.5) & allowed
    if not covering.any():
        return None
    hard = (cv2.distanceTransform((~covering).astype(np.uint8), cv2.DIST_L2, 3) <= grow).view(np.uint8)
    # Feathered in 8 bits (the blend is 8-bit anyway; 0 stays 0), and a wide feather on a grid
    # `shrink` times coarser: it is smooth by design, and a 720p face's sigma of ~4.6 px cost 2 ms
    # at full resolution.
    hard_u8 = hard * np.uint8(255)
    shrink = max(1, int(sigma // 2))
    if shrink > 1:
        h_roi, w_roi = hard.shape
        small_hard = cv2.resize(hard_u8, (-(-w_roi // shrink), -(-h_roi // shrink)), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(cv2.GaussianBlur(small_hard, (0, 0), sigma / shrink), (w_roi, h_roi),
                           interpolation=cv2.INTER_LINEAR)
    else:
        alpha = cv2.GaussianBlur(hard_u8, (0, 0), sigma)
    alpha = np.maximum(alpha, hard_u8).astype(np.float32) * np.float32(1.0 / 255.0)
    alpha[~allowed] = 0.0
    # The inpainter's hole: every window pixel the blend reads (bilinear: one more pixel around).
    roi_to_window = frame_to_window.copy()
    roi_to_window[:, 2] += frame_to_window[:, :2] @ [x0, y0]
    support = cv2.warpAffine((alpha > 0).astype(np.float32), roi_to_window, (size, size),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    window_hole = cv2.dilate((support > 0.01).astype(np.uint8), np.ones((3, 3), np.uint8))
    # ... minus the eyes and above, decided in the window's own pixels.
    window_to_canonical = cv2.invertAffineTransform(window_matrix(size))
    window_hole[protected_region(transform_points(landmarks, frame_to_window), window_to_canonical,
                                 (0, 0, size, size))] = 0
    return FrameHole(rect, alpha, covering, window_hole.astype(np.float32), refined)


def carry_frame_hole(hole: FrameHole, drawn_to_window: np.ndarray, now_to_window: np.ndarray,
                     landmarks: np.ndarray, alignment: Alignment, frame_shape) -> FrameHole | None:
    """The FrameHole of the frame a face's redraw was made on (`drawn_to_window`: that frame -> the
    inpainting window), moved with the face into this frame (`now_to_window`): its alpha and covering
    follow the window, so they stay where the redrawn pixels are. The eyes and brows are cut out
    again from this frame's `landmarks` and `alignment` (the tracker's, unsmoothed), so they stay
    bit-identical however the face moved. None when nothing is left in the frame."""
    h, w = frame_shape[:2]
    x0, y0, x1, y1 = hole.rect
    now_to_drawn = compose_affine(cv2.invertAffineTransform(drawn_to_window), now_to_window)
    corners = transform_points(np.float64([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]),
                               cv2.invertAffineTransform(now_to_drawn))
    nx0, ny0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    nx1, ny1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, [w, h])
    if nx1 <= nx0 or ny1 <= ny0:
        return None
    # This frame's ROI pixel -> the drawn frame's ROI pixel.
    roi_map = now_to_drawn.copy()
    roi_map[:, 2] += now_to_drawn[:, :2] @ [nx0, ny0]
    roi_map[:, 2] -= [x0, y0]
    dsize = (int(nx1 - nx0), int(ny1 - ny0))
    flags = cv2.WARP_INVERSE_MAP
    alpha = cv2.warpAffine(hole.alpha, roi_map, dsize, flags=cv2.INTER_LINEAR | flags, borderMode=cv2.BORDER_CONSTANT)
    covering = cv2.warpAffine(hole.covering.view(np.uint8), roi_map, dsize, flags=cv2.INTER_NEAREST | flags,
                              borderMode=cv2.BORDER_CONSTANT) > 0
    rect = (int(nx0), int(ny0), int(nx1), int(ny1))
    allowed = ~protected_region(landmarks, alignment.matrix * (CANONICAL_SIZE / alignment.size), rect)
    covering &= allowed
    if not covering.any():
        return None
    alpha[~allowed] = 0.0
    return FrameHole(rect, alpha, covering, hole.window_hole, hole.refined)
