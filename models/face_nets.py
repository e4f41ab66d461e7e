"""mediapipe's networks (the full-range face detector and the 468-point face mesh) as torch modules.

They are read from the .tflite files inside the installed mediapipe wheel (`models.tflite_graph`
rebuilds them op by op); the GPU tracker (`stream.torch_tracking`) runs them, the ONNX export
(`export.onnx`) exports them, and `engines.torch_runner` serves their exports. Nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from models.errors import ModelError
from models.spec import MEDIAPIPE_NETS

__all__ = ["FaceNet", "load_face_net", "mediapipe_model_path"]


def mediapipe_model_path(name: str, model_dir: str | Path | None = None) -> Path:
    """A .tflite file of mediapipe's `modules/` folder: from `model_dir`, $UNMASK_MEDIAPIPE_MODULES,
    or the installed mediapipe wheel (located without importing it)."""
    roots = [Path(p) for p in (model_dir, os.environ.get("UNMASK_MEDIAPIPE_MODULES")) if p]
    spec = importlib.util.find_spec("mediapipe")
    if spec is not None and spec.submodule_search_locations:
        roots += [Path(p) / "modules" for p in spec.submodule_search_locations]
    for root in roots:
        for candidate in (root / name, root / Path(name).name):
            if candidate.is_file():
                return candidate
    raise ModelError(f"mediapipe's {Path(name).name} was not found: install mediapipe==0.10.21 "
                     "or set UNMASK_MEDIAPIPE_MODULES to a folder holding it")


class FaceNet(torch.nn.Module):
    """A mediapipe network with its outputs as the contracts (models.spec.CONTRACTS) name them:
    the detector -> (regressors (N, 2304, 16), score_logits (N, 2304, 1)); the mesh -> (landmarks
    (N, 468, 3), face_logit (N, 1)). The tracker runs it; the ONNX export exports it."""

    def __init__(self, name: str, graph):
        super().__init__()
        self.name = name
        self.graph = graph
        self._order = [graph.output_names.index(n) for n in MEDIAPIPE_NETS[name]["outputs"]]

    def forward(self, image):
        outs = self.graph(image)
        a, b = outs[self._order[0]], outs[self._order[1]]
        if self.name == "face_mesh":               # (N,1,1,1404), (N,1,1,1) -> (N,468,3), (N,1)
            return a.reshape(-1, 468, 3), b.reshape(-1, 1)
        return a, b


def load_face_net(name: str, model_dir=None) -> FaceNet:
    """mediapipe's `name` network (models.spec.MEDIAPIPE_NETS) as an eval-mode CPU fp32 module."""
    from models.tflite_graph import TfliteGraph, UnsupportedGraph

    try:
        graph = TfliteGraph.from_file(mediapipe_model_path(MEDIAPIPE_NETS[name]["file"], model_dir))
    except UnsupportedGraph as e:
        raise ModelError(str(e)) from None
    return FaceNet(name, graph).eval()


