"""Model contracts shared by training, export, the engines and the stream (numpy + OpenCV only).

Everything that must be identical at training and inference time lives here, once: where the
files are, input sizes and normalisation, every network's typed tensor contract (`CONTRACTS`:
`TensorSpec`s with a symbolic faces axis), how the analyser's outputs are decoded, the inpainting
window inside the canonical crop, the hole rule, and how the landmark map given to the inpainter
is drawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# -- files ------------------------------------------------------------------------------------------
MODELS_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = MODELS_DIR / "weights"                        # <name>.onnx, <name>.pt, <name>.json
# Intel's face-reidentification-retail-0095 (Apache-2.0; not trained here): stream.identity runs it,
# models.gender reads its embeddings.
FACE_EMBEDDING = WEIGHTS_DIR / "face_embedding.onnx"
CANONICAL_FACE_PATH = MODELS_DIR / "canonical_face_256.npy"  # the mean 468-point face, canonical px


def weights_file(filename: str, weights_dir: str | Path | None = None) -> Path:
    """`filename` (e.g. "analyser.onnx") from `weights_dir` when that folder holds it, else the shipped
    one in models/weights: a training candidates folder usually holds one retrained network only."""
    if weights_dir is not None and (Path(weights_dir) / filename).exists():
        return Path(weights_dir) / filename
    return WEIGHTS_DIR / filename

CANONICAL_SIZE = 256
NUM_LANDMARKS = 468

ANALYSER = {"input_size": 128}
# Our networks read BGR pixels / 255 (no mean / std); the sidecars record it.
PIXELS_01 = "pixels / 255, BGR channel order, no mean/std"


def load_canonical_face() -> np.ndarray:
    """The mean 468-point face in the 256 px canonical crop, (468, 2) float32 canonical pixels."""
    return np.load(CANONICAL_FACE_PATH)

# The inpainter redraws a square window of the canonical crop that holds every
# covering (nose bridge to below the chin); x0, y0, side in canonical pixels.
INPAINT_WINDOW = (40, 80, 176)

# mediapipe's networks run by the GPU tracker and exported for the engines: the .tflite file inside
# the wheel's modules/ folder and its two output tensors, in the order the contracts name them.
MEDIAPIPE_NETS = {
    "face_detector": {"file": "face_detection/face_detection_full_range_sparse.tflite",
                      "outputs": ("Identity", "Identity_1"), "input_size": 192,
                      "normalisation": "RGB, pixels / 127.5 - 1"},
    "face_mesh": {"file": "face_landmark/face_landmark.tflite", "outputs": ("conv2d_21", "conv2d_31"),
                  "input_size": 192, "normalisation": "RGB, pixels / 255"},
}
FACE_MODELS = tuple(MEDIAPIPE_NETS)

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


# -- the hole the inpainter redraws -------------------------------------------------------------------
# The covering is grown before it is redrawn so that its rim (and the mask smoothing's lag of a pixel
# or two) is redrawn too. The kernel is 2 * dilate_px + 1 px square at a 128 px window and scales
# with the window. The stream grows the PREDICTED, smoothed covering by 4 px (9x9 at 128 px); the
# inpainter was trained, and the export's parity inputs are made, with the EXACT synthetic covering
# grown by 2 px (5x5): its edge is known to the pixel, so it needs less margin. Both are this one
# rule with their own margin; changing either changes the shipped model's inputs or outputs.
HOLE_DILATE_PX = 4            # the stream (CPU and GPU paths)
TRAINING_HOLE_DILATE_PX = 2   # training data and the export's parity inputs


def hole_kernel_size(window_size: int, dilate_px: int = HOLE_DILATE_PX) -> int:
    """Side of the square dilation kernel for a `window_size` px inpainting window."""
    return 2 * max(1, round(dilate_px * window_size / 128)) + 1


def dilate_hole(covered: np.ndarray, window_size: int, dilate_px: int = HOLE_DILATE_PX) -> np.ndarray:
    """The hole from a uint8 0/1 covering in the window: grown by the rule above (uint8 0/1)."""
    k = hole_kernel_size(window_size, dilate_px)
    return cv2.dilate(covered, np.ones((k, k), np.uint8))


# -- typed tensor contracts ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, numpy dtype, shape (None = the faces / batch axis), and in
    words what it holds and how it is normalised (the sidecars carry that text)."""

    name: str
    dtype: np.dtype
    shape: tuple
    description: str = ""

    def with_batch(self, n: int) -> tuple:
        return tuple(n if d is None else d for d in self.shape)

    def describe(self) -> str:
        """The sidecar's line: "N,3,128,128 float32 BGR in [0,1]: ..." (N = the faces axis)."""
        dims = ",".join("N" if d is None else str(d) for d in self.shape)
        return f"{dims} {self.description}".strip()


