"""Face tracking on the GPU: mediapipe's own detector and face mesh, run by torch.

    from stream.torch_tracking import TorchFaceTracker
    tracker = TorchFaceTracker(RunningMode.VIDEO, device="cuda")
    faces = tracker.process(frame_bgr)            # same TrackedFace contract as FaceTracker

`FaceTracker` runs mediapipe's graphs on the CPU: about 5 ms a frame on two cores, which caps a GPU
pipeline far below what its models allow. This tracker runs the very same networks (the full-range
BlazeFace detector and the 468-point face mesh, read from the .tflite files in the mediapipe wheel by
`models.tflite_graph`) with torch on the frame already on the device, and reproduces the graph
logic around them that mediapipe's face mesh solution uses:

* detection: the frame letterboxed to 192x192 in [-1, 1]; 2304 fixed-size anchors on a 48x48 grid
  (stride 4); boxes and six keypoints decoded relative to the anchors; sigmoid scores; weighted
  non-maximum suppression (IoU 0.3).
* the mesh ROI from a detection: the box, square on its long side, x1.5, rotated so the eye
  keypoints are level; from a previous frame's landmarks (tracking): the landmarks' box, the same
  way, with the eye corners 33 and 263 giving the angle.
* the mesh: the rotated ROI sampled to 192x192 in [0, 1] (replicated borders); the landmarks
  projected back through the ROI; the face flag's sigmoid as the tracking confidence (0.5).

The re-detection policy, tiles, track ids and keypoint fits are FaceTracker's (this is a subclass).
Landmark coordinates follow mediapipe (x_norm * width: pixel i spans [i, i + 1)).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.face_nets import FaceNet, load_face_net, mediapipe_model_path
from models.spec import MEDIAPIPE_NETS
from stream.tracking import (Detection, FaceCandidate, FaceTracker, RunningMode, contains_centre, detection_regions,
                            iou, landmarks_box, merge_detections)

__all__ = ["TorchFaceTracker", "FaceDetectorNet", "FaceMeshNet", "FaceNet", "load_face_net", "mediapipe_model_path"]

DETECTOR_FILE = MEDIAPIPE_NETS["face_detector"]["file"]
MESH_FILE = MEDIAPIPE_NETS["face_mesh"]["file"]
DETECTOR_SIZE = MEDIAPIPE_NETS["face_detector"]["input_size"]
MESH_SIZE = MEDIAPIPE_NETS["face_mesh"]["input_size"]
ROI_SCALE = 1.5
NMS_IOU = 0.3
PRESENCE_THRESHOLD = 0.5
EYE_CORNERS = (33, 263)            # image-left, image-right eye outer corners on an upright face


def _full_range_anchors() -> np.ndarray:
    """(2304, 2) anchor centres, normalised: one fixed-size anchor per cell of the 48x48 grid."""
    cells = DETECTOR_SIZE // 4
    ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
    return np.stack([(xs.ravel() + 0.5) / cells, (ys.ravel() + 0.5) / cells], 1).astype(np.float32)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, threshold: float = NMS_IOU):
    """mediapipe's WEIGHTED non-maximum suppression: each kept detection is the score-weighted mean of
    the candidates overlapping the best remaining one by more than `threshold` IoU.

    boxes (N, 4) x0 y0 x1 y1, keypoints (N, K, 2), scores (N,). Returns lists of the merged values."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        overlaps = np.array([iou(boxes[i], boxes[j]) if remaining[j] else -1.0 for j in range(len(scores))])
        group = remaining & (overlaps > threshold)
        group[i] = True
        w = scores[group][:, None]
        out.append(((boxes[group] * w).sum(0) / w.sum(), (keypoints[group] * w[:, :, None]).sum(0) / w.sum(),
                    float(scores[i])))
        remaining &= ~group
    return out


