"""The own-face path's mesh warp (stream.reference.warp_mesh): a triangle-id raster and the remap
maps it implies, compiled by numba.

Per frame ~770 small triangles are drawn far to near into an id image. One `cv2.fillConvexPoly`
call per triangle cost ~3 ms a face (the calls' overhead, not the pixels) and a vectorised numpy
version more; numba draws them in a few hundredths of a millisecond at the 128-px window. The
per-triangle affine maps and the per-pixel remap coordinates are computed in the same compiled
pass: in numpy (gathers over 898 triangles, six coefficient planes) they cost more than the raster
at the frame's resolution. `nogil`: the tracker of the next frame runs beside it (stream.pipeline).
"""
from __future__ import annotations

import numba
import numpy as np

# A pixel belongs to a triangle when its centre lies inside or within this many px of each edge:
# about what OpenCV's filled polygons cover (their outline is drawn too), so neighbours never leave
# a crack between them and the mesh's outline is where it was.
EDGE_TOLERANCE_PX = 0.5


@numba.njit(inline="always")
def _inside(e, x, y):
    return (e[0, 0] * x + e[0, 1] * y + e[0, 2] >= 0.0 and e[1, 0] * x + e[1, 1] * y + e[1, 2] >= 0.0
            and e[2, 0] * x + e[2, 1] * y + e[2, 2] >= 0.0)


@numba.njit(cache=True, nogil=True)
def _draw_triangle(ids, t, ax, ay, bx, by, cx, cy, tolerance, e):
    """Set ids to t at the pixels whose centre is inside the triangle (within `tolerance` of its edges)."""
    height, width = ids.shape
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    if area == 0.0:
        return
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
        # The row's pixels inside all three half-planes form one run: bound it from the edges'
        # crossings (a pixel of slack for rounding), then trim its ends by the exact test, so the
        # run holds exactly the pixels the per-pixel test accepts (a few tests a row instead of one
        # per pixel of the box).
        lo, hi = float(x0), float(x1)
        for k in range(3):
            rest = e[k, 1] * y + e[k, 2]          # the edge's distance is e[k, 0] * x + rest
            if e[k, 0] > 0.0:
                lo = max(lo, -rest / e[k, 0] - 1.0)
            elif e[k, 0] < 0.0:
                hi = min(hi, -rest / e[k, 0] + 1.0)
            elif rest < 0.0:
                lo, hi = 1.0, 0.0
        if hi < lo:
            continue
        start, stop = max(int(np.floor(lo)), x0), min(int(np.ceil(hi)), x1)
        while start <= stop and not _inside(e, start, y):
            start += 1
        while stop >= start and not _inside(e, stop, y):
            stop -= 1
        for x in range(start, stop + 1):
            ids[y, x] = t


# cv2.remap's fixed-point maps (what it turns float maps into before sampling): 1/32 px steps.
INTER_BITS = 5
INTER_TAB_SIZE = 1 << INTER_BITS