@dataclass(frozen=True)
class ModelContract:
    """What the stream feeds a network and reads back, in order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    normalisation: str = PIXELS_01

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def describe(self) -> dict:
        """{"inputs": {name: line}, "outputs": {name: line}} as the sidecars record it."""
        return {"inputs": {s.name: s.describe() for s in self.inputs},
                "outputs": {s.name: s.describe() for s in self.outputs}}


_F32 = np.dtype(np.float32)


def _spec(name: str, shape: tuple, description: str) -> TensorSpec:
    return TensorSpec(name, _F32, (None, *shape), description)


def analyser_contract(size: int = ANALYSER["input_size"]) -> ModelContract:
    return ModelContract(
        inputs=(_spec("image", (3, size, size),
                      f"float32 BGR in [0,1]: the aligned canonical crop resized to {size}"),),
        outputs=(_spec("mask_logits", (1, size, size), "logits of the face covering (sigmoid -> probability)"),
                 _spec("gender_logit", (), "logit of P(female)"),
                 _spec("landmarks", (NUM_LANDMARKS, 2), "mediapipe mesh points as fractions of the crop side")))


def inpainter_contract(size: int) -> ModelContract:
    """The inpainter of a `size` px window (INPAINTER_PRESETS)."""
    return ModelContract(
        inputs=(_spec("image", (3, size, size),
                      "float32 BGR in [0,1]: the lower-face window (models.spec.INPAINT_WINDOW)"),
                _spec("hole", (1, size, size), "float32, 1 where pixels are redrawn"),
                _spec("landmark_map", (1, size, size), "float32 guide curves (models.spec.draw_landmark_map)"),
                _spec("gender", (), "float32, 0 male .. 1 female (0.5 unknown)")),
        outputs=(_spec("output", (3, size, size),
                       "float32 BGR in [0,1]; pixels outside the hole equal the input"),))


def _face_detector_contract() -> ModelContract:
    s = MEDIAPIPE_NETS["face_detector"]["input_size"]
    cells = (s // 4) ** 2
    return ModelContract(
        inputs=(_spec("image", (3, s, s), "float32 RGB in [-1,1]: the frame letterboxed to a square"),),
        outputs=(_spec("regressors", (cells, 16),
                       f"per anchor ({s // 4}x{s // 4} grid, stride 4): box centre x, y, width, height, then 6 "
                       "keypoints x, y; in input pixels relative to the anchor centre"),
                 _spec("score_logits", (cells, 1), "face logits (sigmoid -> score)")),
        normalisation=MEDIAPIPE_NETS["face_detector"]["normalisation"])


def _face_mesh_contract() -> ModelContract:
    s = MEDIAPIPE_NETS["face_mesh"]["input_size"]
    return ModelContract(
        inputs=(_spec("image", (3, s, s), "float32 RGB in [0,1]: the rotated face ROI (1.5x the face box)"),),
        outputs=(_spec("landmarks", (NUM_LANDMARKS, 3), "mesh points x, y, z in input pixels"),
                 _spec("face_logit", (1,), "face presence logit (sigmoid -> tracking confidence)")),
        normalisation=MEDIAPIPE_NETS["face_mesh"]["normalisation"])


CONTRACTS: dict[str, ModelContract] = {
    "analyser": analyser_contract(),
    **{f"inpainter_{preset}": inpainter_contract(p["size"]) for preset, p in INPAINTER_PRESETS.items()},
    "face_detector": _face_detector_contract(),
    "face_mesh": _face_mesh_contract(),
}


def contract(name: str) -> ModelContract:
    """The contract of network `name`; KeyError names the known ones."""
    if name not in CONTRACTS:
        raise KeyError(f"unknown model {name!r}: expected one of {', '.join(CONTRACTS)}")
    return CONTRACTS[name]


# -- the analyser's outputs -----------------------------------------------------------------------------

def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def decode_analyser(mask_logits, gender_logit, landmarks, sigmoid=_sigmoid, landmark_scale: float = CANONICAL_SIZE):
    """The analyser's raw outputs -> (covering probability (N, s, s), P(female) (N,), landmarks (N, 468, 2)
    in canonical-crop pixels). numpy by default; the torch path passes `torch.sigmoid` and float tensors."""
    return sigmoid(mask_logits[:, 0]), sigmoid(gender_logit.reshape(-1)), landmarks * landmark_scale
