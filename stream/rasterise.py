"""A triangle-id raster for the own-face path's mesh warp (stream.reference.warp_mesh).

Per frame ~770 small triangles (a few px each at the 128-px window) are drawn far to near into
an id image. One `cv2.fillConvexPoly` call per triangle cost ~3 ms a face (the calls' overhead,
not the pixels) and a vectorised numpy version more; compiled by numba it is a few hundredths of
a millisecond. `nogil`: the tracker of the next frame runs beside it (stream.pipeline).
"""
from __future__ import annotations

import numba
import numpy as np

# A pixel belongs to a triangle when its centre lies inside or within this many px of each edge:
# about what OpenCV's filled polygons cover (their outline is drawn too), so neighbours never leave
# a crack between them and the mesh's outline is where it was.
EDGE_TOLERANCE_PX = 0.5


@numba.njit(cache=True, nogil=True)
def _draw(ids, corners, order, tolerance):
    height, width = ids.shape
    e = np.empty((3, 3))
    for t in order:
        ax, ay = corners[t, 0, 0], corners[t, 0, 1]
        bx, by = corners[t, 1, 0], corners[t, 1, 1]
        cx, cy = corners[t, 2, 0], corners[t, 2, 1]
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if area == 0.0:
            continue
        if area < 0.0:      # one winding for the edge tests: swap b and c
            bx, by, cx, cy = cx, cy, bx, by
        # Each edge as a line in normal form: distance = nx * x + ny * y + d (positive inside).
        for k, (px, py, qx, qy) in enumerate(((ax, ay, bx, by), (bx, by, cx, cy), (cx, cy, ax, ay))):
            length = np.sqrt((qx - px) ** 2 + (qy - py) ** 2)
            e[k, 0] = -(qy - py) / length
            e[k, 1] = (qx - px) / length
            e[k, 2] = -(e[k, 0] * px + e[k, 1] * py) + tolerance
        x0 = max(int(np.ceil(min(ax, bx, cx) - tolerance)), 0)
        x1 = min(int(np.floor(max(ax, bx, cx) + tolerance)), width - 1)
        y0 = max(int(np.ceil(min(ay, by, cy) - tolerance)), 0)
        y1 = min(int(np.floor(max(ay, by, cy) + tolerance)), height - 1)
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                if (e[0, 0] * x + e[0, 1] * y + e[0, 2] >= 0.0 and e[1, 0] * x + e[1, 1] * y + e[1, 2] >= 0.0
                        and e[2, 0] * x + e[2, 1] * y + e[2, 2] >= 0.0):
                    ids[y, x] = t


def triangle_ids(corners: np.ndarray, order: np.ndarray, size: int) -> np.ndarray:
    """(size, size) int32: at each pixel the last triangle of `order` covering it, -1 where none.

    corners: (T, 3, 2) triangle corners in pixels (x, y; pixel centres at integers).
    order: indices into corners, far to near (a nearer triangle overwrites a farther one).
    """
    ids = np.full((size, size), -1, np.int32)
    _draw(ids, np.ascontiguousarray(corners, np.float64), np.ascontiguousarray(order, np.int64),
          EDGE_TOLERANCE_PX)
    return ids


def warm_up() -> None:
    """Load (or, the first time on a machine, compile) the raster now: ~1 s, ~2.5 s compiling. Called
    when the own-face path is set up, so that a live stream does not stall on its first masked face."""
    triangle_ids(np.zeros((1, 3, 2)), np.zeros(1, np.int64), 4)
