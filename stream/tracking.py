"""Face tracking: mediapipe face mesh, a full-range detector fallback, stable track ids.

Running modes (as in MediaPipe Tasks):

* ``IMAGE``: every call is independent (still photos): mesh in still-image mode,
  then the detector for faces the mesh missed.
* ``VIDEO``: calls carry increasing timestamps. Each track has a mesh graph of its
  own in tracking mode (`TrackMesh`, on a crop that follows the track), whose next
  ROI comes from the previous landmarks and whose detector runs only when it has
  lost its face; with nothing tracked, one whole-frame graph. Masks make the mesh
  lose faces, so when it returns fewer faces than we track (and every
  `redetect_every` frames while below `max_faces`) a detector looks for them:
  by default YuNet-n (stream.detection:
  multi-scale, faces down to ~20 px; around the lost tracks, plus one round-robin pass of
  its full-frame scan on the scheduled frames), or mediapipe's full-range BlazeFace
  (`detector="blazeface"`, the previous behaviour); a
  detected face the mesh missed keeps its track, with the previous landmarks
  moved to the new box (or, for a new face, the canonical face fitted to the
  detector's keypoints). The analyser then re-estimates those landmarks.

Each tracked face carries a `track_id` that stays stable while the face is
visible (matched on motion-predicted boxes, stream.association, so crossing
faces keep their ids); tracks missing for `max_missed` frames are dropped and
their smoothing state with them.
"""
from __future__ import annotations

import contextlib
import enum
import itertools
import os
import sys
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from stream.alignment import LEFT_EYE, NOSE_TIP, RIGHT_EYE, fit_similarity, load_canonical_shape, transform_points
from stream.association import assign, predict_box, update_velocity


# mediapipe's native code logs setup chatter to stderr; keep warnings and errors only.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence native (C++) writes to stderr, e.g. TFLite's 'Created delegate' INFO line."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


class RunningMode(enum.Enum):
    IMAGE = "image"
    VIDEO = "video"


Box = tuple[int, int, int, int]     # x0, y0, x1, y1 frame pixels


class Detection(NamedTuple):
    """A face the detector found (frame coordinates)."""

    box: Box
    keypoints: np.ndarray           # (6, 2) float32: eyes, nose tip, mouth centre, ear tragions
    score: float


class FaceCandidate(NamedTuple):
    """A face found in this frame, before it is matched to a track."""

    landmarks: np.ndarray           # (468, 2) float32 frame pixels
    box: Box
    source: str                     # "mesh" or "detector"
    score: float


def contains_centre(box: Box, point) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


@dataclass
class TrackedFace:
    track_id: int
    landmarks: np.ndarray           # (468, 2) float32, frame pixels
    box: tuple[int, int, int, int]  # x0, y0, x1, y1
    source: str                     # "mesh" or "detector" (landmarks are a coarse fit)
    score: float = 1.0
    is_new: bool = False


@dataclass
class _Track:
    track_id: int
    landmarks: np.ndarray
    box: tuple[int, int, int, int]
    missed: int = 0
    age: int = 0
    extra: dict = field(default_factory=dict)


def landmarks_box(lm: np.ndarray, shape) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x0, y0 = np.floor(lm.min(0)).astype(int)
    x1, y1 = np.ceil(lm.max(0)).astype(int)
    return (int(np.clip(x0, 0, w)), int(np.clip(y0, 0, h)), int(np.clip(x1, 0, w)), int(np.clip(y1, 0, h)))


