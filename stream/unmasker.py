"""`Unmasker`: the library API. One frame in, the reconstructed frame and its faces out.

    from stream import Unmasker
    um = Unmasker()                               # shipped models, backend="auto", mode="auto"
    res = um.process(frame_bgr)                   # a still image: no temporal state
    res = um.process(frame_bgr, timestamp_ms=t)   # video: tracking + smoothing
    res.image, res.faces                          # see `Result` and `Face`

An Unmasker is composed of stages (stream.stages): a tracker per running mode, an analyser, and a
compositor that holds the reconstructor. Per frame: track faces -> smooth landmarks -> align each
face to the canonical crop -> analyse all faces in one batch (covering mask, hidden landmarks,
gender) -> decide each face from its track's state (stream.face_state) -> redraw the masked faces'
lower-face windows in one batch and blend them back inside the dilated mask only. Pixels outside
every face's (dilated) mask are returned bit-identical to the input.

The running mode is fixed at construction, as in MediaPipe Tasks: `mode="image"` takes stills only
(`process(frame)`), `mode="video"` takes timestamped frames only (`process(frame, timestamp_ms=t)`),
and the default `mode="auto"` takes both: a call without a timestamp is a still, with one a video
frame. `stream.factory.create_unmasker` decides between this CPU composition and the GPU one.
"""
from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from models.colour import REFERENCE_COLOUR_PATH
from models.spec import HOLE_DILATE_PX, WEIGHTS_DIR, weights_file
from stream.alignment import align_face, load_canonical_shape, transform_points
from stream.analyser import LowerFaceAnalyser, ModelAnalyser
from stream.compositing import FEATHER_PX, CpuCompositor, mask_to_frame
from stream.errors import ModelError
from stream.hole import carry_frame_hole, frame_hole
from stream.face_state import (UNMASKED_FRACTION, TrackState, decide_covering, decide_gender, decide_landmarks,
                               upper_face_patch)
from stream.reference import REFERENCE_BORDER_MATCH, ReferenceFace, enrolment_quality
from stream.reconstruct import GenerativeReconstructor, TeleaReconstructor, frame_to_window
from stream.stages import (Analyser, Compositor, FaceAnalysis, FaceInput, FrameContext, FrameImage, FrameStore,
                           InpaintJob, Tracker)
from stream.tracking import FaceTracker, RunningMode, TrackedFace

MODES = ("auto", "image", "video")
ENROL_EVERY = 5           # enrol="auto": judge a track's unmasked view every N frames (sharpness costs ~0.3 ms)
# enrol="auto": when the only face in view leaves (or its track is lost) and, within this many seconds,
# again exactly one face is in view, near where they were last seen, that face is taken to be the same
# person and keeps the enrolment (the presenter who turns away or steps out and comes back masked).
# Never to a face that appears with others in view, or elsewhere in the frame.
ENROL_CARRY_S = 5.0
# Several reference photos (set_references): a face is that person when the cosine of their face
# embeddings (stream.identity) is at least this and beats the next photo by the margin. Measured on the
# network: different people max 0.10, the same person with the lower face hidden ~0.6.
PERSON_MIN_COSINE = 0.3
PERSON_MARGIN = 0.1
PERSON_TRIES = 10          # video: a track is compared at most this many times: on its first frame, then
ASSIGN_EVERY = 3           # every this many frames, one track a frame (an embedding costs ~11 ms on one thread)
# The gender probe (models.gender) reads the face embedding of each masked face: a still's faces once
# each; in video a masked track GENDER_LOOKS times, GENDER_LOOK_EVERY_S apart, at most one look a frame
# (the track looked at least first), and the mean of its looks is kept. After its first seconds a track
# costs nothing more; until its first look, the analyser's gender is used alone.
GENDER_LOOKS = 3
GENDER_LOOK_EVERY_S = 1.0
# The crowd cadence: with more masked faces than this in view, each frame blends up to half of them
# from their last frame's redraw, moved with the face (stream.hole.carry_frame_hole), instead of
# drawing them anew: their hole, inpainting, colour and border work (~12 ms a face on 2 cores) is
# spent every other frame. The tracker and the analyser still see every face on every frame, the
# eyes are cut out of every carried hole from this frame's landmarks, and no face is carried twice
# running. One or two faces (a webcam, a call) are always drawn on every frame.
FULL_RATE_FACES = 2
# A face that moved more than this (inpainting-window px, of 128 in `fast`) since its redraw is drawn
# anew: the window follows the face through smoothed landmarks, and a fast face's window lags it.
CARRY_MAX_SHIFT = 6.0