@numba.njit(cache=True, nogil=True)
def _warp_maps(dst, src, tris, order, near, ids, map_xy, map_frac, tolerance):
    height, width = ids.shape
    affines = np.zeros((tris.shape[0], 6), np.float32)
    e = np.empty((3, 3))
    for t in order:
        i, j, k = tris[t, 0], tris[t, 1], tris[t, 2]
        # Only triangles whose box meets `near` (x0, y0, x1, y1).
        lo_x, hi_x = min(dst[i, 0], dst[j, 0], dst[k, 0]), max(dst[i, 0], dst[j, 0], dst[k, 0])
        lo_y, hi_y = min(dst[i, 1], dst[j, 1], dst[k, 1]), max(dst[i, 1], dst[j, 1], dst[k, 1])
        if not (hi_x >= near[0] and lo_x < near[2] and hi_y >= near[1] and lo_y < near[3]):
            continue
        # The affine taking this dst triangle onto its src triangle, in closed form (barycentric
        # basis), in float64.
        d0x, d0y = dst[i, 0], dst[i, 1]
        e1x, e1y = dst[j, 0] - d0x, dst[j, 1] - d0y
        e2x, e2y = dst[k, 0] - d0x, dst[k, 1] - d0y
        s0x, s0y = src[i, 0], src[i, 1]
        f1x, f1y = src[j, 0] - s0x, src[j, 1] - s0y
        f2x, f2y = src[k, 0] - s0x, src[k, 1] - s0y
        det = e1x * e2y - e1y * e2x
        if abs(det) < 1e-9:
            det = 1e-9
        i00, i01, i10, i11 = e2y / det, -e2x / det, -e1y / det, e1x / det
        a00, a01 = f1x * i00 + f2x * i10, f1x * i01 + f2x * i11    # src offsets per dst offset
        a10, a11 = f1y * i00 + f2y * i10, f1y * i01 + f2y * i11
        affines[t, 0], affines[t, 1], affines[t, 2] = a00, a01, s0x - (a00 * d0x + a01 * d0y)
        affines[t, 3], affines[t, 4], affines[t, 5] = a10, a11, s0y - (a10 * d0x + a11 * d0y)
        _draw_triangle(ids, t, dst[i, 0], dst[i, 1], dst[j, 0], dst[j, 1], dst[k, 0], dst[k, 1], tolerance, e)
    drawn = False
    for y in range(height):
        yf = np.float32(y)
        for x in range(width):
            t = ids[y, x]
            if t < 0:       # nothing drawn: the source's corner (masked out by the caller)
                map_xy[y, x, 0] = 0
                map_xy[y, x, 1] = 0
                map_frac[y, x] = 0
                continue
            drawn = True
            xf = np.float32(x)
            # The float32 coordinate, then exactly cv2.convertMaps' rounding to 1/32 px (round half
            # to even, as cvRound): remap samples the same points, without converting each call.
            sx = np.float32(affines[t, 0] * xf + affines[t, 1] * yf + affines[t, 2])
            sy = np.float32(affines[t, 3] * xf + affines[t, 4] * yf + affines[t, 5])
            ix = int(np.rint(sx * np.float32(INTER_TAB_SIZE)))
            iy = int(np.rint(sy * np.float32(INTER_TAB_SIZE)))
            map_xy[y, x, 0] = ix >> INTER_BITS
            map_xy[y, x, 1] = iy >> INTER_BITS
            map_frac[y, x] = (iy & (INTER_TAB_SIZE - 1)) * INTER_TAB_SIZE + (ix & (INTER_TAB_SIZE - 1))
    return drawn


def warp_maps(dst_points: np.ndarray, src_points: np.ndarray, tris: np.ndarray, order: np.ndarray,
              near: tuple[float, float, float, float], shape: tuple[int, int]):
    """The id raster and cv2.remap's maps of a piecewise-affine warp.

    dst_points, src_points: (N, 2) mesh points on the canvas and in the source; tris: (T, 3) point
    indices; order: the triangles to draw, far to near; only those whose box meets `near` (x0, y0,
    x1, y1: x >= x0 and x < x1 for some corner ...) are drawn. shape: the canvas (height, width).
    Returns (ids (H, W) int32, -1 where nothing is drawn; cv2.remap's fixed-point maps: (H, W, 2)
    int16 whole pixels and (H, W) uint16 fractions, as cv2.convertMaps makes them; any drawn).
    """
    ids = np.full(shape, -1, np.int32)
    map_xy = np.empty((*shape, 2), np.int16)
    map_frac = np.empty(shape, np.uint16)
    # float64 (exact for float32 points): one compiled version for every caller.
    drawn = _warp_maps(np.ascontiguousarray(dst_points, np.float64), np.ascontiguousarray(src_points, np.float64),
                       np.ascontiguousarray(tris, np.int64), np.ascontiguousarray(order, np.int64),
                       np.array(near, np.float64), ids, map_xy, map_frac, EDGE_TOLERANCE_PX)
    return ids, map_xy, map_frac, drawn


def warm_up() -> None:
    """Load (or, the first time on a machine, compile) the raster now: ~1 s, ~2.5 s compiling. Called
    when the own-face path is set up, so that a live stream does not stall on its first masked face."""
    warp_maps(np.zeros((3, 2)), np.zeros((3, 2)), np.array([[0, 1, 2]]), np.zeros(1, np.int64), (0, 0, 4, 4), (4, 4))
