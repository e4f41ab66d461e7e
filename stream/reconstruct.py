"""The reconstructor stage: redraw the lower-face windows of the masked faces, all in one batch.

`Reconstructor.inpaint(windows, holes, landmark_maps, genders)` (stream.stages) takes the windows
cut from the frame (models.spec.INPAINT_WINDOW), the holes to fill, the landmark guide maps and the
genders, and returns the redrawn windows; the compositor cuts the windows and blends the result back.

* `GenerativeReconstructor` (default): the shipped inpainter network (guided by the landmark map
  and the gender), through any `engines` runner, its fill's colour corrected from the visible skin
  around the hole (models.colour).
* `TeleaReconstructor` (`--method classical`): the BASELINE kept for comparison: `cv2.inpaint`
  (Telea). No learning.

A reconstructor that copies the person's own face from a reference photo plugs in here.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.colour import ColourCorrection
from models.spec import CANONICAL_SIZE, INPAINTER_PRESETS, draw_landmark_map, weights_file, window_matrix
from stream.alignment import Alignment, compose_affine, transform_points


class GenerativeReconstructor:
    """The trained inpainter through an `engines` runner."""

    name = "model"

    def __init__(self, runner, window_size: int, colour: ColourCorrection | None = None):
        self.runner = runner
        self.window_size = window_size
        self.colour = colour      # the inpainter's fitted skin-tone correction (models.colour), if any

    @classmethod
    def open(cls, preset: str = "fast", backend: str = "auto", device: str | None = None,
             threads: int | None = None, colour: bool = True,
             weights_dir: str | Path | None = None) -> "GenerativeReconstructor":
        """`weights_dir`: a folder holding `inpainter_<preset>.onnx` and its colour correction (a
        candidate's), default the shipped ones."""
        from engines import create_runner   # engines sits below the stream; imported when a model is opened

        name = f"inpainter_{preset}"
        model = weights_file(f"{name}.onnx", weights_dir)
        runner = create_runner(model, backend=backend, device=device, threads=threads, precision="auto")
        return cls(runner, INPAINTER_PRESETS[preset]["size"], ColourCorrection.for_inpainter(model) if colour else None)

    def inpaint(self, windows, holes, landmark_maps, genders):
        res = self.runner.run({
            "image": windows.transpose(0, 3, 1, 2).astype(np.float32) / 255.0,
            "hole": holes[:, None].astype(np.float32),
            "landmark_map": landmark_maps[:, None].astype(np.float32),
            "gender": genders.astype(np.float32),
        })
        out = res["output"].transpose(0, 2, 3, 1) * 255.0
        out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        return out if self.colour is None else self.colour.correct(windows, holes, out)

    def close(self) -> None:
        self.runner.close()


class TeleaReconstructor:
    """Baseline: cv2.inpaint (Telea) inside the hole."""

    name = "classical"

    def __init__(self, window_size: int = 128, radius: int = 5):
        self.window_size = window_size
        self.radius = radius

    def inpaint(self, windows, holes, landmark_maps, genders):
        out = np.empty_like(windows)
        for i, (w, h) in enumerate(zip(windows, holes)):
            out[i] = cv2.inpaint(w, (h > 0.5).astype(np.uint8), self.radius, cv2.INPAINT_TELEA)
        return out

    def close(self) -> None:
        pass


def frame_to_window(alignment: Alignment, size: int) -> np.ndarray:
    """2x3 affine: frame pixels -> the face's inpainting window of `size` px."""
    return compose_affine(window_matrix(size), alignment.matrix * (CANONICAL_SIZE / alignment.size))


def landmark_map_for(landmarks_crop: np.ndarray, size: int) -> np.ndarray:
    """The inpainter's landmark map from landmarks in canonical-crop pixels."""
    return draw_landmark_map(transform_points(landmarks_crop, window_matrix(size)), size)
