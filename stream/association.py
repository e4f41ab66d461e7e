"""Track <-> face association that survives crossings: constant-velocity box prediction + an
optimal one-to-one assignment on 1 - IoU (Hungarian, scipy's `linear_sum_assignment` when scipy is
installed, else greedy best-IoU-first, which gives the same pairs whenever faces do not overlap).

Matching against where each track is *predicted* to be (its last box moved by its smoothed
velocity) rather than where it was keeps two faces that pass each other on their own tracks: at
the crossing the old boxes overlap both faces, the predicted ones each overlap the right one.
"""
from __future__ import annotations

import numpy as np

from stream.detection import box_iou

MIN_IOU = 0.1          # below this a face is not the track's (a new face, or the track missed it)
VELOCITY_SMOOTHING = 0.5


def predict_box(box, velocity, frames: int = 1) -> tuple[float, float, float, float]:
    """The box moved by `velocity` (dx, dy per frame) for `frames` frames."""
    dx, dy = velocity[0] * frames, velocity[1] * frames
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def update_velocity(velocity, old_box, new_box, frames: int = 1) -> tuple[float, float]:
    """Exponentially smoothed centre motion per frame."""
    dx = ((new_box[0] + new_box[2]) - (old_box[0] + old_box[2])) / 2 / max(frames, 1)
    dy = ((new_box[1] + new_box[3]) - (old_box[1] + old_box[3])) / 2 / max(frames, 1)
    a = VELOCITY_SMOOTHING
    return (a * dx + (1 - a) * velocity[0], a * dy + (1 - a) * velocity[1])


def assign(predicted: list, boxes: list, min_iou: float = MIN_IOU) -> list[tuple[int, int]]:
    """(track index, box index) pairs: the one-to-one matching of largest total IoU, each pair
    with IoU >= min_iou."""
    if not predicted or not boxes:
        return []
    overlap = np.array([[box_iou(p, b) for b in boxes] for p in predicted], np.float64)
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        pairs, used_t, used_b = [], set(), set()
        for ti, bi in sorted(np.ndindex(*overlap.shape), key=lambda ij: -overlap[ij]):
            if overlap[ti, bi] >= min_iou and ti not in used_t and bi not in used_b:
                pairs.append((ti, bi))
                used_t.add(ti)
                used_b.add(bi)
        return pairs
    # Pairs under min_iou cost more than leaving both unmatched, so they are never preferred.
    cost = np.where(overlap >= min_iou, 1.0 - overlap, 1e3)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if overlap[r, c] >= min_iou]
