"""Similarity alignment between frame pixels and the canonical face crop.

Every model sees the face in one canonical frame: a square crop (256 px by
default) with FFHQ-like framing (forehead to below the chin, ears at the
edges). A face is mapped there by a least-squares similarity transform fitted
on *upper-face* mesh points only (eyes, brows, nose bridge, forehead,
temples): those stay visible and are tracked reliably when a mask covers the
mouth and chin, so training crops (unmasked faces) and inference crops
(masked faces) are framed the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.spec import CANONICAL_SIZE, load_canonical_face

# mediapipe face mesh indices (468-point topology).
LEFT_EYE = [33, 133, 160, 159, 158, 144, 145, 153]      # image-left eye
RIGHT_EYE = [362, 263, 387, 386, 385, 373, 374, 380]    # image-right eye
LEFT_BROW = [70, 63, 105, 66, 107]
RIGHT_BROW = [336, 296, 334, 293, 300]
NOSE_BRIDGE = [168, 6, 197]
FOREHEAD = [10, 151, 9, 109, 338]
TEMPLES = [127, 356, 162, 389, 234, 454]
UPPER_FACE = LEFT_EYE + RIGHT_EYE + LEFT_BROW + RIGHT_BROW + NOSE_BRIDGE + FOREHEAD + TEMPLES
MOUTH_CORNERS = [61, 291]
NOSE_TIP = 1
CHIN = 152
# The face outline (silhouette) in order, used to build face / lower-face polygons.
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
             400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21,
             54, 103, 67, 109]
# Lower-face landmarks: everything a mask can hide (nose, lips, cheeks, jaw).
# Computed once from the canonical shape in `lower_face_indices()`.


def ffhq_similarity(landmarks: np.ndarray, size: int = CANONICAL_SIZE) -> np.ndarray:
    """FFHQ's alignment rule (eyes + mouth) as a 2x3 matrix frame -> crop.

    Used once to define the canonical mean shape; at run time faces are
    aligned with `fit_similarity` on the upper-face points instead.
    """
    lm = np.asarray(landmarks, np.float64)
    eye_l = lm[LEFT_EYE].mean(0)
    eye_r = lm[RIGHT_EYE].mean(0)
    mouth = lm[MOUTH_CORNERS].mean(0)
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = mouth - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y])  # top-left, bottom-left, bottom-right
    dst = np.float32([[0, 0], [0, size], [size, size]])
    return cv2.getAffineTransform(quad.astype(np.float32), dst)


def load_canonical_shape() -> np.ndarray:
    """The mean 468-point face in the 256 px canonical crop (models/canonical_face_256.npy)."""
    return load_canonical_face().astype(np.float32)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) src -> dst, 2x3 float64.

    Closed-form Umeyama solution: deterministic and robust for the ~40 points we
    use (RANSAC, as in cv2.estimateAffinePartial2D, is unnecessary here).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    r = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / max(var_s, 1e-12)
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine map `outer` o `inner` (`inner` applied first)."""
    return (np.vstack([outer, [0.0, 0.0, 1.0]]) @ np.vstack([inner, [0.0, 0.0, 1.0]]))[:2]


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64)
    return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


@dataclass
class Alignment:
    """Frame <-> canonical crop mapping of one face."""

    matrix: np.ndarray        # 2x3, frame pixels -> crop pixels
    size: int = CANONICAL_SIZE

    @property
    def inverse(self) -> np.ndarray:
        return invert_affine(self.matrix)

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def crop(self, image: np.ndarray, size: int | None = None) -> np.ndarray:
        size = size or self.size
        m = self.matrix * (size / self.size)
        return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        return transform_points(points, self.matrix)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        return transform_points(points, self.inverse)


# The eye contours (both lids, both eyes) of the 468-point mesh; brows lie above them.
EYE_CONTOURS = [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
                263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398]
# Around each eye (of the distance between the eye centres): lids, lashes, make-up and the shadow
# under them, which are not the skin a hole's border should be matched to.
EYE_SURROUND = 0.15


def border_classes(window_points: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(skin, background): (size, size) bool masks, in the pixels of a square window of `size`, of the
    two kinds of surroundings a hole's border is matched within: the face's skin (inside the mesh's
    face oval, a little in) and what lies past the face's outline (a little out); the eyes' surround
    (EYE_SURROUND) is in neither."""
    points = np.asarray(window_points, np.float32)
    oval = np.zeros((size, size), np.uint8)
    cv2.fillPoly(oval, [np.round(points[FACE_OVAL]).astype(np.int32)], 1)
    k = np.ones((2 * max(1, round(2 * size / 128)) + 1,) * 2, np.uint8)
    eyes = points[EYE_CONTOURS]
    iod = float(np.linalg.norm(eyes[:16].mean(0) - eyes[16:].mean(0)))
    around = np.zeros((size, size), np.uint8)
    for eye in (eyes[:16], eyes[16:]):
        cv2.fillConvexPoly(around, cv2.convexHull(np.round(eye).astype(np.int32)), 1)
    r = max(1, round(EYE_SURROUND * iod))
    around = cv2.dilate(around, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
    return (cv2.erode(oval, k) > 0) & ~around, (cv2.dilate(oval, k) == 0) & ~around


def face_region(window_points: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: the face's skin around a hole (border_classes' first)."""
    return border_classes(window_points, size)[0]


def align_face(landmarks: np.ndarray, canonical: np.ndarray | None = None,
               size: int = CANONICAL_SIZE) -> Alignment:
    """Alignment of a face given its 468 mesh landmarks in frame pixels."""
    if canonical is None:
        canonical = load_canonical_shape()
    dst = canonical[UPPER_FACE] * (size / CANONICAL_SIZE)
    return Alignment(fit_similarity(np.asarray(landmarks)[UPPER_FACE], dst), size)


def yaw_proxy(landmarks: np.ndarray) -> float:
    """Signed yaw proxy in [-1, 1] from 468 mesh points: the nose tip between the cheek outlines
    (0 = frontal; about +-0.5 at 30 degrees)."""
    left, right, nose = landmarks[234, 0], landmarks[454, 0], landmarks[1, 0]
    return float(np.clip(2 * (nose - left) / max(right - left, 1e-3) - 1, -1, 1))
