"""Per-face reconstruction: segment -> (gender) -> inpaint, behind one small interface.

`Reconstructor.reconstruct(image, faces)` takes the frame and the faces' aligned
crops and returns, per face, the covering's probability in the canonical crop,
the gender, the lower-face landmarks and the redrawn inpainting window. Two
implementations:

* `ModelReconstructor` (default): the shipped analyser (covering mask, hidden
  landmarks, gender) and inpainter networks, all faces of a frame batched into
  one call of each, through any `engines` runner.
* `ClassicalReconstructor` (`--method classical`): the BASELINE kept for
  comparison: the covering is assumed to be the lower face (a polygon from the
  mesh landmarks) and is filled by `cv2.inpaint` (Telea). No learning.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.spec import ANALYSER, CANONICAL_SIZE, INPAINTER_PRESETS, decode_analyser, draw_landmark_map, window_matrix
from stream.alignment import Alignment, transform_points

# The lower-face region used by the classical baseline: nose bridge level,
# along the cheeks and jaw, under the chin.
LOWER_FACE_POLYGON = [234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379,
                      365, 397, 288, 361, 323, 454, 197]


@dataclass
class FaceInput:
    alignment: Alignment
    landmarks: np.ndarray     # (468, 2) frame pixels (tracker / smoothed)


@dataclass
class FaceOutput:
    mask_prob: np.ndarray           # (S, S) covering probability in the canonical crop (S = analyser size)
    gender_female: float            # P(female); 0.5 when unknown
    landmarks_crop: np.ndarray      # (468, 2) canonical-crop pixels (analyser's estimate where hidden)


class Reconstructor:
    name = "base"
    window_size = 128

    def analyse(self, image: np.ndarray, faces: list[FaceInput]) -> list[FaceOutput]:
        raise NotImplementedError

    def inpaint(self, windows: np.ndarray, holes: np.ndarray, landmark_maps: np.ndarray,
                genders: np.ndarray) -> np.ndarray:
        """Batched: windows (N,S,S,3) uint8, holes (N,S,S) float -> (N,S,S,3) uint8."""
        raise NotImplementedError


class ClassicalReconstructor(Reconstructor):
    """Baseline: landmark-derived lower-face region + cv2.inpaint (Telea)."""

    name = "classical"

    def __init__(self, window_size: int = 128, radius: int = 5):
        self.window_size = window_size
        self.radius = radius

    def analyse(self, image, faces):
        s = ANALYSER["input_size"]
        out = []
        for f in faces:
            lm_crop = f.alignment.to_crop(f.landmarks)
            prob = np.zeros((s, s), np.float32)
            poly = np.round(lm_crop[LOWER_FACE_POLYGON] * (s / CANONICAL_SIZE) * 4).astype(np.int32)
            cv2.fillPoly(prob, [cv2.convexHull(poly)], 1.0, cv2.LINE_AA, shift=2)
            out.append(FaceOutput(prob, 0.5, lm_crop))
        return out

    def inpaint(self, windows, holes, landmark_maps, genders):
        out = np.empty_like(windows)
        for i, (w, h) in enumerate(zip(windows, holes)):
            out[i] = cv2.inpaint(w, (h > 0.5).astype(np.uint8), self.radius, cv2.INPAINT_TELEA)
        return out


class ModelReconstructor(Reconstructor):
    """The trained analyser + inpainter, through `engines` runners."""

    name = "model"

    def __init__(self, backend: str = "auto", device: str | None = None, threads: int | None = None,
                 preset: str = "fast"):
        from engines import create_runner

        # precision "auto": fp16 engines on a GPU, fp32 on the CPU.
        self.analyser = create_runner("analyser", backend=backend, device=device, threads=threads,
                                      precision="auto")
        self.inpainter = create_runner(f"inpainter_{preset}", backend=backend, device=device,
                                       threads=threads, precision="auto")
        self.window_size = INPAINTER_PRESETS[preset]["size"]
        self.backend = self.analyser.name

    def analyse(self, image, faces):
        if not faces:
            return []
        s = ANALYSER["input_size"]
        crops = np.stack([f.alignment.crop(image, s) for f in faces])
        x = crops.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        res = self.analyser.run({"image": x})
        probs, genders, lms = decode_analyser(res["mask_logits"], res["gender_logit"], res["landmarks"])
        return [FaceOutput(probs[i].astype(np.float32), float(genders[i]), lms[i].astype(np.float32))
                for i in range(len(faces))]

    def inpaint(self, windows, holes, landmark_maps, genders):
        res = self.inpainter.run({
            "image": windows.transpose(0, 3, 1, 2).astype(np.float32) / 255.0,
            "hole": holes[:, None].astype(np.float32),
            "landmark_map": landmark_maps[:, None].astype(np.float32),
            "gender": genders.astype(np.float32),
        })
        out = res["output"].transpose(0, 2, 3, 1) * 255.0
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    def close(self):
        for r in (self.analyser, self.inpainter):
            r.close()


def frame_to_window(alignment: Alignment, size: int) -> np.ndarray:
    """2x3 affine: frame pixels -> the face's inpainting window of `size` px."""
    wm = np.vstack([window_matrix(size), [0, 0, 1]])
    canon = np.vstack([alignment.matrix * (CANONICAL_SIZE / alignment.size), [0, 0, 1]])
    return (wm @ canon)[:2]


def landmark_map_for(landmarks_crop: np.ndarray, size: int) -> np.ndarray:
    """The inpainter's landmark map from landmarks in canonical-crop pixels."""
    return draw_landmark_map(transform_points(landmarks_crop, window_matrix(size)), size)
