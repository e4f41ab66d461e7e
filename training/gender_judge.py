"""An independent judge of the gender a face is *drawn* as: Intel's age-gender-recognition-retail-0013.

Issue 12 §4 asks that the reconstruction be drawn as the right gender, judged by a classifier that is
not the one guiding the inpainter (that is the analyser fused with the gender probe on the face
embedding, models.gender). This judge is a third network: Intel's Open Model Zoo age-gender classifier
(Apache-2.0; OpenVINO IR in ../shared/weights, SOURCES.md there), measured there at ~0.9-0.97 balanced
accuracy on real *unmasked* faces and ~0.6 on masked ones. So it is told apart from the truth on
the uncovered face (its ceiling) and on the covered input (what a viewer of the masked face sees).
Evaluation only: it needs the `openvino` package (`pip install openvino`), which the product never
imports; nothing is trained with it.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
JUDGE_XML = ROOT.parent / "shared" / "weights" / "age-gender-recognition-retail-0013.xml"
INPUT = 62           # px, BGR 0-255
BOX_SCALE = 1.0      # the face's landmark box as it is: chosen on the val split (uncovered faces: 0.949 vs 0.941
                     # at 1.15, 0.931 at 1.3)


def missing() -> str | None:
    """Why the judge cannot run here (one line), or None."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "the gender judge needs the openvino package (pip install openvino)"
    if not JUDGE_XML.exists():
        return f"the gender judge's weights are missing: {JUDGE_XML}"
    return None


def face_square(landmarks: np.ndarray, scale: float) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the square the judge sees: the mesh points' box grown by `scale`."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    c = (lo + hi) / 2
    return float(c[0]), float(c[1]), float(max(hi - lo) * scale)


class GenderJudge:
    """`judge(image_bgr, landmarks)` -> P(female) of the face the 468 landmarks outline."""

    def __init__(self, xml: Path = JUDGE_XML):
        problem = missing() if xml == JUDGE_XML else None
        if problem:
            raise FileNotFoundError(problem)
        import openvino as ov
        core = ov.Core()
        self.model = core.compile_model(core.read_model(str(xml)), "CPU")
        self.output = self.model.output("prob")

    def __call__(self, image_bgr: np.ndarray, landmarks: np.ndarray) -> float:
        cx, cy, side = face_square(np.asarray(landmarks, np.float64), BOX_SCALE)
        s = INPUT / side
        m = np.float64([[s, 0, INPUT / 2 - s * cx], [0, s, INPUT / 2 - s * cy]])
        face = cv2.warpAffine(image_bgr, m, (INPUT, INPUT), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
        prob = self.model(face.transpose(2, 0, 1)[None].astype(np.float32))[self.output].reshape(-1)
        return float(prob[0])        # (female, male)
