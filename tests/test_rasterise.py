"""The own-face path's triangle-id raster (stream.rasterise) against geometry known by construction."""
from __future__ import annotations

import numpy as np

from stream.rasterise import warp_maps


def triangle_ids(corners: np.ndarray, order: np.ndarray, size: int) -> np.ndarray:
    """The id raster of stream.rasterise.warp_maps for triangles given by their corners (T, 3, 2):
    at each pixel of a (size, size) canvas the last triangle of `order` covering it, -1 where none."""
    points = np.asarray(corners, np.float64).reshape(-1, 2)
    tris = np.arange(len(points)).reshape(-1, 3)
    ids, _, _, _ = warp_maps(points, points, tris, order, (0, 0, size, size), (size, size))
    return ids


def grid_triangles(size: int, cell: int) -> np.ndarray:
    """A size x size square tiled by cells, each cut into two triangles along its diagonal."""
    corners = []
    for y in range(0, size, cell):
        for x in range(0, size, cell):
            a, b, c, d = (x, y), (x + cell, y), (x + cell, y + cell), (x, y + cell)
            corners += [(a, b, c), (a, c, d)]          # upper-right and lower-left halves
    return np.array(corners, np.float64) - 0.5          # pixel centres at integers: edges between them


def test_a_tiling_covers_every_pixel_once_with_the_triangle_under_its_centre():
    size, cell = 64, 8
    corners = grid_triangles(size, cell)
    ids = triangle_ids(corners, np.arange(len(corners)), size)
    assert (ids >= 0).all()                               # no crack between neighbours
    ys, xs = np.mgrid[0:size, 0:size]
    # Away from the edges (a pixel centre within 0.5 px of one goes to the triangle drawn later),
    # the id is the triangle the pixel centre lies in.
    cx, cy = (xs + 0.5) % cell, (ys + 0.5) % cell
    clear = (np.abs(cx - cy) > 1.0) & (np.minimum(cx, cy) > 1.0) & (np.maximum(cx, cy) < cell - 1.0)
    expected = 2 * ((ys // cell) * (size // cell) + xs // cell) + (cy > cx)
    np.testing.assert_array_equal(ids[clear], expected[clear])


def test_a_nearer_triangle_hides_a_farther_one_and_nothing_is_drawn_outside():
    size = 40
    far = [(5, 5), (35, 5), (5, 35)]
    near = [(10, 10), (30, 10), (10, 30)]
    corners = np.array([far, near], np.float64)
    ids = triangle_ids(corners, np.array([0, 1]), size)     # far first, then near
    assert ids[15, 15] == 1 and ids[6, 6] == 0 and ids[38, 38] == -1
    assert triangle_ids(corners, np.array([1, 0]), size)[15, 15] == 0   # order decides, not the index
    # Either winding draws the same pixels; a degenerate triangle draws none.
    flipped = corners[:, ::-1].copy()
    np.testing.assert_array_equal(triangle_ids(flipped, np.array([0, 1]), size), ids)
    line = np.array([[(0, 0), (10, 10), (20, 20)]], np.float64)
    assert (triangle_ids(line, np.array([0]), size) == -1).all()


def test_triangles_partly_outside_the_canvas_are_clipped():
    corners = np.array([[(-50, -50), (200, -50), (-50, 200)]], np.float64)
    ids = triangle_ids(corners, np.array([0]), 32)
    assert (ids == 0).all()
