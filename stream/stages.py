"""The stages `Unmasker` is composed of, and the small typed records that pass between them.

    tracker       frame -> [TrackedFace]                       stream.tracking / stream.torch_tracking
    analyser      frame, [FaceInput] -> [FaceAnalysis]         stream.analyser (CPU), stream.gpu (torch)
    reconstructor windows + holes + guides -> redrawn windows  stream.reconstruct (generative, baseline)
    compositor    frame, [InpaintJob] -> the output image      stream.compositing (CPU), stream.gpu (torch)

The per-track rules between analysis and compositing (mask smoothing, masked or not, which landmarks,
gender) are `stream.face_state`. Every implementation of a stage has the methods of its protocol
below; the Unmasker calls nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union, runtime_checkable

import numpy as np

from stream.alignment import Alignment
from stream.tracking import TrackedFace

if TYPE_CHECKING:                    # torch is not part of the inference install
    import torch


# -- records between stages ---------------------------------------------------------------------------

@dataclass
class FaceInput:
    """A tracked face aligned to the canonical crop: what the analyser reads."""

    alignment: Alignment
    landmarks: np.ndarray     # (468, 2) frame pixels (tracker / smoothed)


@dataclass
class FaceAnalysis:
    """The analyser's estimate for one face."""

    mask_prob: np.ndarray           # (S, S) covering probability in the analyser crop (S = its input size)
    gender_female: float            # P(female); 0.5 when unknown
    landmarks_crop: np.ndarray      # (468, 2) canonical-crop pixels (analyser's estimate where hidden)


FaceOutput = FaceAnalysis             # its earlier name


@dataclass
class Redraw:
    """One face's redrawn window as a compositor blended it, kept for the next frame: in a crowd the
    Unmasker redraws some faces every other frame only and blends this in between (the crowd cadence)."""

    pixels: np.ndarray              # (h, w, 3) uint8: the redrawn window (or the own face's frame-resolution render)
    from_window: np.ndarray         # 2x3: inpainting-window px -> `pixels` px (the identity but for such a render)
    frame_to_window: np.ndarray     # 2x3: the frame it was drawn on -> the inpainting window
    frame_hole: object              # stream.hole.FrameHole it was blended through


@dataclass
class InpaintJob:
    """One masked face to redraw."""

    alignment: Alignment                  # frame -> canonical crop
    mask: Union[np.ndarray, "torch.Tensor"]  # (s, s) covering in the analyser crop (bool or probability; > 0.5 = hole)
    landmarks_crop: np.ndarray            # (468, 2) canonical-crop pixels: the guide the inpainter follows
    gender: float                         # P(female)
    # The own-face path (stream.reference.ReferenceFace): this person's photo to draw instead of a
    # generated face; None for the generative path. Both compositors draw it (stream.reference, on the CPU).
    reference: object | None = None
    # stream.hole.FrameHole: the hole at the frame's resolution (eyes cut out); None: the compositor
    # makes the window hole from `mask` (the GPU path, and jobs passed on their own).
    frame_hole: object | None = None
    # The crowd cadence (compositors with `carries_redraws`): in, the last frame's Redraw of this face to
    # blend again (moved with the face, through `frame_hole`) instead of drawing anew; out, the Redraw
    # the compositor drew for a job without one.
    carry: Redraw | None = None
    redraw: Redraw | None = None


@dataclass
class FrameContext:
    """What one `process` call is about; every stage of that call sees the same one."""

    image: np.ndarray                 # the input frame, H x W x 3 uint8 BGR (never modified)
    timestamp_ms: float | None        # None: a still image (no temporal state)
    as_tensor: bool = False           # the output image stays on the device (torch compositor only)

    @property
    def video(self) -> bool:
        return self.timestamp_ms is not None

    @property
    def timestamp_s(self) -> float | None:
        return None if self.timestamp_ms is None else self.timestamp_ms / 1000.0


# -- what Result.image can be ---------------------------------------------------------------------------

@runtime_checkable
class DeferredImage(Protocol):
    """A frame still on its way to host memory (stream.gpu.PendingFrame): `result()` waits for it."""

    def result(self) -> np.ndarray: ...


# np.ndarray from the CPU path; a torch.Tensor with as_tensor=True; a DeferredImage with defer_download.
FrameImage = Union[np.ndarray, "torch.Tensor", DeferredImage]


def host_image(image: FrameImage) -> Any:
    """The image itself, or the host array of a deferred one (waits for its download)."""
    return image.result() if isinstance(image, DeferredImage) else image


# -- the stage protocols ----------------------------------------------------------------------------------

class Tracker(Protocol):
    def process(self, image_bgr: np.ndarray) -> list[TrackedFace]: ...

    @property
    def active_track_ids(self) -> set[int]: ...

    def close(self) -> None: ...


class Analyser(Protocol):
    name: str                        # "model" | "classical"
    backend: str                     # what runs it: "onnxruntime", "torch", "opencv" ...
    learned: bool                    # True: estimates hidden landmarks and gender (the trained network)

    def analyse(self, image: np.ndarray, faces: list[FaceInput]) -> list[FaceAnalysis]: ...

    def close(self) -> None: ...


class Reconstructor(Protocol):
    name: str
    window_size: int                 # side of the lower-face window it redraws (models.spec.INPAINT_WINDOW)

    def inpaint(self, windows: np.ndarray, holes: np.ndarray, landmark_maps: np.ndarray,
                genders: np.ndarray) -> np.ndarray:
        """Batched: windows (N,S,S,3) uint8, holes (N,S,S) float, maps (N,S,S) float, genders (N,)
        -> (N,S,S,3) uint8."""

    def close(self) -> None: ...


class FrameStore(Protocol):
    """Per-frame data the stages share (the GPU path's device copy of the frame: stream.gpu.DeviceFrames)."""

    def release(self) -> None:
        """Forget this frame's data; called after every `process`, also when it failed."""


class Compositor(Protocol):
    window_size: int

    def composite(self, ctx: FrameContext, jobs: list[InpaintJob]) -> tuple[FrameImage, float]:
        """The output image with every job's face redrawn (a copy of the input when there is none),
        and the milliseconds the reconstruction itself took."""

    def close(self) -> None: ...
