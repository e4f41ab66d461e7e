"""Gender of a masked face from its face embedding: a small probe, fused with the analyser's head.

The analyser's own gender head (0.6 M parameters shared with the covering and the landmarks, trained
on two CPU cores) reaches 0.909 balanced accuracy on the real split and 0.73 on its darkest faces
(issue 12 §4). Intel's face-reidentification-retail-0095 (`models/weights/face_embedding.onnx`,
Apache-2.0) was trained on millions of faces to tell people apart; gender is one of the strongest
things its 256-d embedding holds, and it keeps most of it when the lower face is covered (the same
person covered: cosine ~0.6). A two-layer probe on that embedding (256 -> 128 -> 1, ~33 k weights),
fitted by `python -m training.fit_gender` on synthetically masked *training-split* faces, gives
the logit of P(female); the shipped gender is `probe + ANALYSER_WEIGHT x analyser logit`, the
weight chosen on the validation split. The real split is only measured.

The probe is tied to the embedding network by its sha256: another network's embeddings mean nothing
to it, and a mismatch is refused (None, with a warning) so the product falls back to the analyser.
The weights are plain arrays (`np.load(allow_pickle=False)`), the sidecar JSON says how they were made.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.colour import file_sha256
from models.spec import FACE_EMBEDDING, WEIGHTS_DIR

GENDER_PROBE_PATH = WEIGHTS_DIR / "gender_probe.npz"
ARRAYS = ("w1", "b1", "w2", "b2")     # hidden = relu(e @ w1 + b1); logit = hidden @ w2 + b2


def logit(p, eps: float = 1e-6):
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


@dataclass
class GenderProbe:
    """`probe.logit(embeddings)` -> logits of P(female); `probe.fuse(probe_logit, p_analyser)` -> P(female)."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    analyser_weight: float
    provenance: dict

    def logit(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, 256) or (256,) unit embeddings -> (N,) or () logits of P(female)."""
        e = np.asarray(embeddings, np.float32)
        hidden = np.maximum(e @ self.w1 + self.b1, 0)
        return (hidden @ self.w2 + self.b2)[..., 0].astype(np.float64)

    def fuse(self, probe_logit, p_analyser):
        """P(female) from the probe's logit (a mean over looks at the face) and the analyser's P(female)."""
        return sigmoid(np.asarray(probe_logit, np.float64) + self.analyser_weight * logit(p_analyser))

    @classmethod
    def load(cls, path: Path | str = GENDER_PROBE_PATH, embedding: Path | str | None = None) -> "GenderProbe":
        """Raises ValueError (one line) when the files do not fit together."""
        path = Path(path)
        spec = json.loads(path.with_suffix(".json").read_text())
        if spec.get("probe_sha256") != file_sha256(path):
            raise ValueError(f"{path.name} does not match its sidecar {path.with_suffix('.json').name}")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k].astype(np.float32) for k in ARRAYS}
        dim = spec.get("embedding_dim", 256)
        if arrays["w1"].shape[0] != dim or arrays["w2"].shape != (arrays["w1"].shape[1], 1):
            raise ValueError(f"{path.name}: weights of the wrong shape")
        probe = cls(**arrays, analyser_weight=float(spec["analyser_weight"]), provenance=spec)
        if embedding is not None and spec.get("embedding_sha256") != file_sha256(Path(embedding)):
            raise ValueError(f"{path.name} was fitted on another face embedding than {Path(embedding).name}")
        return probe

    @classmethod
    def shipped(cls, path: Path | str = GENDER_PROBE_PATH,
                embedding: Path | str = FACE_EMBEDDING) -> "GenderProbe | None":
        """The probe fitted for this embedding network, or None (with a warning) when it is missing or
        was fitted on another one: the analyser's gender is then used alone."""
        path = Path(path)
        if not path.exists() or not Path(embedding).exists():
            return None
        try:
            return cls.load(path, embedding)
        except (ValueError, KeyError, OSError) as e:
            logging.getLogger(__name__).warning("%s: gender from the analyser alone (refit: python -m "
                                                "training.fit_gender)", e)
            return None