class _TfliteNet:
    """A mediapipe network on `device` (fp16 on CUDA unless told otherwise), as a CUDA graph there."""

    name = ""

    def __init__(self, device: str = "cpu", precision: str | None = None, model_dir=None,
                 cuda_graphs: bool = True):
        net = load_face_net(self.name, model_dir)
        self.device = torch.device(device)
        precision = precision or ("fp16" if self.device.type == "cuda" else "fp32")
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.net = net.to(self.device, self.dtype)
        if self.device.type == "cuda" and cuda_graphs:
            from engines.cuda_graph import CudaGraphed
            self.net = CudaGraphed(self.net)     # ~70 layers of tiny kernels: one graph launch


class FaceDetectorNet(_TfliteNet):
    """Full-range BlazeFace: (N, 3, 192, 192) RGB in [-1, 1] -> boxes, keypoints and scores."""

    name = "face_detector"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.anchors = torch.from_numpy(_full_range_anchors()).to(self.device)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor):
        """Decoded, in normalised letterbox coordinates: boxes (N, A, 4) x0 y0 x1 y1, keypoints (N, A, 6, 2),
        scores (N, A); float32."""
        regressors, logits = self.net(x.to(self.dtype))
        raw = regressors.float() / DETECTOR_SIZE          # (N, 2304, 16): x y w h, then 6 keypoints
        centre = raw[..., :2] + self.anchors
        half = raw[..., 2:4] / 2
        boxes = torch.cat([centre - half, centre + half], -1)
        keypoints = raw[..., 4:].reshape(*raw.shape[:2], 6, 2) + self.anchors[:, None]
        return boxes, keypoints, torch.sigmoid(logits.float()[..., 0].clamp(-100, 100))


class FaceMeshNet(_TfliteNet):
    """The 468-point face mesh: (N, 3, 192, 192) RGB in [0, 1] -> landmarks (N, 468, 3) in crop pixels
    and face presence (N,)."""

    name = "face_mesh"

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor):
        landmarks, face_logit = self.net(x.to(self.dtype))
        return landmarks.float(), torch.sigmoid(face_logit.float().reshape(-1))


def roi_from_points(points: np.ndarray, start: np.ndarray, end: np.ndarray, scale: float = ROI_SCALE):
    """mediapipe's rect: the points' box, rotated so start->end is level, square on its long side,
    scaled. Returns (centre (2,), side, angle)."""
    lo, hi = points.min(0), points.max(0)
    centre = (lo + hi) / 2
    angle = float(np.arctan2(end[1] - start[1], end[0] - start[0]))
    side = float(max(hi - lo)) * scale
    return centre, side, angle


def roi_theta(centre, side: float, angle: float, frame_wh: tuple[int, int]) -> np.ndarray:
    """affine_grid theta (align_corners=False) sampling the rotated square ROI from the frame."""
    w, h = frame_wh
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[side * c / w, -side * s / w, 2 * centre[0] / w - 1],
                     [side * s / h, side * c / h, 2 * centre[1] / h - 1]], np.float32)


def roi_to_frame(points_crop: np.ndarray, centre, side: float, angle: float, crop_size: int) -> np.ndarray:
    """Crop-pixel (edge convention) coordinates -> frame coordinates through the rotated ROI."""
    n = points_crop[..., :2] / crop_size - 0.5
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return (n @ rot.T) * side + np.asarray(centre)


