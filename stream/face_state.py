"""What the Unmasker remembers about each tracked face, and the rules that turn one frame's analysis
into a stable `Face`: the smoothed covering, masked or not, which landmarks, the gender.

Stills (image mode) have no state: each frame is decided on its own (`state` is None below).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.spec import CANONICAL_SIZE, HIDDEN_REGION
from stream.smoothing import LandmarkSmoother, MaskSmoother
from stream.stages import FaceAnalysis, FaceInput

# A face counts as masked when its covering fills this share of the canonical crop, and as unmasked
# again only below the lower share (hysteresis: a face does not flicker between the two).
MASKED_FRACTION = 0.03
UNMASKED_FRACTION = 0.015
# Weight of the new frame in the running covered share: about three frames of memory, so one noisy
# frame neither switches a face to masked nor back.
COVERAGE_EMA = 0.3
# Gender is a property of the person, not of a frame: about ten frames of memory.
GENDER_EMA = 0.1
# Over this much coverage above UNMASKED_FRACTION the hidden landmarks cross-fade from the tracker's
# to the analyser's (0 -> 1): they never jump from one to the other as a mask goes on.
LANDMARK_BLEND_RAMP = 0.05
# A still image's covering: the probability threshold (video uses MaskSmoother's hysteresis).
MASK_THRESHOLD = 0.5
# The face jumped (a cut, a re-detection elsewhere): the mask's EMA starts again rather than smear.
LARGE_MOTION_SCALE = (0.8, 1.25)      # crop scale ratio outside this range
LARGE_MOTION_SHIFT = 0.15             # or the crop centre moved more than this share of the crop
# A cut in the video (or a track that jumped onto another face) changes the upper face at once: the
# mean change of its grey patch (forehead to eyes, never under a covering; mean removed, so a light
# change alone is not a cut) is ~1-2 levels between frames, up to 6 on two real clips (a turn, a
# hand), 14.9 at the sample clip's edits, and 24 at a real cut (shared clip 04), where the last
# shot's covering was drawn for a frame over an unmasked mouth.
CUT_CHANGE = 15.0
CUT_PATCH = 32                        # px of the canonical crop the patch is read at
CUT_ROWS = slice(6, 15)               # of those: the forehead, brows and eyes


class TrackState:
    """One track's filters and running values."""

    def __init__(self, min_cutoff: float, beta: float, mask_alpha: float):
        self.landmarks = LandmarkSmoother(min_cutoff, beta)
        self.analyser_landmarks = LandmarkSmoother(min_cutoff, beta)
        self.mask = MaskSmoother(alpha=mask_alpha)
        self.gender: float | None = None          # the analyser's P(female), smoothed
        self.gender_looks: list[float] = []       # the gender probe's logits (models.gender), one per look
        self.last_gender_look_s: float | None = None
        self.matrix: np.ndarray | None = None
        self.coverage: float | None = None      # running covered share of the crop
        self.masked = False
        self.enrolled = None      # stream.reference.ReferenceFace: this track's best unmasked view (enrol="auto")
        self.frames = 0
        # The crowd cadence (stream.unmasker): the last redraw (stream.stages.Redraw), the frame it was
        # blended on, whether that frame carried it from the one before, and the own-face reference it drew.
        self.redraw = None
        self.redraw_frame = -1
        self.redraw_carried = False
        self.redraw_reference = None
        self.upper_face: np.ndarray | None = None    # the last frame's upper_face_patch
        self.cuts = 0

    def follow(self, patch: np.ndarray) -> bool:
        """Take this frame's upper-face patch; at a cut (CUT_CHANGE) the covering's and the landmarks'
        filters start again, as for a new face (the analyser's gender and an enrolled view stay with the
        track; the gender probe looks again, as the face may be someone else's). Returns whether it was a cut."""
        cut = self.upper_face is not None and float(np.abs(patch - self.upper_face).mean()) > CUT_CHANGE
        self.upper_face = patch
        if cut:
            self.cuts += 1
            self.landmarks.reset()
            self.analyser_landmarks.reset()
            self.mask.reset()
            self.matrix = self.coverage = None
            self.masked = False
            self.gender_looks.clear()
            self.last_gender_look_s = None
        return cut


