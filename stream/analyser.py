"""The analyser stage on the CPU: per face, the covering's probability in the analyser crop, the
landmarks under it and the gender.

* `ModelAnalyser` (default): the shipped analyser network, all faces of a frame in one batch, through
  any `engines` runner.
* `LowerFaceAnalyser` (`--method classical`): the BASELINE kept for comparison: the covering is
  assumed to be the lower face (a polygon from the tracker's mesh landmarks). No learning; gender
  unknown.

The torch implementation of the same stage is `stream.gpu.TorchAnalyser`.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.spec import ANALYSER, CANONICAL_SIZE, decode_analyser, weights_file
from stream.stages import FaceAnalysis, FaceInput

# The lower-face region used by the classical baseline: nose bridge level,
# along the cheeks and jaw, under the chin.
LOWER_FACE_POLYGON = [234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379,
                      365, 397, 288, 361, 323, 454, 197]


class ModelAnalyser:
    """The trained analyser through an `engines` runner (anything with `run({"image": x})`)."""

    name = "model"
    learned = True

    def __init__(self, runner):
        self.runner = runner
        self.backend = getattr(runner, "name", "model")
        self.input_size = ANALYSER["input_size"]

    @classmethod
    def open(cls, backend: str = "auto", device: str | None = None, threads: int | None = None,
             weights_dir: str | Path | None = None) -> "ModelAnalyser":
        """`weights_dir`: a folder holding `analyser.onnx` (a candidate's), default the shipped one."""
        from engines import create_runner   # engines sits below the stream; imported when a model is opened

        model = weights_file("analyser.onnx", weights_dir)
        # precision "auto": fp16 engines on a GPU, fp32 on the CPU.
        return cls(create_runner(model, backend=backend, device=device, threads=threads, precision="auto"))

    def analyse(self, image: np.ndarray, faces: list[FaceInput]) -> list[FaceAnalysis]:
        if not faces:
            return []
        s = self.input_size
        crops = np.stack([f.alignment.crop(image, s) for f in faces])
        x = crops.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        res = self.runner.run({"image": x})
        probs, genders, lms = decode_analyser(res["mask_logits"], res["gender_logit"], res["landmarks"])
        return [FaceAnalysis(probs[i].astype(np.float32), float(genders[i]), lms[i].astype(np.float32))
                for i in range(len(faces))]

    def close(self) -> None:
        self.runner.close()


class LowerFaceAnalyser:
    """Baseline: the covering is the landmark-derived lower face; landmarks are the tracker's."""

    name = "classical"
    backend = "opencv"
    learned = False

    def analyse(self, image: np.ndarray, faces: list[FaceInput]) -> list[FaceAnalysis]:
        s = ANALYSER["input_size"]
        out = []
        for f in faces:
            lm_crop = f.alignment.to_crop(f.landmarks)
            prob = np.zeros((s, s), np.float32)
            poly = np.round(lm_crop[LOWER_FACE_POLYGON] * (s / CANONICAL_SIZE) * 4).astype(np.int32)
            cv2.fillPoly(prob, [cv2.convexHull(poly)], 1.0, cv2.LINE_AA, shift=2)
            out.append(FaceAnalysis(prob, 0.5, lm_crop))
        return out

    def close(self) -> None:
        pass