def _warm_up_own_face() -> None:
    """The own-face path's compiled raster, loaded when that path is set up rather than on the first
    masked face (a ~1 s stall in a live stream)."""
    from stream.rasterise import warm_up
    warm_up()


def is_person(cosines: np.ndarray, i: int, threshold: float = PERSON_MIN_COSINE, margin: float = PERSON_MARGIN) -> bool:
    """Photo i is this face's person: similar enough, and clearly more than any other photo
    (`cosines`: the face's embedding against each photo's; training.evaluate_people measures the rule)."""
    others = np.delete(cosines, i)
    return cosines[i] >= threshold and (len(others) == 0 or cosines[i] - others.max() >= margin)


@dataclass
class Face:
    box: tuple[int, int, int, int]      # x0, y0, x1, y1 in frame pixels
    landmarks: np.ndarray               # (468, 2) float32 frame pixels (hidden ones estimated)
    track_id: int
    mask: np.ndarray                    # (H, W) uint8 0/255: the face covering in the frame
    masked: bool                        # a covering was found on this face
    gender: str                         # "female" | "male" | "unknown"
    gender_score: float                 # probability of `gender`
    landmark_source: str = "mesh"       # "mesh" | "detector" | "analyser"
    # What drew the hidden face: "generative" (the inpainter), "reference" (the user's photo),
    # "enrolled" (this person's own unmasked frames), or None when nothing was redrawn.
    reconstruction: str | None = None
    # With several reference photos (set_references): which of them drew this face (its index), else None.
    reference_id: int | None = None
    # The crowd cadence (Unmasker.full_rate_faces): this frame blended the face's last redraw, moved with it.
    carried: bool = False


@dataclass
class Result:
    image: FrameImage                   # the reconstructed BGR frame, same shape and dtype as the input: an
    # array on the CPU path; on the GPU path a device tensor (as_tensor=True) or a
    # stream.stages.DeferredImage (defer_download=True; stream.stages.host_image waits for it)
    faces: list[Face]
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class TrackedFrame:
    """A frame after the tracker (`Unmasker.track_frame`), waiting for `Unmasker.finish_frame`."""
    ctx: FrameContext
    tracked: list[TrackedFace]
    track_ms: float
    # The tracker's live track ids right after this frame: with the tracker running ahead, its own
    # state may already be a later frame's when this one is finished.
    alive: frozenset


@dataclass
class _FaceWork:
    """One face on its way through a frame's stages."""

    tracked: TrackedFace
    input: FaceInput
    state: TrackState | None
    analysis: FaceAnalysis | None = None
    embedding: np.ndarray | None = None     # the face embedding (stream.identity), when a step needed it


def models_available(preset: str = "fast", weights_dir: str | Path | None = None) -> bool:
    return all(weights_file(f, weights_dir).exists() for f in ("analyser.onnx", f"inpainter_{preset}.onnx"))


def cpu_stages(method: str, backend: str = "auto", device: str | None = None, threads: int | None = None,
               preset: str = "fast", dilate_px: int = HOLE_DILATE_PX,
               feather_px: int = FEATHER_PX, weights_dir: str | Path | None = None) -> tuple[Analyser, Compositor]:
    """The analyser and compositor of the CPU (numpy / OpenCV) path for `method` "model" or "classical".

    `weights_dir`: a folder with `analyser.onnx` and / or `inpainter_<preset>.onnx` (with its colour
    correction) to run instead of the shipped ones, e.g. a training candidate before it is promoted;
    a network it does not hold is the shipped one."""
    if method == "model":
        names = ("analyser.onnx", f"inpainter_{preset}.onnx")
        if weights_dir is not None and not any((Path(weights_dir) / n).exists() for n in names):
            raise ModelError(f"the weights folder {weights_dir} holds neither {names[0]} nor {names[1]}")
        if not models_available(preset, weights_dir):
            raise ModelError(f"the shipped models are missing from {WEIGHTS_DIR} "
                             f"(analyser.onnx, inpainter_{preset}.onnx); use --method classical")
        analyser = ModelAnalyser.open(backend=backend, device=device, threads=threads, weights_dir=weights_dir)
        reconstructor = GenerativeReconstructor.open(preset, backend=backend, device=device, threads=threads,
                                                     weights_dir=weights_dir)
    elif method == "classical":
        analyser, reconstructor = LowerFaceAnalyser(), TeleaReconstructor()
    else:
        raise ValueError(f"unknown method {method!r}: use 'model', 'classical' or 'auto'")
    return analyser, CpuCompositor(reconstructor, dilate_px, feather_px)