def upper_face_patch(image: np.ndarray, alignment) -> np.ndarray:
    """The face's forehead-to-eyes grey patch (CUT_ROWS of a CUT_PATCH-px canonical crop), mean removed."""
    # Sampled at 4x and area-averaged down: a large face sampled straight at 32 px aliases, and its
    # patch then changes by ~5 levels a frame as it moves.
    # Only the rows it reads are warped.
    m = alignment.matrix * (4 * CUT_PATCH / alignment.size)
    m[1, 2] -= 4 * CUT_ROWS.start
    rows = CUT_ROWS.stop - CUT_ROWS.start
    band = cv2.warpAffine(image, m, (4 * CUT_PATCH, 4 * rows), flags=cv2.INTER_LINEAR)
    small = cv2.resize(band, (CUT_PATCH, rows), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return grey - grey.mean()


@dataclass
class Covering:
    mask_crop: np.ndarray     # (s, s) bool in the analyser crop
    masked: bool
    coverage: float           # covered share of the crop (running, in video)


def decide_covering(state: TrackState | None, analysis: FaceAnalysis, face: FaceInput, smooth: bool) -> Covering:
    prob = analysis.mask_prob
    if state is not None and smooth:
        if state.matrix is not None and large_motion(state.matrix, face.alignment.matrix):
            state.mask.reset()
        state.matrix = face.alignment.matrix
        prob, mask_crop = state.mask(prob)
    else:
        mask_crop = prob > MASK_THRESHOLD
    coverage = float(mask_crop.mean())
    if state is None:
        return Covering(mask_crop, coverage > MASKED_FRACTION, coverage)
    state.coverage = coverage if state.coverage is None else \
        (1 - COVERAGE_EMA) * state.coverage + COVERAGE_EMA * coverage
    state.masked = state.coverage > (UNMASKED_FRACTION if state.masked else MASKED_FRACTION)
    return Covering(mask_crop, state.masked, state.coverage)


def decide_landmarks(state: TrackState | None, analysis: FaceAnalysis, face: FaceInput, source: str,
                     coverage: float, learned: bool, smooth: bool, timestamp_s: float | None):
    """(468, 2) frame landmarks and where they came from: the tracker's where visible; where a
    covering hides them the analyser's (trained for exactly that), cross-faded by the coverage. A face
    found by the detector alone has only a coarse fit: the analyser's landmarks replace it."""
    lm = face.landmarks.copy()
    if not learned:
        return lm, source
    lm_analyser = face.alignment.to_frame(analysis.landmarks_crop)
    if state is not None and smooth:
        lm_analyser = state.analyser_landmarks(lm_analyser, timestamp_s)
    if source == "detector":
        return lm_analyser, "analyser"
    blend = float(np.clip((coverage - UNMASKED_FRACTION) / LANDMARK_BLEND_RAMP, 0.0, 1.0))
    lm[HIDDEN_REGION] = (1 - blend) * lm[HIDDEN_REGION] + blend * lm_analyser[HIDDEN_REGION]
    return lm, source


def decide_gender(state: TrackState | None, analysis: FaceAnalysis, learned: bool, probe=None,
                  probe_logit: float | None = None) -> tuple[float, str, float]:
    """(P(female) the inpainter is given, label, probability of the label).

    The analyser's P(female) (smoothed over a track's frames), fused with the gender probe's logit
    (`probe`: models.gender.GenderProbe) when the probe has looked at the face: the mean of the
    track's looks in video, `probe_logit` for a still.
    """
    p = analysis.gender_female
    if not learned:
        return p, "unknown", 0.0
    if state is not None:
        state.gender = p if state.gender is None else (1 - GENDER_EMA) * state.gender + GENDER_EMA * p
        p = state.gender
        probe_logit = float(np.mean(state.gender_looks)) if state.gender_looks else None
    if probe is not None and probe_logit is not None:
        p = float(probe.fuse(probe_logit, p))
    return p, ("female" if p >= 0.5 else "male"), (p if p >= 0.5 else 1 - p)


def large_motion(prev: np.ndarray, cur: np.ndarray) -> bool:
    """True when the face jumped (see LARGE_MOTION_SCALE / LARGE_MOTION_SHIFT)."""
    s_prev = np.sqrt(abs(np.linalg.det(prev[:, :2])))
    s_cur = np.sqrt(abs(np.linalg.det(cur[:, :2])))
    lo, hi = LARGE_MOTION_SCALE
    if not lo < s_cur / s_prev < hi:
        return True
    # Where the previous crop centre lands in the current crop.
    c_frame = cv2.invertAffineTransform(prev) @ np.array([CANONICAL_SIZE / 2, CANONICAL_SIZE / 2, 1])
    c_now = cur[:, :2] @ c_frame + cur[:, 2]
    return bool(np.linalg.norm(c_now - CANONICAL_SIZE / 2) > LARGE_MOTION_SHIFT * CANONICAL_SIZE)