class TorchFaceTracker(FaceTracker):
    """`FaceTracker` with the detector and mesh as torch modules on `device`.

    `upload(frame_bgr) -> (H, W, 3) uint8 device tensor` lets a caller that already holds the
    frame on the device (GpuUnmasker) share its single upload.
    """

    def __init__(self, mode: RunningMode = RunningMode.VIDEO, max_faces: int = 1,
                 min_detection_confidence: float = 0.5, redetect_every: int = 10, max_missed: int = 5,
                 device: str = "cuda", precision: str | None = None, model_dir=None, upload=None,
                 refine_steps: int = 2, cuda_graphs: bool = True):
        self.device = torch.device(device)
        self.refine_steps = refine_steps
        self.cuda_graphs = cuda_graphs
        self._precision = precision
        self._model_dir = model_dir
        self.upload = upload or (lambda frame: torch.from_numpy(np.ascontiguousarray(frame)).to(self.device))
        self.min_detection_confidence = min_detection_confidence
        super().__init__(mode, max_faces, min_detection_confidence, redetect_every, max_missed)

    def _build(self, mode, max_faces, min_detection_confidence):
        self.detector = FaceDetectorNet(self.device, self._precision, self._model_dir, self.cuda_graphs)
        self.mesh = FaceMeshNet(self.device, self._precision, self._model_dir, self.cuda_graphs)
        if self.device.type == "cuda":
            # Capture the graphs now, not on the frame that first needs them: the mesh for 1..max_faces
            # ROIs, the detector for a frame alone (1) and a landscape / portrait frame with tiles (4).
            with torch.inference_mode():
                for n in range(1, max_faces + 1):
                    self.mesh(torch.zeros(n, 3, MESH_SIZE, MESH_SIZE, device=self.device))
                for n in (1, 4):
                    self.detector(torch.zeros(n, 3, DETECTOR_SIZE, DETECTOR_SIZE, device=self.device))

    def close(self) -> None:
        self.detector = self.mesh = None

    # -- the frame on the device ---------------------------------------------------------------------
    def _prepare(self, image_bgr: np.ndarray) -> torch.Tensor:
        """(1, 3, H, W) float32 RGB in [0, 255] on the device."""
        frame = self.upload(image_bgr)
        return frame.permute(2, 0, 1)[None].flip(1).float()

    def _sample(self, image: torch.Tensor, thetas: np.ndarray, size: int, padding: str) -> torch.Tensor:
        th = torch.from_numpy(np.ascontiguousarray(thetas, np.float32)).to(self.device, non_blocking=True)
        grid = F.affine_grid(th, (len(thetas), 3, size, size), align_corners=False)
        return F.grid_sample(image.expand(len(thetas), -1, -1, -1), grid, mode="bilinear",
                             padding_mode=padding, align_corners=False)

    # -- the mesh ---------------------------------------------------------------------------------
    def mesh_in_rois(self, image: torch.Tensor, rois) -> list[np.ndarray | None]:
        """The mesh in each (centre, side, angle) ROI: (468, 2) frame landmarks, or None where the face
        flag says no face."""
        if not rois:
            return []
        h, w = image.shape[-2:]
        thetas = np.stack([roi_theta(c, s, a, (w, h)) for c, s, a in rois])
        crops = self._sample(image, thetas, MESH_SIZE, "border") * (1.0 / 255.0)
        landmarks, presence = self.mesh(crops)
        host = torch.cat([landmarks.reshape(len(rois), -1), presence[:, None]], 1).cpu().numpy()
        out = []
        for (c, s, a), row in zip(rois, host):
            if row[-1] < PRESENCE_THRESHOLD:
                out.append(None)
            else:
                out.append(roi_to_frame(row[:-1].reshape(468, 3), c, s, a, MESH_SIZE).astype(np.float32))
        return out

    @staticmethod
    def _landmark_roi(landmarks: np.ndarray):
        """mediapipe's tracking ROI: from the landmarks, levelled on the outer eye corners."""
        return roi_from_points(landmarks, landmarks[EYE_CORNERS[0]], landmarks[EYE_CORNERS[1]])

    def _video_meshes(self, image, shape):
        """The mesh in every tracked face's ROI in one batch (`_run_mesh`), then a refind of lost ones."""
        faces = self._frame_meshes(image, shape)
        self._refind_lost(image, shape, faces)
        return faces

    def _refind_lost(self, rgb, shape, faces: list[FaceCandidate]) -> None:
        """A face the batched ROI mesh lost: look again where it was, as masks often break the mesh's
        tracking (appends to `faces`)."""
        for t in self._tracks:
            if len(faces) >= self.max_faces or t.missed > 1:
                continue
            cx, cy = (t.box[0] + t.box[2]) / 2, (t.box[1] + t.box[3]) / 2
            if any(contains_centre(f.box, (cx, cy)) for f in faces):
                continue
            x0, y0, x1, y1 = t.box
            # The landmark box is the whole face; the crop helper expects a detector-sized box.
            inner = (x0 + (x1 - x0) * 0.15, y0 + (y1 - y0) * 0.15, x1 - (x1 - x0) * 0.15, y1 - (y1 - y0) * 0.15)
            lm = self._mesh_on_crop(rgb, inner)
            if lm is not None:
                faces.append(FaceCandidate(lm, landmarks_box(lm, shape), "mesh", 1.0))
                self.stats["roi_mesh_faces"] += 1

    def _run_mesh(self, image) -> list[np.ndarray]:
        """Tracking mode: the mesh where each face seen last frame was (its ROI from its landmarks)."""
        if self.mode is not RunningMode.VIDEO:
            return []
        rois = [self._landmark_roi(t.landmarks) for t in self._tracks if t.missed == 0]
        return [lm for lm in self.mesh_in_rois(image, rois[:self.max_faces]) if lm is not None]

    def _mesh_on_crop(self, image, box, keypoints=None) -> np.ndarray | None:
        x0, y0, x1, y1 = box
        corners = np.array([[x0, y0], [x1, y1]], np.float64)
        if keypoints is not None:                  # a detection: mediapipe's detection ROI
            roi = roi_from_points(corners, keypoints[0], keypoints[1])
        else:                                      # FaceTracker's inner box (0.7 of a landmark box): level,
            roi = roi_from_points(corners, np.zeros(2), np.array([1.0, 0.0]), ROI_SCALE / 0.7)  # 1.5x that box
        landmarks = self.mesh_in_rois(image, [roi])[0]
        # A detection box is a coarse ROI, and under a mask the mesh's guess moves with its ROI. Re-run
        # it from its own landmarks, as the next tracked frame would (on the masked test face this
        # halves the upper-face error against the unmasked truth).
        for _ in range(self.refine_steps):
            if landmarks is None:
                break
            refined = self.mesh_in_rois(image, [self._landmark_roi(landmarks)])[0]
            landmarks = refined if refined is not None else landmarks
        return landmarks

    # -- the detector -------------------------------------------------------------------------------
    def detect(self, image: torch.Tensor, regions) -> list[Detection]:
        """Full-range BlazeFace in each (x0, y0, x1, y1) region (letterboxed; one batch); merged
        `Detection`s as FaceTracker's, frame coordinates."""
        h, w = image.shape[-2:]
        thetas, frames = [], []
        for x0, y0, x1, y1 in regions:
            side = max(x1 - x0, y1 - y0)
            centre = ((x0 + x1) / 2, (y0 + y1) / 2)
            thetas.append(roi_theta(centre, side, 0.0, (w, h)))
            frames.append((np.array(centre, np.float64), side))
        x = self._sample(image, np.stack(thetas), DETECTOR_SIZE, "zeros") * (2.0 / 255.0) - 1.0
        boxes, keypoints, scores = self.detector(x)
        found = []
        keep = scores >= self.min_detection_confidence
        if bool(keep.any()):
            idx = keep.nonzero().cpu().numpy()
            b, k, s = boxes[keep].cpu().numpy(), keypoints[keep].cpu().numpy(), scores[keep].cpu().numpy()
            for r in range(len(regions)):
                sel = idx[:, 0] == r
                if not sel.any():
                    continue
                centre, side = frames[r]
                for box, kp, score in weighted_nms(b[sel], k[sel], s[sel]):
                    box = (box.reshape(2, 2) - 0.5) * side + centre
                    kp = ((kp - 0.5) * side + centre).astype(np.float32)
                    found.append(Detection(tuple(int(v) for v in np.round(box.ravel())), kp, score))
        return merge_detections(found)

    def _run_detector(self, image):
        """FaceTracker's regions (the frame, square tiles of wide or tall frames), in one batch."""
        self.stats["detector_runs"] += 1
        h, w = image.shape[-2:]
        return self.detect(image, detection_regions(h, w))