class Unmasker:
    """Reconstructs masked faces in frames. Not thread-safe: one instance per thread.

    `analyser`, `compositor` and `make_tracker` (RunningMode -> Tracker) replace the CPU stages
    (stream.gpu.GpuUnmasker passes its torch ones); `frames` is an optional per-frame store the
    stages share (the GPU path's device copy of the frame), released after every frame.
    `weights_dir`: a folder of candidate weights (`training.train --export-dir`) to run instead of the
    shipped ones, network by network (analyser, inpainter and its colour fit, the own-face colour fit,
    the gender probe); what it does not hold is the shipped file.
    """

    # The hole at the frame's resolution with the eyes and brows cut out (stream.hole); the GPU path,
    # whose device blend mirrors the window hole, sets this False.
    FRAME_HOLES = True

    def __init__(self, method: str = "auto", backend: str = "auto", device: str | None = None,
                 max_faces: int = 16, threads: int | None = None, preset: str = "fast",
                 smoothing: bool = True, min_cutoff: float = 1.0, beta: float = 20.0,
                 mask_alpha: float = 0.5, dilate_px: int = HOLE_DILATE_PX, feather_px: int = FEATHER_PX,
                 mode: str = "auto", *, analyser: Analyser | None = None, compositor: Compositor | None = None,
                 make_tracker: Callable[[RunningMode], Tracker] | None = None,
                 frames: FrameStore | None = None, reference=None, enrol: str = "off", save_enrolled=None,
                 refine_edges: bool = True, frame_holes: bool | None = None, reference_px: int | None = None,
                 gender_probe: bool = True, weights_dir: str | Path | None = None,
                 full_rate_faces: int | None = FULL_RATE_FACES):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
        if (analyser is None) != (compositor is None):
            raise ValueError("pass both analyser and compositor, or neither")
        if analyser is None:
            if method == "auto":
                method = "model" if models_available(preset, weights_dir) else "classical"
            analyser, compositor = cpu_stages(method, backend, device, threads, preset, dilate_px, feather_px,
                                              weights_dir)
        self.analyser, self.compositor = analyser, compositor
        # The own-face render's colour correction is fitted per inpainter (training.fit_colour --path
        # own-face writes it beside a candidate's weights); the shipped one otherwise.
        self.reference_colour_path = weights_file(REFERENCE_COLOUR_PATH.name, weights_dir)
        self.reference_border_match = REFERENCE_BORDER_MATCH    # stream.reference; 0: off
        # Gender from the face embedding too (models.gender), for the learned analyser only: the
        # classical path draws no gender. None when the probe is off, missing or stale.
        self.gender_probe = None
        if gender_probe and analyser.learned:
            from models.gender import GENDER_PROBE_PATH, GenderProbe
            self.gender_probe = GenderProbe.shipped(weights_file(GENDER_PROBE_PATH.name, weights_dir))
        if reference_px is not None:
            if reference_px < 1:
                raise ValueError(f"reference_px must be positive, got {reference_px}")
            if not hasattr(compositor, "reference_px"):
                raise ValueError("reference_px needs a compositor that draws references at a size (CpuCompositor, "
                                 "TorchCompositor)")
            compositor.reference_px = reference_px
        self.method = analyser.name
        self.mode = mode
        self.refine_edges = refine_edges   # guided refinement of the covering at frame resolution
        self.frame_holes = type(self).FRAME_HOLES if frame_holes is None else frame_holes
        self.dilate_px, self.feather_px = dilate_px, feather_px
        self.max_faces = max_faces
        if full_rate_faces is not None and full_rate_faces < 0:
            raise ValueError(f"full_rate_faces must be 0 or more (or None: every face on every frame), got {full_rate_faces}")
        # The crowd cadence (video, compositors that carry redraws): with more masked faces in view
        # than this, up to half of them are blended from their last redraw on each frame instead of
        # being drawn anew (none twice running); None draws every face on every frame.
        self.full_rate_faces = full_rate_faces if getattr(compositor, "carries_redraws", False) else None
        self._frame_index = 0
        self.smoothing = smoothing
        self.min_cutoff, self.beta, self.mask_alpha = min_cutoff, beta, mask_alpha
        self._make_tracker = make_tracker or (lambda m: FaceTracker(m, max_faces=max_faces))
        self._frames = frames
        self._trackers: dict[RunningMode, Tracker] = {}
        self._states: dict[int, TrackState] = {}
        self._last_ts: float | None = None
        self._canonical = load_canonical_shape()
        if enrol not in ("off", "auto"):
            raise ValueError(f"unknown enrol {enrol!r}: use 'off' or 'auto'")
        self.enrol = enrol
        # Enrolled views are kept in memory only, unless the user names a folder for them.
        self.save_enrolled_dir = Path(save_enrolled) if save_enrolled is not None else None
        # The own-face path: one reference for the main face (None), or one per track id ...
        self._references: dict[int | None, ReferenceFace] = {}
        # ... or several people's photos, each given to the face it looks like (set_references).
        self._people: list[tuple[ReferenceFace, np.ndarray]] = []
        self._person_of: dict[int, int | None] = {}     # track id -> index into _people (None: nobody)
        self._person_tries: dict[int, int] = {}
        self._assign_clock = 0
        self._embedder = None
        # (track id, enrolled view, last seen s, last box) of the one person alone in view
        self._lone_enrolment: tuple | None = None
        if isinstance(reference, (list, tuple)):
            self.set_references(reference)
        elif reference is not None:
            self.set_reference(reference)
        if enrol == "auto":
            _warm_up_own_face()

    # -- the own-face path ---------------------------------------------------------
    def set_reference(self, image_or_path, track_id: int | None = None) -> None:
        """Show this person's own lower face (a photo of them) instead of a generated one.

        track_id None: the main face (the largest in each frame); else that track only.
        Raises ValueError (one line) when the photo is unreadable or holds no face.
        """
        if not getattr(self.compositor, "renders_references", False):
            raise ValueError("this compositor cannot draw references (the own-face path)")
        self._references[track_id] = image_or_path if isinstance(image_or_path, ReferenceFace) \
            else ReferenceFace.from_image(image_or_path)
        _warm_up_own_face()

    def set_references(self, photos) -> None:
        """Several people: each masked face gets the photo of the person it looks like (face embedding,
        stream.identity), or none (the generative path) when it looks like none of them.

        `Face.reference_id` says which photo (its index in `photos`) drew a face. In video a track is
        decided from up to PERSON_TRIES looks at it, then keeps its photo. Replaces earlier photos.
        """
        if not getattr(self.compositor, "renders_references", False):
            raise ValueError("this compositor cannot draw references")
        people = []
        for photo in photos:
            ref = photo if isinstance(photo, ReferenceFace) else ReferenceFace.from_image(photo)
            if ref.image is None:
                raise ValueError("a reference given to set_references needs its photo (not an enrolled view)")
            people.append((ref, self._face_embedder()(ref.image, ref.landmarks)))
        self._people = people
        _warm_up_own_face()
        self._person_of.clear()
        self._person_tries.clear()

    def clear_reference(self, track_id: int | None = None) -> None:
        """Forget one reference (the main face's by default), or all with track_id="all" (also the
        photos of set_references)."""
        if track_id == "all":
            self._references.clear()
            self._people = []
            self._person_of.clear()
            self._person_tries.clear()
        else:
            self._references.pop(track_id, None)

    def _assign_people(self, ctx: FrameContext, work) -> dict[int, int | None]:
        """Which of the set_references photos each face is (track id -> index or None).

        A still decides every face at once. Video looks at a new track on its first frame and, until it
        is recognised, a few more times (one track a frame), then keeps the answer; a photo goes to one
        face at a time.
        """
        if not self._people:
            return {}
        if ctx.video:
            alive = {w.tracked.track_id for w in work}
            for track_id in [t for t in self._person_of if t not in self._states]:
                self._person_of.pop(track_id, None)
                self._person_tries.pop(track_id, None)
            undecided = [w for w in work if self._person_of.get(w.tracked.track_id) is None
                         and self._person_tries.get(w.tracked.track_id, 0) < PERSON_TRIES]
            self._assign_clock += 1
            # A new track is looked at at once (each new face costs one embedding on its first
            # frame); a face not yet recognised is looked at again every few frames, one a frame.
            new = [w for w in undecided if self._person_tries.get(w.tracked.track_id, 0) == 0]
            again = [w for w in undecided if w not in new][:1] if self._assign_clock % ASSIGN_EVERY == 0 else []
            taken = {p for t, p in self._person_of.items() if p is not None and t in alive}
            for w in new + again:
                track_id = w.tracked.track_id
                self._person_tries[track_id] = self._person_tries.get(track_id, 0) + 1
                person = self._best_person(self._embedding(ctx, w), taken)
                if person is not None:
                    self._person_of[track_id] = person
                    taken.add(person)
            return {w.tracked.track_id: self._person_of.get(w.tracked.track_id) for w in work}
        out, taken = {}, set()
        scored = []
        for w in work:
            cos = self._person_cosines(self._embedding(ctx, w))
            scored += [(c, w.tracked.track_id, i, cos) for i, c in enumerate(cos)]
        for c, track_id, i, cos in sorted(scored, key=lambda x: -x[0]):
            if track_id in out or i in taken or not is_person(cos, i):
                continue
            out[track_id] = i
            taken.add(i)
        return out

    def _face_embedder(self):
        if self._embedder is None:
            from stream.identity import FaceEmbedder
            self._embedder = FaceEmbedder()
        return self._embedder

    def _embedding(self, ctx: FrameContext, w: _FaceWork) -> np.ndarray:
        """The face's embedding in this frame, computed once for all the steps that need it (~11 ms):
        aligned by the tracker's landmarks, or by the analyser-refined ones of a face the mesh missed."""
        if w.embedding is None:
            landmarks = w.input.landmarks if w.tracked.source == "detector" else w.tracked.landmarks
            w.embedding = self._face_embedder()(ctx.image, landmarks)
        return w.embedding

    def _gender_looks(self, ctx: FrameContext, work: list[_FaceWork], covs) -> list[float | None]:
        """The gender probe's looks this frame (see GENDER_LOOKS): a still's masked faces get their
        probe logit (in the order of `work`); a video track's look is kept in its state."""
        if self.gender_probe is None or not ctx.video:
            return [float(self.gender_probe.logit(self._embedding(ctx, w))) if self.gender_probe and cov.masked
                    else None for w, cov in zip(work, covs)]
        masked = [w for w, cov in zip(work, covs) if cov.masked]
        due = [w for w in masked if len(w.state.gender_looks) < GENDER_LOOKS and (
            w.state.last_gender_look_s is None or ctx.timestamp_s - w.state.last_gender_look_s >= GENDER_LOOK_EVERY_S)]
        if due:
            w = min(due, key=lambda w: len(w.state.gender_looks))
            w.state.gender_looks.append(float(self.gender_probe.logit(self._embedding(ctx, w))))
            w.state.last_gender_look_s = ctx.timestamp_s
        return [None] * len(work)

    def _person_cosines(self, embedding: np.ndarray) -> np.ndarray:
        return np.array([float(embedding @ emb) for _, emb in self._people])

    def _best_person(self, embedding: np.ndarray, taken: set) -> int | None:
        cos = self._person_cosines(embedding)
        best = int(np.argmax(cos))
        return best if best not in taken and is_person(cos, best) else None

    def enrolled(self) -> dict[int, ReferenceFace]:
        """The unmasked views kept per live track (enrol="auto"); memory only."""
        return {k: st.enrolled for k, st in self._states.items() if st.enrolled is not None}

    def save_enrolled(self, folder) -> list[Path]:
        """Write each track's enrolled lower-face window as PNG (only when the user asks)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for track_id, ref in self.enrolled().items():
            path = folder / f"track_{track_id}.png"
            cv2.imwrite(str(path), ref.texture)
            paths.append(path)
        return paths

    def _reference_for(self, track_id: int, main_track: int | None, state,
                       people: dict[int, int | None]) -> tuple[ReferenceFace | None, int | None]:
        """The reference that draws this face and, for set_references photos, its index."""
        if track_id in self._references:
            ref, person = self._references[track_id], None
        elif people.get(track_id) is not None:
            ref, person = self._people[people[track_id]][0], people[track_id]
        elif None in self._references and track_id == main_track:
            ref, person = self._references[None], None
        else:
            ref, person = (state.enrolled if state is not None else None), None
        if ref is not None:
            ref.colour_path, ref.border_match = self.reference_colour_path, self.reference_border_match
        return ref, person

    def _carry_lone_enrolment(self, work, now_s: float) -> None:
        """See ENROL_CARRY_S: one person alone in view keeps their enrolment across a lost track,
        when the new face appears where they were last seen (within a face width)."""
        if len(work) != 1 or work[0].state is None:
            if len(work) > 1:
                self._lone_enrolment = None
            return
        w = work[0]
        box = w.tracked.box
        if w.state.enrolled is not None:
            self._lone_enrolment = (w.tracked.track_id, w.state.enrolled, now_s, box)
        elif self._lone_enrolment is not None:
            track_id, ref, seen_s, seen_box = self._lone_enrolment
            width = max(seen_box[2] - seen_box[0], 1)
            shift = np.hypot((box[0] + box[2] - seen_box[0] - seen_box[2]) / 2,
                             (box[1] + box[3] - seen_box[1] - seen_box[3]) / 2)
            if track_id != w.tracked.track_id and now_s - seen_s <= ENROL_CARRY_S and shift <= width:
                w.state.enrolled = ref
                self._lone_enrolment = (w.tracked.track_id, ref, now_s, box)

    def _maybe_enrol(self, frame, track_id: int, state: TrackState, landmarks, source: str) -> None:
        """Keep the sharpest frontal unmasked view of a track (checked every few frames: cheap)."""
        state.frames += 1
        if source != "mesh" or state.frames % ENROL_EVERY:
            return
        quality = enrolment_quality(frame, landmarks)
        if quality is not None and (state.enrolled is None or quality > state.enrolled.sharpness):
            ref = ReferenceFace(frame, landmarks, "enrolled", quality)
            # Only the lower face is kept, not the frame: at the sizes the compositor renders at.
            ref.keep_lower_face(getattr(self.compositor, "reference_px", None))
            state.enrolled = ref
            if self.save_enrolled_dir is not None:
                self.save_enrolled_dir.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(self.save_enrolled_dir / f"track_{track_id}.png"), ref.texture)

    @property
    def backend(self) -> str:
        return self.analyser.backend

    def tracker(self, mode: RunningMode) -> Tracker:
        """The tracker of `mode` (made on first use)."""
        if mode not in self._trackers:
            self._trackers[mode] = self._make_tracker(mode)
        return self._trackers[mode]

    def reset(self) -> None:
        """Forget all temporal state (tracks, filters, last timestamp)."""
        for t in self._trackers.values():
            t.close()
        self._trackers.clear()
        self._states.clear()
        self._person_of.clear()
        self._person_tries.clear()
        self._last_ts = None

    def close(self) -> None:
        self.reset()
        self.analyser.close()
        self.compositor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the frame step ----------------------------------------------------------
    def process(self, frame_bgr: np.ndarray, timestamp_ms: float | None = None, *, as_tensor: bool = False) -> Result:
        """One frame: a still without `timestamp_ms`, a video frame with it. `as_tensor` (GPU path only)
        leaves the output image on the device."""
        return self.finish_frame(self.track_frame(frame_bgr, timestamp_ms, as_tensor=as_tensor))

    @property
    def tracks_ahead(self) -> bool:
        """Whether `track_frame` of the next frame may run while `finish_frame` of this one does
        (stream.pipeline then runs them on two threads). Not with a per-frame store: the GPU
        path keeps one device copy of the frame for all of its stages."""
        return self._frames is None

    def track_frame(self, frame_bgr: np.ndarray, timestamp_ms: float | None = None, *,
                    as_tensor: bool = False) -> "TrackedFrame":
        """The first half of `process`: the checks and the tracker. Frames go through `track_frame`
        in order and then through `finish_frame` in the same order; with `tracks_ahead`, the
        tracker of frame n+1 may run while frame n is finished (the tracker keeps its own state,
        the other stages theirs)."""
        ctx = self._context(frame_bgr, timestamp_ms, as_tensor)
        try:
            t0 = time.perf_counter()
            tracker = self.tracker(RunningMode.VIDEO if ctx.video else RunningMode.IMAGE)
            tracked = tracker.process(frame_bgr)
        except BaseException:
            if self._frames is not None:
                self._frames.release()
            raise
        alive = frozenset(tracker.active_track_ids) if ctx.video else frozenset()
        return TrackedFrame(ctx, tracked, (time.perf_counter() - t0) * 1e3, alive)

    def finish_frame(self, frame: "TrackedFrame") -> Result:
        """The second half of `process`: align, analyse, decide and composite the tracked faces."""
        ctx = frame.ctx
        try:
            t1 = time.perf_counter()
            work = self._align(ctx, frame.tracked, frame.alive)
            t2 = time.perf_counter()
            self._analyse(ctx, work)
            t3 = time.perf_counter()
            faces, jobs, job_states = self._decide(ctx, work)
            t4 = time.perf_counter()
            image, t_inpaint = self.compositor.composite(ctx, jobs)
            t5 = time.perf_counter()
            self._keep_redraws(work, jobs, job_states)
        finally:
            if self._frames is not None:
                self._frames.release()
        # decide: each face's covering, landmarks, gender and frame-resolution hole (stream.hole).
        timings = {"track": frame.track_ms, "align": (t2 - t1) * 1e3, "analyse": (t3 - t2) * 1e3,
                   "decide": (t4 - t3) * 1e3, "inpaint": t_inpaint, "composite": (t5 - t4) * 1e3 - t_inpaint}
        return Result(image, faces, timings)

    # -- the steps -----------------------------------------------------------------
    def _context(self, frame_bgr, timestamp_ms, as_tensor) -> FrameContext:
        if not isinstance(frame_bgr, np.ndarray) or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 \
                or frame_bgr.dtype != np.uint8:
            raise ValueError("frame_bgr must be an H x W x 3 uint8 BGR array")
        video = timestamp_ms is not None
        if self.mode == "image" and video:
            raise ValueError("this Unmasker is in image mode: call process(frame) without a timestamp")
        if self.mode == "video" and not video:
            raise ValueError("this Unmasker is in video mode: call process(frame, timestamp_ms=t)")
        if video:
            if self._last_ts is not None and timestamp_ms <= self._last_ts:
                raise ValueError(f"timestamps must increase: got {timestamp_ms} ms after {self._last_ts} ms")
            self._last_ts = float(timestamp_ms)
        return FrameContext(frame_bgr, timestamp_ms, as_tensor)

    def _align(self, ctx: FrameContext, tracked: list[TrackedFace], alive: frozenset) -> list[_FaceWork]:
        """Each face's track state (video), its smoothed landmarks and its canonical alignment."""
        if ctx.video:  # drop state of tracks that are gone; fresh state for new tracks
            self._states = {k: v for k, v in self._states.items() if k in alive}
        work = []
        for tf in tracked:
            st = None
            lm = tf.landmarks
            if ctx.video:
                st = self._states.get(tf.track_id)
                if st is None or tf.is_new:
                    st = self._states[tf.track_id] = TrackState(self.min_cutoff, self.beta, self.mask_alpha)
                if self.smoothing:
                    # Read where the tracker puts the face now, before any smoothing drags it back.
                    st.follow(upper_face_patch(ctx.image, align_face(lm, self._canonical)))
                    lm = st.landmarks(lm, ctx.timestamp_s)
            work.append(_FaceWork(tf, FaceInput(align_face(lm, self._canonical), lm), st))
        return work

    def _analyse(self, ctx: FrameContext, work: list[_FaceWork]) -> None:
        """All faces in one batch. Faces found only by the detector have coarse landmarks: they are
        re-aligned on the analyser's own landmark estimate and analysed once more."""
        for w, a in zip(work, self.analyser.analyse(ctx.image, [w.input for w in work])):
            w.analysis = a
        redo = [w for w in work if w.tracked.source == "detector" and self.analyser.learned]
        if redo:
            for w in redo:
                lm = w.input.alignment.to_frame(w.analysis.landmarks_crop)
                w.input = FaceInput(align_face(lm, self._canonical), lm)
            for w, a in zip(redo, self.analyser.analyse(ctx.image, [w.input for w in redo])):
                w.analysis = a

    def _decide(self, ctx: FrameContext, work: list[_FaceWork]) \
            -> tuple[list[Face], list[InpaintJob], list[TrackState | None]]:
        """Each face's covering, landmarks and gender from its track state; a job for each masked one
        (with the job's track state: the compositor's redraws are kept there)."""
        faces, jobs, job_states = [], [], []
        learned = self.analyser.learned
        boxes = {w.tracked.track_id: (w.tracked.box[2] - w.tracked.box[0]) * (w.tracked.box[3] - w.tracked.box[1])
                 for w in work}
        main_track = max(boxes, key=boxes.get) if boxes else None
        if self.enrol == "auto" and ctx.video:
            self._carry_lone_enrolment(work, ctx.timestamp_s)
        people = self._assign_people(ctx, work)
        covs = [decide_covering(w.state, w.analysis, w.input, self.smoothing) for w in work]
        looks = self._gender_looks(ctx, work, covs)
        size = self.compositor.window_size
        carried = self._faces_to_carry(ctx, work, covs)
        for w, cov, look in zip(work, covs, looks):
            lm, source = decide_landmarks(w.state, w.analysis, w.input, w.tracked.source, cov.coverage, learned,
                                          self.smoothing, ctx.timestamp_s)
            gender_p, gender, gender_score = decide_gender(w.state, w.analysis, learned, self.gender_probe, look)
            reference, reference_id = self._reference_for(w.tracked.track_id, main_track, w.state, people) \
                if cov.masked else (None, None)
            hole = carry = None
            if cov.masked and self.frame_holes:
                to_window = frame_to_window(w.input.alignment, size)
                if id(w) in carried and w.state.redraw_reference is reference:
                    carry = w.state.redraw
                    hole = carry_frame_hole(carry.frame_hole, carry.frame_to_window, to_window, w.tracked.landmarks,
                                            w.input.alignment, ctx.image.shape)
                    carry = carry if hole is not None else None
                if carry is None:
                    # The eyes are protected where the tracker sees them in this frame (unsmoothed: no lag).
                    hole = frame_hole(ctx.image, cov.mask_crop, w.input.alignment, w.tracked.landmarks, to_window,
                                      size, self.dilate_px, self.feather_px, self.refine_edges)
            full_mask = hole.full_mask(ctx.image.shape[:2]) if hole is not None else \
                mask_to_frame(cov.mask_crop, w.input.alignment, ctx.image.shape[:2])
            if self.enrol == "auto" and w.state is not None and not cov.masked and cov.coverage < UNMASKED_FRACTION:
                self._maybe_enrol(ctx.image, w.tracked.track_id, w.state, w.input.landmarks, w.tracked.source)
            drawn_by = (("reference" if reference.source == "photo" else "enrolled") if reference
                        else ("generative" if cov.masked else None))
            faces.append(Face(w.tracked.box, lm.astype(np.float32), w.tracked.track_id, full_mask, bool(cov.masked),
                              gender, float(gender_score), source, drawn_by, reference_id, carry is not None))
            if cov.masked and (hole is not None or not self.frame_holes):
                # The inpainter is guided by the same (smoothed, combined) landmarks we report.
                jobs.append(InpaintJob(w.input.alignment, cov.mask_crop, w.input.alignment.to_crop(lm), gender_p,
                                       reference, hole, carry=carry))
                job_states.append(w.state)
        return faces, jobs, job_states

    def _faces_to_carry(self, ctx: FrameContext, work: list[_FaceWork], covs) -> set[int]:
        """The crowd cadence (FULL_RATE_FACES): ids of the work items blended from their last redraw
        this frame. Candidates were drawn anew on the frame before; the ones that moved least since, up
        to half of the masked faces, are carried."""
        masked = [w for w, cov in zip(work, covs) if cov.masked]
        if self.full_rate_faces is None or not ctx.video or not self.frame_holes or len(masked) <= self.full_rate_faces:
            return set()
        size = self.compositor.window_size
        corners = np.float64([[0, 0], [size, 0], [0, size], [size, size]])
        moved = []
        for w in masked:
            st = w.state
            if st is None or st.redraw is None or st.redraw_carried or st.redraw_frame != self._frame_index - 1:
                continue
            # How far the window's corners moved on the face since the redraw (window px).
            then = transform_points(corners, cv2.invertAffineTransform(st.redraw.frame_to_window))
            now = transform_points(then, frame_to_window(w.input.alignment, size))
            shift = float(np.abs(now - corners).max())
            if shift <= CARRY_MAX_SHIFT:
                moved.append((shift, id(w)))
        return {key for _, key in sorted(moved)[: len(masked) // 2]}

    def _keep_redraws(self, work: list[_FaceWork], jobs: list[InpaintJob], job_states) -> None:
        """After compositing: each job's redraw kept in its track state for the next frame."""
        for job, st in zip(jobs, job_states):
            if st is None:
                continue
            if job.carry is not None:
                st.redraw_carried, st.redraw_frame = True, self._frame_index
            elif job.redraw is not None:
                st.redraw, st.redraw_carried, st.redraw_frame = job.redraw, False, self._frame_index
                st.redraw_reference = job.reference
        drawn = {id(st) for st in job_states}
        for w in work:      # a face not redrawn this frame (unmasked now) has nothing to carry
            if w.state is not None and id(w.state) not in drawn:
                w.state.redraw = None
        self._frame_index += 1
