"""Model contracts shared by training, export and the stream (numpy + OpenCV only).

Everything that must be identical at training and inference time lives here:
input sizes, the inpainting window inside the canonical crop, and how the
landmark map given to the inpainter is drawn.
"""
from __future__ import annotations

import cv2
import numpy as np

CANONICAL_SIZE = 256
NUM_LANDMARKS = 468

ANALYSER = {"input_size": 128}

# The inpainter redraws a square window of the canonical crop that holds every
# covering (nose bridge to below the chin); x0, y0, side in canonical pixels.
INPAINT_WINDOW = (40, 80, 176)

# mediapipe's networks run by the GPU tracker and exported for the engines: the .tflite file inside
# the wheel's modules/ folder and its two output tensors, in the order the contracts name them.
MEDIAPIPE_NETS = {
    "face_detector": {"file": "face_detection/face_detection_full_range_sparse.tflite",
                      "outputs": ("Identity", "Identity_1")},
    "face_mesh": {"file": "face_landmark/face_landmark.tflite", "outputs": ("conv2d_21", "conv2d_31")},
}

INPAINTER_PRESETS = {
    "fast": {"size": 128, "channels": (24, 48, 96), "dilations": (1, 2, 4, 8, 1)},
    "hq": {"size": 256, "channels": (32, 64, 128), "dilations": (1, 2, 4, 8, 1, 2)},
}

# Lower-face contours drawn into the inpainter's landmark map.
LIPS_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181,
              91, 146, 61]
LIPS_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178,
              88, 95, 78]
NOSE_LINE = [168, 6, 197, 195, 5, 4, 1]
NOSE_BOTTOM = [64, 98, 97, 2, 326, 327, 294]
JAW = [234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288,
       361, 323, 454]
GUIDE_CURVES = [LIPS_OUTER, LIPS_INNER, NOSE_LINE, NOSE_BOTTOM, JAW]
# The mesh points a covering can hide (for the hidden-landmark metric).
HIDDEN_REGION = sorted(set(LIPS_OUTER + LIPS_INNER + NOSE_BOTTOM + JAW[3:-3] + [1, 4, 5, 195]))


def window_matrix(size: int) -> np.ndarray:
    """2x3 affine: canonical crop pixels -> inpainting window of `size` px."""
    x0, y0, side = INPAINT_WINDOW
    s = size / side
    return np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float64)


def draw_landmark_map(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Guide curves of the lower face as a float32 (size, size) map in [0, 1].

    `landmarks` are already in the map's pixel coordinates.
    """
    canvas = np.zeros((size, size), np.uint8)
    thickness = max(1, size // 128)
    for curve in GUIDE_CURVES:
        pts = np.round(landmarks[curve] * 4).astype(np.int32)
        cv2.polylines(canvas, [pts], False, 255, thickness, cv2.LINE_AA, shift=2)
    return canvas.astype(np.float32) / 255.0