def iou(a, b) -> float:
    ix0, iy0, ix1, iy1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, ix1 - ix0) * max(0, iy1 - iy0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detection_regions(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """Where the detector looks: the whole frame, then for wide or tall frames overlapping square
    tiles (the frame's short side). The detector sees a 192 px square: in a wide frame a masked face
    shrinks below what it can find, so the tiles give it the face at a larger scale."""
    regions = [(0, 0, w, h)]
    side = min(h, w)
    if max(h, w) > 1.2 * side:
        n = int(np.ceil(max(h, w) / side)) + 1
        for k in range(n):
            off = int(round(k * (max(h, w) - side) / (n - 1)))
            regions.append((off, 0, off + side, h) if w > h else (0, off, w, off + side))
    return regions


def merge_detections(found: list[Detection]) -> list[Detection]:
    """Detections from overlapping regions: the best of each overlapping group (IoU >= 0.3), best first."""
    kept = []
    for d in sorted(found, key=lambda d: -d.score):
        if all(iou(d.box, k.box) < 0.3 for k in kept):
            kept.append(d)
    return kept


# mediapipe's face flag under a mask often falls below its default 0.5: the mesh then drops the face
# and FaceTracker re-finds it every frame with a still-image mesh on a crop (detector + mesh, ~2x the
# cost). At 0.2 the mesh keeps tracking masked faces (4 masked faces at 720p: 48 -> 32 re-finds in
# 70 frames, tracker CPU 57 -> 46 ms a frame; the same faces found); a face that leaves still drops.
TRACKING_CONFIDENCE = 0.2


def _crop_landmarks(result, size: int, frame_to_crop: np.ndarray) -> np.ndarray | None:
    """The first face of a mesh result on a `size`-px square crop, in frame pixels; None without one."""
    if not result.multi_face_landmarks:
        return None
    lm = np.array([(p.x * size, p.y * size) for p in result.multi_face_landmarks[0].landmark], np.float32)
    return transform_points(lm, cv2.invertAffineTransform(frame_to_crop))


class TrackMesh:
    """mediapipe's face mesh in tracking mode for one track, on a crop that follows it.

    The whole-frame mesh, asked for up to `max_faces` faces, runs its own face detector on every frame
    where it tracks fewer (~3 of its ~6 ms for one face at 720p), and its detector cannot find most
    masked faces anyway: new faces come from the YuNet scan. One graph per track, each asked for one
    face, runs the landmark network alone while it holds its face (~2.5 ms). Its crop is `SIZE` px,
    `SPAN` times the face, centred where the track is predicted to be, so the graph's own ROI (1.5x
    the last landmarks, in crop coordinates) lands on the face as it moves. The crop's scale is kept
    until the face's size drifts by `RESCALE` (a new scale resizes that ROI in frame pixels)."""

    SIZE = 256
    SPAN = 2.0
    RESCALE = 1.25

    def __init__(self, min_detection_confidence: float):
        import mediapipe as mp
        with quiet_native_stderr():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=1, refine_landmarks=False,
                min_detection_confidence=min_detection_confidence, min_tracking_confidence=TRACKING_CONFIDENCE)
        self._scale = None

    def find(self, rgb: np.ndarray, box) -> np.ndarray | None:
        """(468, 2) frame landmarks of the face at `box` (x0, y0, x1, y1, frame px), or None. When the
        graph's ROI has lost the face, the graph runs its detector on the same crop at once."""
        side = max(box[2] - box[0], box[3] - box[1], 8)
        want = self.SIZE / (self.SPAN * side)
        if self._scale is None or abs(np.log(want / self._scale)) > np.log(self.RESCALE):
            self._scale = want
        s = self._scale
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        m = np.array([[s, 0, self.SIZE / 2 - s * cx], [0, s, self.SIZE / 2 - s * cy]])
        crop = cv2.warpAffine(rgb, m, (self.SIZE, self.SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        lm = _crop_landmarks(self._mesh.process(crop), self.SIZE, m)
        return lm if lm is not None else _crop_landmarks(self._mesh.process(crop), self.SIZE, m)

    def reset(self) -> None:
        """Forget the face (the graph restarts): for reuse by another track."""
        self._mesh.reset()
        self._scale = None

    def close(self) -> None:
        self._mesh.close()


class FaceTracker:
    def __init__(self, mode: RunningMode = RunningMode.VIDEO, max_faces: int = 1,
                 min_detection_confidence: float = 0.5, redetect_every: int = 4,
                 max_missed: int = 5, detector: str = "yunet"):
        if detector not in ("yunet", "blazeface"):
            raise ValueError(f"unknown detector {detector!r}: use 'yunet' or 'blazeface'")
        self.mode = mode
        self.max_faces = max_faces
        self.redetect_every = redetect_every
        self.max_missed = max_missed
        self.detector_kind = detector
        self._crop_mesh = None
        self._detector = self._yunet = None
        self._build(mode, max_faces, min_detection_confidence)
        self._canonical = load_canonical_shape()
        self._tracks: list[_Track] = []
        self._track_meshes: dict[int, TrackMesh] = {}     # VIDEO: each live track's own mesh graph
        self._spare_meshes: list[TrackMesh] = []          # graphs of dropped tracks, reset for reuse
        self._min_detection_confidence = min_detection_confidence
        self._ids = itertools.count()
        self._frame = 0
        self.stats = {"mesh_faces": 0, "roi_mesh_faces": 0, "crop_mesh_faces": 0, "detector_faces": 0,
                      "detector_runs": 0, "lost_tracks": 0}

    def _build(self, mode, max_faces, min_detection_confidence):
        import mediapipe as mp

        with quiet_native_stderr():
            self._build_graphs(mp, mode, max_faces, min_detection_confidence)
            # Run both graphs once so their native start-up logging happens here.
            blank = np.zeros((64, 64, 3), np.uint8)
            if self._detector is not None:
                self._detector.process(blank)
            warm = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1)
            warm.process(blank)
            warm.close()
            self._mesh.process(blank)

    def _build_graphs(self, mp, mode, max_faces, min_detection_confidence):
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=mode is RunningMode.IMAGE, max_num_faces=max_faces,
            refine_landmarks=False, min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=TRACKING_CONFIDENCE)
        if self.detector_kind == "yunet":
            from stream.detection import ScanSchedule, YuNetDetector
            self._yunet = YuNetDetector(score_threshold=min_detection_confidence)
            self._scan = ScanSchedule(self._yunet)
            return
        # Full-range model: finds small and partly covered faces the mesh's
        # short-range detector misses.
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_detection_confidence)

    def close(self) -> None:
        self._mesh.close()
        if self._detector is not None:
            self._detector.close()
        if self._crop_mesh is not None:
            self._crop_mesh.close()
        for mesh in [*self._track_meshes.values(), *self._spare_meshes]:
            mesh.close()
        self._track_meshes, self._spare_meshes = {}, []

    def reset(self) -> None:
        for track_id in list(self._track_meshes):
            self._release_mesh(track_id)
        self._tracks = []
        self._frame = 0

    def _mesh_for(self, track_id: int) -> TrackMesh:
        mesh = self._track_meshes.get(track_id)
        if mesh is None:
            mesh = self._spare_meshes.pop() if self._spare_meshes else TrackMesh(self._min_detection_confidence)
            self._track_meshes[track_id] = mesh
        return mesh

    def _release_mesh(self, track_id: int) -> None:
        mesh = self._track_meshes.pop(track_id, None)
        if mesh is None:
            return
        if len(self._spare_meshes) < self.max_faces:
            mesh.reset()
            self._spare_meshes.append(mesh)
        else:
            mesh.close()

    # -- detection helpers -----------------------------------------------------
    def _run_mesh(self, rgb) -> list[np.ndarray]:
        res = self._mesh.process(rgb)
        if not res.multi_face_landmarks:
            return []
        h, w = rgb.shape[:2]
        return [np.array([(p.x * w, p.y * h) for p in f.landmark], np.float32)
                for f in res.multi_face_landmarks]

    def _detect_in(self, rgb, x0: int, y0: int):
        res = self._detector.process(np.ascontiguousarray(rgb))
        h, w = rgb.shape[:2]
        out = []
        for d in res.detections or []:
            bb = d.location_data.relative_bounding_box
            box = (int(bb.xmin * w) + x0, int(bb.ymin * h) + y0, int((bb.xmin + bb.width) * w) + x0,
                   int((bb.ymin + bb.height) * h) + y0)
            kp = np.array([(k.x * w + x0, k.y * h + y0) for k in d.location_data.relative_keypoints],
                          np.float32)
            out.append(Detection(box, kp, float(d.score[0])))
        return out

    def _run_detector(self, rgb) -> list[Detection]:
        """Full-range BlazeFace on the frame, then on overlapping square tiles of it (detection_regions)."""
        self.stats["detector_runs"] += 1
        found = []
        for x0, y0, x1, y1 in detection_regions(*rgb.shape[:2]):
            found += self._detect_in(rgb[y0:y1, x0:x1], x0, y0)
        return merge_detections(found)

    def _find_faces(self, rgb, faces: list[FaceCandidate], periodic: bool) -> list[Detection]:
        """Detections (box, keypoints, score) for the frame. BlazeFace (and the torch tracker): the
        full-frame detector. YuNet: every scan pass on still images; in video, around the tracks no
        face covers now (at their predicted boxes) and, on scheduled frames, the next scan pass."""
        if self._yunet is None:
            return self._run_detector(rgb)
        self.stats["detector_runs"] += 1
        if self.mode is not RunningMode.VIDEO:
            found = self._yunet.detect(rgb, rgb=True)
        else:
            from stream.detection import non_max_suppression
            lost = [predict_box(t.box, t.extra.get("velocity", (0.0, 0.0)), t.missed + 1) for t in self._tracks
                    if not any(contains_centre(f.box, ((t.box[0] + t.box[2]) / 2, (t.box[1] + t.box[3]) / 2))
                               for f in faces)]
            found = self._yunet.detect_near(rgb, lost, rgb=True) if lost else []
            if periodic:
                region, scale = self._scan.next(*rgb.shape[:2])
                found = non_max_suppression(found + self._yunet.run_pass(rgb, region, scale, rgb=True))
        return [Detection(d.box, d.eyes_nose_mouth, d.score) for d in found]

    def _mesh_on_crop(self, rgb, box, keypoints=None) -> np.ndarray | None:
        """The face mesh on an upscaled crop around a detection (found faces get real landmarks).

        `keypoints` (the detector's, when there are some) are used by trackers that crop rotated ROIs."""
        if self._crop_mesh is None:
            import mediapipe as mp
            with quiet_native_stderr():
                self._crop_mesh = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=True, max_num_faces=1, min_detection_confidence=0.3)
        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half = 1.3 * max(x1 - x0, y1 - y0)
        size = 256
        s = size / (2 * half)
        m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]])
        crop = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return _crop_landmarks(self._crop_mesh.process(crop), size, m)

    @staticmethod
    def _fit_to_keypoints(shape: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """Move a 468-point face shape onto BlazeFace's eyes, nose tip and mouth centre."""
        eyes = keypoints[:2][np.argsort(keypoints[:2, 0])]       # image-left eye first
        dst = np.vstack([eyes, keypoints[2:4]])
        src = np.vstack([shape[LEFT_EYE].mean(0), shape[RIGHT_EYE].mean(0), shape[NOSE_TIP],
                         shape[[13, 14]].mean(0)])
        return transform_points(shape, fit_similarity(src, dst))

    # -- main entry --------------------------------------------------------------
    def _prepare(self, image_bgr: np.ndarray):
        """The image the helpers read (here RGB numpy; a device tensor for the torch tracker)."""
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        rgb.flags.writeable = False
        return rgb

    def _frame_meshes(self, rgb, shape) -> list[FaceCandidate]:
        """The whole-frame mesh's faces."""
        faces = [FaceCandidate(lm, landmarks_box(lm, shape), "mesh", 1.0) for lm in self._run_mesh(rgb)]
        self.stats["mesh_faces"] += len(faces)
        return faces

    def _video_meshes(self, rgb, shape) -> list[FaceCandidate]:
        """VIDEO: each track seen in the last two frames meshed by its own graph (TrackMesh) where it is
        predicted to be; with nothing tracked, the whole-frame mesh (its detector finds large faces)."""
        live = sorted((t for t in self._tracks if t.missed <= 1), key=lambda t: (t.missed, -t.age))
        if not live:
            return self._frame_meshes(rgb, shape)
        faces = []
        for t in live:
            if len(faces) >= self.max_faces:
                break
            box = predict_box(t.box, t.extra.get("velocity", (0.0, 0.0)), t.missed + 1)
            if any(contains_centre(f.box, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)) for f in faces):
                continue    # two tracks on one face: the older keeps it
            lm = self._mesh_for(t.track_id).find(rgb, box)
            if lm is not None:
                faces.append(FaceCandidate(lm, landmarks_box(lm, shape), "mesh", 1.0))
        self.stats["mesh_faces"] += len(faces)
        return faces

    def process(self, image_bgr: np.ndarray) -> list[TrackedFace]:
        rgb = self._prepare(image_bgr)
        shape = image_bgr.shape
        video = self.mode is RunningMode.VIDEO
        faces = self._video_meshes(rgb, shape) if video else self._frame_meshes(rgb, shape)
        missing_tracked = video and len(faces) < len([t for t in self._tracks if t.missed == 0])
        # YuNet's scan runs one pass per scheduled frame, and every frame while nothing is tracked or
        # while each pass finds a new face (a crowd coming into view: ScanSchedule.eager).
        scan = self._scan if self._yunet is not None else None
        every = self.redetect_every * (scan.backoff if scan is not None else 1)
        periodic = video and (self._frame % every == 0 or (scan is not None and (not self._tracks or scan.eager)))
        found_before = len(faces)
        # Re-detection policy (video): when a tracked face went missing this
        # frame, and every `redetect_every` frames while below max_faces (new
        # faces; the mesh's own detector already looks every frame for large ones).
        if len(faces) < self.max_faces and (not video or missing_tracked or periodic):
            for box, kp, score in self._find_faces(rgb, faces, periodic):
                centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
                if len(faces) >= self.max_faces or any(contains_centre(f.box, centre) for f in faces):
                    continue   # already found by the mesh
                lm = self._mesh_on_crop(rgb, box, kp)
                source = "mesh"
                if lm is None:
                    source = "detector"
                    prev = max(self._tracks, key=lambda t: iou(t.box, box), default=None) if video else None
                    if prev is not None and iou(prev.box, box) > 0.1:
                        # Keep the track's own face shape, moved onto the detection.
                        lm = self._fit_to_keypoints(prev.landmarks, kp)
                    else:
                        lm = self._fit_to_keypoints(self._canonical, kp)
                    self.stats["detector_faces"] += 1
                else:
                    self.stats["crop_mesh_faces"] += 1
                faces.append(FaceCandidate(lm, landmarks_box(lm, shape), source, score))
        self._frame += 1
        if not video:
            return [TrackedFace(i, f.landmarks, f.box, f.source, f.score, True) for i, f in enumerate(faces)]
        out = self._associate(faces)
        if periodic and scan is not None:
            scan.record(found=len(faces) > found_before or missing_tracked, new_face=any(f.is_new for f in out))
        return out

    def _associate(self, faces: list[FaceCandidate]) -> list[TrackedFace]:
        # One-to-one on where each track is predicted to be now (survives faces crossing).
        predicted = [predict_box(t.box, t.extra.get("velocity", (0.0, 0.0)), t.missed + 1) for t in self._tracks]
        pairs = assign(predicted, [f.box for f in faces])
        used_t, used_f, out = set(), set(), []
        n_before = len(self._tracks)
        for ti, fi in pairs:
            used_t.add(ti)
            used_f.add(fi)
            t = self._tracks[ti]
            f = faces[fi]
            t.extra["velocity"] = update_velocity(t.extra.get("velocity", (0.0, 0.0)), t.box, f.box, t.missed + 1)
            t.landmarks, t.box, t.missed = f.landmarks, f.box, 0
            t.age += 1
            out.append(TrackedFace(t.track_id, t.landmarks, t.box, f.source, f.score, False))
        for fi, f in enumerate(faces):
            if fi in used_f:
                continue
            t = _Track(next(self._ids), f.landmarks, f.box)
            self._tracks.append(t)
            out.append(TrackedFace(t.track_id, t.landmarks, t.box, f.source, f.score, True))
        kept = []
        for ti, t in enumerate(self._tracks):
            if ti < n_before and ti not in used_t:
                t.missed += 1
            if t.missed <= self.max_missed:
                kept.append(t)
            else:
                self.stats["lost_tracks"] += 1
                self._release_mesh(t.track_id)
        self._tracks = kept
        return sorted(out, key=lambda f: f.track_id)

    @property
    def active_track_ids(self) -> set[int]:
        return {t.track_id for t in self._tracks}
