"""A face embedding: who is who among several reference photos, and the gender probe's input.

`FaceEmbedder` runs Intel's face-reidentification-retail-0095 (Open Model Zoo, Apache-2.0; a
MobileNetV2 giving a 256-d embedding; `models/weights/face_embedding.onnx`, licence beside it) on a
face aligned by five mesh points to the ArcFace template. The product uses it to decide which
reference belongs to which face (`stream.unmasker.Unmasker`, several references) and to read a
masked face's gender (`models.gender`, a probe fitted on its output). The network is never trained
here; `training.evaluate_real` also judges identity with it.

Measured on the network (../shared/weights/SOURCES.md): the same person in other photos, cosine
0.93-0.98; different people, mean 0.007, max 0.10; the lower half of the face painted over, 0.60.
About 11 ms a face on one thread, so the stream runs it a few times per track, not per frame.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.spec import FACE_EMBEDDING

# ArcFace's five-point template (112 px), scaled to the network's 128 px input.
ARCFACE_5 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                      [41.5493, 92.3655], [70.7299, 92.2041]], np.float32) * (128 / 112)
# Mesh points: the subject's right eye (image left, mediapipe's 33 side), left eye, nose tip, mouth corners.
RIGHT_EYE_POINTS = [33, 133, 160, 159, 158, 144, 145, 153]
LEFT_EYE_POINTS = [362, 263, 387, 386, 385, 373, 374, 380]


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """The template's five points from the 468 mesh landmarks (hidden ones as estimated)."""
    return np.array([landmarks[RIGHT_EYE_POINTS].mean(0), landmarks[LEFT_EYE_POINTS].mean(0), landmarks[1],
                     landmarks[61], landmarks[291]], np.float32)


class FaceEmbedder:
    """`embedder(image_bgr, landmarks)` -> (256,) unit vector; cosine = dot product."""

    def __init__(self, path: Path | str = FACE_EMBEDDING, threads: int = 1):
        import onnxruntime as ort
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"the face embedding is missing: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, image_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        m, _ = cv2.estimateAffinePartial2D(five_points(landmarks), ARCFACE_5)
        face = cv2.warpAffine(image_bgr, m, (128, 128), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        x = face.transpose(2, 0, 1)[None].astype(np.float32)          # BGR 0-255, as Intel's model takes
        e = self.session.run(None, {self.input_name: x})[0].reshape(-1)
        return e / max(float(np.linalg.norm(e)), 1e-9)
