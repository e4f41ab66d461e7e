"""The GPU-resident reconstruction path: one upload per frame, everything else in torch on the device.

    from stream.gpu import GpuUnmasker
    um = GpuUnmasker(device="cuda")                # stream.factory.create_unmasker picks it for CUDA
    res = um.process(frame_bgr, timestamp_ms=t)    # same Result / Face contract as Unmasker
    res = um.process(frame_bgr, t, as_tensor=True) # res.image: (H, W, 3) uint8 tensor on the device

`Unmasker` moves every crop, window and network input through numpy and
OpenCV. On a GPU that costs a host round trip per stage; here the frame is
uploaded once (through a reused pinned staging buffer) and the analyser crops,
normalisation, the networks, the inpainting windows, the hole warp and
dilation, the feathering, the inverse warp and the blend all run on the device
with torch. Only what the `Face` API and the CPU-side mask smoothing need comes
back per face (the 128 px mask probabilities, 468 landmarks and the gender:
about 70 kB), and the finished frame comes back once (or stays on the device).
Tracking runs on the device too (`tracker="torch"`, the default: mediapipe's own detector and face
mesh run by torch, `stream.torch_tracking`), sharing the frame's single upload; `tracker="mediapipe"`
keeps mediapipe's CPU graphs.

Geometry follows OpenCV (up to its 1/32 px coordinate quantisation and the uint8
rounding of its intermediate crops, which this path does not do): the 2x3 matrices of `stream.alignment` and
`stream.reconstruct` are cv2-style (pixel centres at integer coordinates) and
are converted to `F.affine_grid` thetas for `align_corners=False`;
`padding_mode="border"` is `cv2.BORDER_REPLICATE`, "zeros" is the constant-0
border, `max_pool2d` is `cv2.dilate` with a square kernel, a separable conv2d
with cv2's own Gaussian kernel and reflect-101 padding is `cv2.GaussianBlur`.
Sampling grids and warps always run in fp32 (fp16 normalised coordinates are
off by pixels on a 4K frame); only the networks run in fp16 on CUDA.

The same code runs on the CPU (`device="cpu"`, fp32): that is how the tests
check it against the numpy / OpenCV path on machines without a GPU.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engines.cuda_graph import CudaGraphed
from models.spec import ANALYSER, CANONICAL_SIZE, HOLE_DILATE_PX, INPAINTER_PRESETS, WEIGHTS_DIR, decode_analyser, hole_kernel_size, window_matrix
from models.checkpoints import load_network
from models.colour import ColourCorrection
from stream.alignment import Alignment, border_classes, transform_points
from stream.compositing import GENERATED_BORDER_MATCH
from stream.errors import ModelError
from stream.hole import window_protected_region
from stream.reconstruct import frame_to_window, landmark_map_for
from stream.reference import (REFERENCE_PX, SEAM_BAND_FRACTION, SEAM_OFFSET_MAX, SEAM_SIGMA_FRACTION,
                              render_size)
from stream.stages import FaceAnalysis, FrameContext, InpaintJob
from stream.tracking import FaceTracker
from stream.unmasker import Unmasker

__all__ = ["TorchFrameReconstructor", "PendingFrame", "InpaintJob", "GpuUnmasker", "DeviceFrames", "TorchAnalyser",
           "TorchCompositor", "cv2_to_theta", "warp_affine", "load_module"]


# -- cv2 matrices -> affine_grid thetas ------------------------------------------------------------

def _pixel_to_norm(w: int, h: int) -> np.ndarray:
    """3x3: cv2 pixel coordinates (centre of pixel i at i) -> grid_sample coordinates, align_corners=False
    (-1 is the left edge of pixel 0, i.e. pixel coordinate -0.5; +1 the right edge of pixel w-1)."""
    return np.array([[2.0 / w, 0, 1.0 / w - 1], [0, 2.0 / h, 1.0 / h - 1], [0, 0, 1]], np.float64)


def _norm_to_pixel(w: int, h: int) -> np.ndarray:
    return np.array([[w / 2.0, 0, (w - 1) / 2.0], [0, h / 2.0, (h - 1) / 2.0], [0, 0, 1]], np.float64)


def _h(m: np.ndarray) -> np.ndarray:
    """(..., 2, 3) -> (..., 3, 3)."""
    m = np.asarray(m, np.float64)
    last = np.broadcast_to(np.array([0.0, 0.0, 1.0]), m.shape[:-2] + (1, 3))
    return np.concatenate([m, last], -2)


def theta_from_dst_to_src(dst_to_src: np.ndarray, src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> np.ndarray:
    """(N, 2, 3) maps from destination pixels to source pixels (cv2 convention) -> affine_grid thetas."""
    return (_pixel_to_norm(*src_wh) @ _h(dst_to_src) @ _norm_to_pixel(*dst_wh))[..., :2, :]


def cv2_to_theta(m: np.ndarray, src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> np.ndarray:
    """The theta(s) for which `grid_sample(src, affine_grid(theta, ...), align_corners=False)` equals
    `cv2.warpAffine(src, m, dst_wh)`: `m` (2x3 or N x 2 x 3) maps source pixels to destination pixels."""
    m = np.asarray(m, np.float64)
    inv = np.linalg.inv(_h(m))[..., :2, :]
    return theta_from_dst_to_src(inv, src_wh, dst_wh)


def _grid(theta: np.ndarray, n: int, out_hw: tuple[int, int], device) -> torch.Tensor:
    # A few bytes from pageable memory: non_blocking stages them at once, without a stream sync.
    th = torch.from_numpy(np.ascontiguousarray(theta, np.float32)).to(device, non_blocking=True)
    if th.ndim == 2:
        th = th[None]
    if th.shape[0] != n:
        th = th.expand(n, 2, 3)
    return F.affine_grid(th, (n, 1, *out_hw), align_corners=False)


def warp_affine(src: torch.Tensor, m: np.ndarray, dsize: tuple[int, int], padding_mode: str = "border",
                inverse_map: bool = False) -> torch.Tensor:
    """`cv2.warpAffine(src, m, dsize, INTER_LINEAR)` for a float (N, C, H, W) tensor.

    `m`: 2x3 (shared) or (N, 2, 3), source -> destination pixels (destination -> source with
    `inverse_map`, like cv2.WARP_INVERSE_MAP). padding "border" = BORDER_REPLICATE, "zeros" = constant 0.
    """
    n, _, h, w = src.shape
    m = np.asarray(m, np.float64)
    theta = (theta_from_dst_to_src(m, (w, h), dsize) if inverse_map else cv2_to_theta(m, (w, h), dsize))
    grid = _grid(theta, n, (dsize[1], dsize[0]), src.device)
    return F.grid_sample(src, grid.to(src.dtype), mode="bilinear", padding_mode=padding_mode,
                         align_corners=False)


def _sample_box(dst_to_src: np.ndarray, out_wh: tuple[int, int], src_wh: tuple[int, int]):
    """Source-pixel box [x0, x1) x [y0, y1) (clipped, never empty) holding every pixel a bilinear sample
    of the out_wh destination grid reads; border clamping stays exact inside it."""
    ow, oh = out_wh
    w, h = src_wh
    corners = np.array([[0, 0], [ow - 1, 0], [0, oh - 1], [ow - 1, oh - 1]], np.float64)
    pts = corners @ dst_to_src[:, :2].T + dst_to_src[:, 2]
    x0, y0 = np.floor(pts.min(0)).astype(np.int64) - 1
    x1, y1 = np.floor(pts.max(0)).astype(np.int64) + 3
    x0, y0 = min(max(int(x0), 0), w - 1), min(max(int(y0), 0), h - 1)
    x1, y1 = max(min(int(x1), w), x0 + 1), max(min(int(y1), h), y0 + 1)
    return x0, y0, x1, y1


# -- loading --------------------------------------------------------------------------------------

def load_module(name: str, device: str = "cpu", precision: str = "fp32", weights_dir: str | Path | None = None):
    """The network `name` as an eval-mode torch module on `device` (fp16 on CUDA when asked, else fp32).

    With `<weights_dir>/<name>.onnx` present this is `TorchRunner`'s own module (same sidecar sha256
    check, channels-last on CUDA); with only `<name>.pt` (e.g. a training snapshot) the same
    weights_only state-dict loader and `models.networks.build`.
    """
    from engines.torch_runner import TorchRunner

    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    onnx_path = folder / f"{name}.onnx"
    if onnx_path.exists():
        return TorchRunner(onnx_path, device=device, precision=precision).net
    net = load_network(name, folder / f"{name}.pt")
    dtype = torch.float16 if precision == "fp16" and device.startswith("cuda") else torch.float32
    net = net.eval().to(torch.device(device), dtype=dtype)
    if device.startswith("cuda"):
        net = net.to(memory_format=torch.channels_last)
    return net


# -- the device path ------------------------------------------------------------------------------

class _Pinned:
    """A reused page-locked host buffer; an event guards reuse while an async copy may still read it."""

    def __init__(self):
        self.buf: torch.Tensor | None = None
        self.event = None

    def get(self, shape, dtype) -> torch.Tensor:
        if self.event is not None:
            self.event.synchronize()          # the previous async copy out of / into it is done
            self.event = None
        n = int(np.prod(shape))
        if self.buf is None or self.buf.dtype != dtype or self.buf.numel() < n:
            with torch.inference_mode(False):   # a normal tensor: copy_ into it works in and out of it
                self.buf = torch.empty(n, dtype=dtype, pin_memory=True)
        return self.buf[:n].view(tuple(shape))

    def record(self, device: torch.device):
        self.event = torch.cuda.Event()
        self.event.record(torch.cuda.current_stream(device))


class PendingFrame:
    """A finished frame on its way from the device to host memory.

    The copy runs on a side stream, after the work that made the frame and concurrently with the next
    frame's: with the pipeline's queue between inference and output this keeps several frames in
    flight (one computing, others downloading). `result()` waits for this frame's copy only and
    returns the (H, W, 3) uint8 array (pinned memory, kept alive by the array).
    """

    def __init__(self, frame: torch.Tensor, stream):
        self.shape = tuple(frame.shape)
        if frame.device.type != "cuda":
            self._host, self._event = frame.numpy().copy(), None
            return
        stream.wait_stream(torch.cuda.current_stream(frame.device))
        with torch.cuda.stream(stream):
            with torch.inference_mode(False):
                host = torch.empty(frame.shape, dtype=frame.dtype, pin_memory=True)   # torch caches these
            host.copy_(frame, non_blocking=True)
            frame.record_stream(stream)     # its memory is not reused before the copy has read it
            self._event = torch.cuda.Event()
            self._event.record(stream)
        self._host = host

    def result(self) -> np.ndarray:
        if self._event is not None:
            self._event.synchronize()
            self._event = None
            self._host = self._host.numpy()
        return self._host


class TorchFrameReconstructor:
    """Analyser + inpainter + all the warps as torch on one device. Not thread-safe.

    `device`: "cuda", "cuda:N" or "cpu" (the CPU runs the same code in fp32: for tests).
    `precision`: the networks' precision on CUDA, "fp16" (default) or "fp32"; grids and warps are fp32.
    `weights_dir`: where `analyser.*` and `inpainter_<preset>.*` are (default models/weights).
    `cuda_graphs`: on CUDA, replay each network as a CUDA graph per batch size (engines.cuda_graph).
    """

    def __init__(self, device: str = "cuda", precision: str | None = None, preset: str = "fast",
                 weights_dir: str | Path | None = None, dilate_px: int = HOLE_DILATE_PX, feather_px: int = 3,
                 cuda_graphs: bool = True):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(f"PyTorch has no CUDA device for {device}: install a CUDA build of PyTorch "
                             f"on a machine with an NVIDIA GPU, or use device='cpu'")
        if device != "cpu" and not device.startswith("cuda"):
            raise ModelError(f"unknown device {device!r}: use cpu or cuda[:N]")
        if preset not in INPAINTER_PRESETS:
            raise ModelError(f"unknown preset {preset!r}: choose {' or '.join(INPAINTER_PRESETS)}")
        if precision is None:
            precision = "fp16" if device.startswith("cuda") else "fp32"
        if precision not in ("fp16", "fp32"):
            raise ModelError(f"unknown precision {precision!r}: choose fp16 or fp32")
        self.cuda = device.startswith("cuda")
        self.precision = precision if self.cuda else "fp32"   # fp16 convolutions on the CPU: slow, inexact
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.preset = preset
        self.window_size = INPAINTER_PRESETS[preset]["size"]
        self.analyser_size = ANALYSER["input_size"]
        self.dilate_px, self.feather_px = dilate_px, feather_px
        self.analyser = load_module("analyser", device, self.precision, weights_dir)
        self.inpainter = load_module(f"inpainter_{preset}", device, self.precision, weights_dir)
        # The inpainter's fitted skin-tone correction, as the CPU path's reconstructor applies it.
        self.colour = ColourCorrection.for_inpainter(Path(weights_dir or WEIGHTS_DIR) / f"inpainter_{preset}.onnx")
        self.border_match = GENERATED_BORDER_MATCH     # 0: the generated fill as drawn
        if self.cuda and cuda_graphs:
            # Small networks: on a GPU their cost is kernel launches; a graph launches them at once.
            self.analyser, self.inpainter = CudaGraphed(self.analyser), CudaGraphed(self.inpainter)
        fk = 2 * feather_px + 1
        g = torch.as_tensor(cv2.getGaussianKernel(fk, 0).ravel(), dtype=torch.float32)  # cv2's own kernel
        self._gauss_x = g.view(1, 1, 1, fk).to(self.device)
        self._gauss_y = g.view(1, 1, fk, 1).to(self.device)
        self._feather_fn = self._feather_eager
        if self.cuda and cuda_graphs:
            # Profiled on the H200: these two eager 1-channel convolutions cost more host time
            # than both networks together; as a graph they are one launch.
            self._feather_fn = CudaGraphed(self._feather_eager)
        self._up, self._down, self._aux = _Pinned(), _Pinned(), _Pinned()

    # -- transfers ------------------------------------------------------------------------------
    def upload(self, frame_bgr: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 BGR -> a new (H, W, 3) uint8 tensor on the device (async on CUDA)."""
        frame_bgr = np.asarray(frame_bgr)
        if not self.cuda:
            return torch.from_numpy(np.array(frame_bgr, np.uint8, copy=True))
        staging = self._up.get(frame_bgr.shape, torch.uint8)
        np.copyto(staging.numpy(), frame_bgr, casting="no")
        out = staging.to(self.device, non_blocking=True)
        self._up.record(self.device)
        return out

    def download(self, t: torch.Tensor, out: np.ndarray | None = None) -> np.ndarray:
        """A device tensor -> a host numpy array of its own (or written into `out`)."""
        if t.device.type != "cuda":
            a = t.detach().numpy()
            if out is None:
                return a.copy()
            np.copyto(out, a)
            return out
        staging = self._down.get(tuple(t.shape), t.dtype)
        staging.copy_(t, non_blocking=True)
        self._down.record(self.device)
        self._down.event.synchronize()
        self._down.event = None
        if out is None:
            out = np.empty(tuple(t.shape), staging.numpy().dtype)
        np.copyto(out, staging.numpy())
        return out

    def _upload_aux(self, arrays: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Small float32 arrays packed into one pinned buffer and one host->device copy."""
        sizes = [a.size for a in arrays]
        if not self.cuda:
            return [torch.from_numpy(np.array(a, np.float32)) for a in arrays]
        staging = self._aux.get((sum(sizes),), torch.float32)
        host = staging.numpy()
        o = 0
        for a, n in zip(arrays, sizes):
            host[o:o + n] = np.asarray(a, np.float32).ravel()
            o += n
        dev = staging.to(self.device, non_blocking=True)
        self._aux.record(self.device)
        out, o = [], 0
        for a, n in zip(arrays, sizes):
            out.append(dev[o:o + n].view(a.shape))
            o += n
        return out

    @torch.inference_mode()
    def warm_up(self, max_batch: int = 1) -> None:
        """Capture the CUDA graphs of batches 1..max_batch now. A capture costs ~0.1-1 s (cuDNN's
        choices, the graph's memory): done on the first masked face it would freeze a live stream."""
        if not (self.cuda and isinstance(self.inpainter, CudaGraphed)):
            return
        s, w = self.analyser_size, self.window_size
        for n in range(1, max_batch + 1):
            z = lambda *shape: torch.zeros(n, *shape, device=self.device)   # noqa: E731
            self.analyser(self._net_input(z(3, s, s)))
            self.inpainter(self._net_input(z(3, w, w)), self._net_input(z(1, w, w)), self._net_input(z(1, w, w)),
                           z().to(self.dtype))
            self._feather(z(1, w, w))
        torch.cuda.synchronize(self.device)

    def _net_input(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.dtype)
        if self.cuda and t.ndim == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    # -- sampling the frame ---------------------------------------------------------------------
    def _sample_frame(self, frame: torch.Tensor, dst_to_frame: np.ndarray, size: int) -> torch.Tensor:
        """Batched bilinear crops (N, 3, size, size) float32 in 0..255 of the uint8 (H, W, 3) frame, border
        replicated. Only the region the crops read is converted to float (one region for all faces
        unless they are far apart)."""
        h, w = frame.shape[:2]
        n = len(dst_to_frame)
        boxes = [_sample_box(a, (size, size), (w, h)) for a in dst_to_frame]
        union = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                 max(b[3] for b in boxes))
        area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
        if n == 1 or area(union) <= 2 * sum(area(b) for b in boxes):
            groups = [(union, list(range(n)))]
        else:
            groups = [(b, [i]) for i, b in enumerate(boxes)]
        out = torch.empty((n, 3, size, size), dtype=torch.float32, device=frame.device)
        for (x0, y0, x1, y1), idx in groups:
            roi = frame[y0:y1, x0:x1].permute(2, 0, 1).unsqueeze(0).float()
            a = dst_to_frame[idx].copy()
            a[:, :, 2] -= (x0, y0)                      # destination pixel -> ROI pixel
            theta = theta_from_dst_to_src(a, (x1 - x0, y1 - y0), (size, size))
            grid = _grid(theta, len(idx), (size, size), frame.device)
            res = F.grid_sample(roi.expand(len(idx), -1, -1, -1), grid, mode="bilinear",
                                padding_mode="border", align_corners=False)
            if len(idx) == n:
                out = res
            else:
                out[idx] = res
        return out

    # -- the analyser -----------------------------------------------------------------------------
    @torch.inference_mode()
    def analyse(self, frame: torch.Tensor, alignments: Sequence[Alignment]):
        """Batched analysis of the faces at `alignments` in the (H, W, 3) uint8 device frame.

        Returns device tensors: mask probabilities (N, s, s) float32 in the analyser crop (s = 128),
        P(female) (N,), and landmarks (N, 468, 2) in canonical-crop pixels.
        """
        s = self.analyser_size
        if not alignments:
            z = torch.zeros
            return z((0, s, s), device=self.device), z((0,), device=self.device), z((0, 468, 2), device=self.device)
        # analyser crop = Alignment.crop(image, s): the matrix scaled by s / alignment.size
        fwd = np.stack([a.matrix * (s / a.size) for a in alignments])
        crops = self._sample_frame(frame, np.linalg.inv(_h(fwd))[:, :2], s)
        mask_logits, gender_logit, landmarks = self.analyser(self._net_input(crops * (1.0 / 255.0)))
        return decode_analyser(mask_logits.float(), gender_logit.float(), landmarks.float(), sigmoid=torch.sigmoid)

    # -- the inpainter and the blend --------------------------------------------------------------
    def _feather(self, hole: torch.Tensor) -> torch.Tensor:
        """cv2.GaussianBlur(hole, (k, k), 0) * hole (BORDER_REFLECT_101 = torch's 'reflect')."""
        return self._feather_fn(hole)

    def _feather_eager(self, hole: torch.Tensor) -> torch.Tensor:
        r = self.feather_px
        x = F.conv2d(F.pad(hole, (r, r, 0, 0), mode="reflect"), self._gauss_x)
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), self._gauss_y)
        return x * hole

    def _windows_and_holes(self, frame, jobs: Sequence[InpaintJob]):
        size, s_an = self.window_size, self.analyser_size
        mats = np.stack([frame_to_window(j.alignment, size) for j in jobs])      # frame -> window
        windows = self._sample_frame(frame, np.linalg.inv(_h(mats))[:, :2], size)
        masks_np = [j.mask for j in jobs if not isinstance(j.mask, torch.Tensor)]
        maps = np.stack([landmark_map_for(np.asarray(j.landmarks_crop), size) for j in jobs])
        genders = np.array([j.gender for j in jobs], np.float32)
        protected_np = np.stack([window_protected_region(j.landmarks_crop, size) for j in jobs]).astype(np.float32)
        aux = [maps, genders, protected_np] + [np.asarray(m, np.float32) for m in masks_np]
        dev = self._upload_aux(aux)
        maps_t, genders_t, protected, uploaded = dev[0][:, None], dev[1], dev[2][:, None], iter(dev[3:])
        masks = torch.stack([j.mask.to(self.device, torch.float32) if isinstance(j.mask, torch.Tensor)
                             else next(uploaded) for j in jobs])[:, None]
        # analyser crop -> window: (window <- canonical) o (canonical <- analyser crop), as the CPU path
        wm = window_matrix(size).copy()
        wm[:, :2] *= CANONICAL_SIZE / s_an
        hole = warp_affine(masks, wm, (size, size), padding_mode="zeros")
        k = hole_kernel_size(size, self.dilate_px)                               # models.spec's hole rule
        hole = F.max_pool2d((hole > 0.5).float(), k, stride=1, padding=k // 2)    # = cv2.dilate, square k
        # Never over the eyes, the brows or above them, whatever the segmentation says (as the CPU
        # path's stream.hole): the feathered alpha is exactly 0 there, so those pixels keep their values.
        hole = hole * (1.0 - protected)
        return mats, windows, hole, maps_t, genders_t

    @torch.inference_mode()
    def inpaint_and_blend(self, frame: torch.Tensor, jobs: Sequence[InpaintJob],
                          inplace: bool = False, video: bool = False,
                          reference_px: int | None = None) -> torch.Tensor:
        """Redraw every job's lower-face window in one inpainter batch and blend it into the frame.

        Jobs with a `reference` (the own-face path) get its render over the generated window (on the
        CPU: stream.reference; `video` smooths its lighting over frames, as the CPU compositor does),
        a large face at its frame resolution up to `reference_px` (stream.reference.render_size).
        Pixels where the warped feathered hole (alpha) is 0 keep their exact values. Returns the
        (H, W, 3) uint8 device frame (`frame` itself when `inplace`).
        """
        out = frame if inplace else frame.clone()
        if not jobs:
            return out
        size = self.window_size
        mats, windows, hole, maps, genders = self._windows_and_holes(frame, jobs)
        pred = self.inpainter(self._net_input(windows * (1.0 / 255.0)), self._net_input(hole),
                              self._net_input(maps), genders.to(self.dtype))
        pred = (pred.float() * 255.0).clamp_(0, 255)
        if self.colour is not None:
            pred = self.colour.correct_torch(windows, hole, pred)
        if self.border_match:
            # As the CPU compositor: the fill's border toward the face around the hole (the face's
            # outline drawn on the host, a few KB a face up).
            classes = self._upload_aux([np.stack(border_classes(transform_points(np.asarray(j.landmarks_crop),
                                                                                 window_matrix(size)), size))
                                        for j in jobs])
            pred = match_generated_borders_torch(pred, windows, hole, torch.stack(classes) > 0.5, self.border_match)
        regions = {}
        if any(j.reference is not None for j in jobs):
            pred, regions = self._draw_references(pred, windows, hole, jobs, video, mats, reference_px)
        alpha = self._feather(hole)
        # Inverse warp, batched over faces: each face's region of the frame, padded to a common size.
        h, w = frame.shape[:2]
        inv = np.linalg.inv(_h(mats))[:, :2]                                      # window -> frame
        # alpha (zeros padding) can be > 0 wherever the window coordinate lies in (-1, size)
        boxes = [_sample_box(_shift(a, -1.0), (size + 2, size + 2), (w, h)) for a in inv]
        bh = max(b[3] - b[1] for b in boxes)
        bw = max(b[2] - b[0] for b in boxes)
        roi_to_window = mats.copy()                                                # ROI pixel -> window
        roi_to_window[:, :, 2] += np.einsum("nij,nj->ni", mats[:, :, :2], np.array([b[:2] for b in boxes], np.float64))
        grid = _grid(theta_from_dst_to_src(roi_to_window, (size, size), (bw, bh)), len(jobs), (bh, bw), frame.device)
        p_roi = F.grid_sample(pred, grid, mode="bilinear", padding_mode="border", align_corners=False)
        a_roi = F.grid_sample(alpha, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        for i, (region, scale, (rx, ry)) in regions.items():
            # A reference drawn at its frame resolution: ROI pixel -> window -> that render's region.
            to_region = roi_to_window[i] * scale
            to_region[:, 2] -= (rx, ry)
            theta = theta_from_dst_to_src(to_region, (region.shape[2], region.shape[1]), (bw, bh))
            p_roi[i] = F.grid_sample(region[None], _grid(theta, 1, (bh, bw), frame.device), mode="bilinear",
                                     padding_mode="border", align_corners=False)[0]
        for i, (x0, y0, x1, y1) in enumerate(boxes):                  # in order: later faces over earlier
            a = a_roi[i, 0, :y1 - y0, :x1 - x0, None]
            p = p_roi[i, :, :y1 - y0, :x1 - x0].permute(1, 2, 0)
            roi = out[y0:y1, x0:x1]
            blended = torch.round(p * a + roi.float() * (1 - a)).clamp_(0, 255).to(torch.uint8)
            roi.copy_(torch.where(a > 0, blended, roi))
        return out


    def _draw_references(self, pred: torch.Tensor, windows: torch.Tensor, hole: torch.Tensor,
                         jobs: Sequence[InpaintJob], video: bool, mats: np.ndarray, reference_px: int | None):
        """The own-face path on the device path: each referenced face's window, hole and generated
        fill come down (one transfer of ~0.3 MB a face), the reference is rendered as on the CPU path
        (stream.reference: a mesh warp and relighting, no network) and goes back up: into its window,
        or, for a face larger than the window, as the region around the hole drawn at its frame
        resolution (blended from there). Returns (pred, {face: (region (3, h, w), scale, (x, y))})."""
        which = [i for i, j in enumerate(jobs) if j.reference is not None]
        idx = torch.as_tensor(which, device=pred.device)
        host = self.download(torch.cat([windows[idx], pred[idx], hole[idx]], 1).permute(0, 2, 3, 1).contiguous())
        size = self.window_size
        in_window, drawn, large = [], [], []
        for k, i in enumerate(which):
            window = np.clip(host[k, ..., 0:3] + 0.5, 0, 255).astype(np.uint8)
            generated = np.clip(host[k, ..., 3:6] + 0.5, 0, 255).astype(np.uint8)
            points = transform_points(jobs[i].landmarks_crop, window_matrix(size))
            r = render_size(mats[i], size, reference_px)
            if r == size:
                image, _ = jobs[i].reference.render(points, window, host[k, ..., 6], generated, smooth=video)
                in_window.append(i)
                drawn.append(image)
            else:
                image, _, origin = jobs[i].reference.render_region(points, window, host[k, ..., 6], generated, r,
                                                                   smooth=video)
                large.append((i, image, r / size, origin))
        uploaded = iter(self._upload_aux(drawn + [image for _, image, _, _ in large]))
        out = pred
        if in_window:
            out = pred.clone()
            out[torch.as_tensor(in_window, device=pred.device)] = torch.stack(
                [next(uploaded) for _ in in_window]).permute(0, 3, 1, 2)
        regions = {i: (next(uploaded).permute(2, 0, 1), scale, origin) for i, _, scale, origin in large}
        return out, regions


def _gaussian_replicate(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """cv2.GaussianBlur(x, (0, 0), sigma, borderType=BORDER_REPLICATE) of float images, per channel."""
    k = int(round(sigma * 8 + 1)) | 1                     # OpenCV's kernel size for float images
    g = torch.from_numpy(cv2.getGaussianKernel(k, sigma).astype(np.float32)[:, 0]).to(x.device)
    c, r = x.shape[1], k // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def match_generated_borders_torch(pred: torch.Tensor, windows: torch.Tensor, hole: torch.Tensor,
                                  classes: torch.Tensor, strength: float = GENERATED_BORDER_MATCH) -> torch.Tensor:
    """stream.compositing.match_generated_borders on the device, batched: (N, 3, S, S) float 0..255
    fills and windows, (N, 1, S, S) hole, (N, K, S, S) bool border classes
    (stream.alignment.border_classes: skin, background); returns the fills."""
    size = windows.shape[-1]
    band = max(2, round(SEAM_BAND_FRACTION * size))
    small = max(16, size // 4)
    sigma = max(1.0, SEAM_SIGMA_FRACTION * small)
    disc = torch.from_numpy(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1,) * 2).astype(np.float32))
    disc = disc.to(windows.device)[None, None]
    inside = (hole > 0.5).float()
    # Dilation (outside the window counts as empty) and erosion (as full: OpenCV's default borders).
    grown = F.conv2d(inside, disc, padding=band) > 0.5
    kept = F.conv2d(F.pad(inside, (band,) * 4, value=1.0), disc) > disc.sum() - 0.5
    inside_b = inside > 0.5

    def local_mean(where, image):
        shrink = lambda x: F.interpolate(x, size=(small, small), mode="area")
        w = _gaussian_replicate(shrink(where), sigma)
        return _gaussian_replicate(shrink(image * where), sigma) / w.clamp(min=1e-6), w

    field = torch.zeros((len(pred), 3, small, small), device=pred.device)
    for k in range(classes.shape[1]):
        region = classes[:, k:k + 1]
        outer, inner = (grown & ~inside_b & region).float(), (inside_b & ~kept & region).float()
        # A face whose ring of this kind is under 20 pixels is not matched there (as on the CPU).
        enough = ((outer.flatten(1).sum(1) >= 20) & (inner.flatten(1).sum(1) >= 20)).view(-1, 1, 1, 1)
        frame_mean, w_out = local_mean(outer, windows)
        inner_mean, w_in = local_mean(inner, pred)
        both = (w_out > 1e-3) & (w_in > 1e-3) & enough
        near = (w_in * 4).clamp(0, 1) * (w_out * 4).clamp(0, 1)
        field = field + (frame_mean - inner_mean).clamp(-SEAM_OFFSET_MAX, SEAM_OFFSET_MAX) * both * near
    offset = F.interpolate(field, size=(size, size), mode="bilinear", align_corners=False) * inside
    return (pred + strength * offset).clamp(0, 255)


def _shift(dst_to_src: np.ndarray, d: float) -> np.ndarray:
    """The 2x3 map whose destination grid starts at pixel (d, d) instead of (0, 0)."""
    m = dst_to_src.copy()
    m[:, 2] += d * m[:, :2].sum(-1)
    return m


# -- the stages on the device ----------------------------------------------------------------------

class DeviceFrames:
    """The device copy of the frame being processed, shared by the torch stages: uploaded on first
    use, reused by later steps, released by the Unmasker after every frame."""

    def __init__(self, gpu: TorchFrameReconstructor):
        self.gpu = gpu
        self._host: np.ndarray | None = None
        self._device: torch.Tensor | None = None

    def tensor(self, frame: np.ndarray) -> torch.Tensor:
        if self._host is not frame:
            self._device = self.gpu.upload(frame)
            self._host = frame
        return self._device

    def consumed(self) -> None:
        """The device copy was changed in place: it no longer holds the input frame."""
        self._host = None

    def release(self) -> None:
        self._host = self._device = None


class TorchAnalyser:
    """The analyser stage on the device; results come back as `FaceAnalysis`es (the mask smoothing
    and the `Face` fields are on the CPU)."""

    name = "model"
    backend = "torch"
    learned = True

    def __init__(self, gpu: TorchFrameReconstructor, frames: DeviceFrames):
        self.gpu, self.frames = gpu, frames

    def analyse(self, image: np.ndarray, faces) -> list[FaceAnalysis]:
        if not faces:
            return []
        probs, genders, lms = self.gpu.analyse(self.frames.tensor(image), [f.alignment for f in faces])
        n, s = probs.shape[:2]
        # One download of ~70 kB per face: what mask smoothing and the Face fields need on the CPU.
        host = self.gpu.download(torch.cat([probs.reshape(n, -1), genders[:, None], lms.reshape(n, -1)], 1))
        probs, genders, lms = host[:, :s * s].reshape(n, s, s), host[:, s * s], host[:, s * s + 1:].reshape(n, -1, 2)
        return [FaceAnalysis(probs[i].copy(), float(genders[i]), lms[i].copy()) for i in range(n)]

    def close(self) -> None:
        self.gpu.analyser = None


class TorchCompositor:
    """The compositor stage on the device: windows, holes, the inpainter (the reconstructor, here the
    device's generative network) and the blend, in place on the frame's device copy; the result stays
    there (`as_tensor`), comes back at once, or is a `PendingFrame` (`defer_download`)."""

    renders_references = True     # draws InpaintJob.reference (the own-face path; rendered on the CPU)

    def __init__(self, gpu: TorchFrameReconstructor, frames: DeviceFrames, defer_download: bool = False,
                 reference_px: int | None = REFERENCE_PX):
        self.gpu, self.frames = gpu, frames
        self.window_size = gpu.window_size
        # The own face's largest render (px): a large face is drawn at its frame resolution up to this
        # (stream.reference.render_size), as on the CPU path.
        self.reference_px = reference_px
        self.defer_download = defer_download
        self._download_stream = torch.cuda.Stream(gpu.device) if gpu.cuda and defer_download else None

    def composite(self, ctx: FrameContext, jobs: list[InpaintJob]):
        if not jobs:
            return (self.frames.tensor(ctx.image) if ctx.as_tensor else ctx.image.copy()), 0.0
        t = time.perf_counter()
        # In place: the upload belongs to this frame, no second device copy.
        dev = self.gpu.inpaint_and_blend(self.frames.tensor(ctx.image), jobs, inplace=True, video=ctx.video,
                                         reference_px=self.reference_px)
        self.frames.consumed()
        if ctx.as_tensor:
            out = dev
        elif self.defer_download:
            out = PendingFrame(dev, self._download_stream)
        else:
            out = self.gpu.download(dev)
        # Crop, nets, blend and the download together (they overlap on the device); with as_tensor
        # nothing waits for the device here, so this is the launch time only.
        return out, (time.perf_counter() - t) * 1e3

    def close(self) -> None:
        self.gpu.inpainter = None


class GpuUnmasker(Unmasker):
    """The `Unmasker` composed of the device stages: analysis, inpainting and blending run on `device`
    with torch, tracking too with `tracker="torch"` (stream.torch_tracking; "mediapipe" tracks on the CPU).

    Landmark and mask smoothing and the `Face` fields stay on the CPU as in `Unmasker`; the frame is
    uploaded once per `process` call and downloaded once (only when a face was redrawn; never with
    `process(..., as_tensor=True)`). `defer_download`: a redrawn frame's `Result.image` is a
    `PendingFrame` (call `.result()`) whose download overlaps the next frame's work; the Pipeline
    resolves these in its output thread. `device="cpu"` runs the same torch code in fp32 (for tests).
    Other keyword arguments are `Unmasker`'s (smoothing, max_faces, mode ...).
    """

    def __init__(self, device: str = "cuda", precision: str | None = None, preset: str = "fast",
                 weights_dir: str | Path | None = None, tracker: str = "torch", cuda_graphs: bool = True,
                 defer_download: bool = False, **kwargs):
        method = kwargs.pop("method", "model")
        if method not in ("model", "auto"):
            raise ValueError(f"GpuUnmasker runs the models; method {method!r} is the plain Unmasker's")
        if tracker not in ("torch", "mediapipe"):
            raise ValueError(f"unknown tracker {tracker!r}: use 'torch' or 'mediapipe'")
        for unused in ("backend", "threads"):       # torch on `device` is the backend
            kwargs.pop(unused, None)
        dilate_px = kwargs.pop("dilate_px", HOLE_DILATE_PX)
        feather_px = kwargs.pop("feather_px", 3)
        self.gpu = TorchFrameReconstructor(device, precision, preset, weights_dir, dilate_px=dilate_px,
                                           feather_px=feather_px, cuda_graphs=cuda_graphs)
        self.gpu.warm_up(kwargs.get("max_faces", 1))
        self.cuda_graphs = cuda_graphs
        self.defer_download = defer_download
        self.tracker_kind = tracker
        frames = DeviceFrames(self.gpu)
        max_faces = kwargs.get("max_faces", 1)

        def make_tracker(mode):
            if tracker == "mediapipe":
                return FaceTracker(mode, max_faces=max_faces)
            from stream.torch_tracking import TorchFaceTracker

            return TorchFaceTracker(mode, max_faces=max_faces, device=str(self.gpu.device), precision=precision,
                                    upload=frames.tensor, cuda_graphs=cuda_graphs)

        super().__init__(analyser=TorchAnalyser(self.gpu, frames),
                         compositor=TorchCompositor(self.gpu, frames, defer_download),
                         make_tracker=make_tracker, frames=frames, weights_dir=weights_dir, **kwargs)
