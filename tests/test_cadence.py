"""The crowd cadence (Unmasker.full_rate_faces): with more masked faces than FULL_RATE_FACES in view,
up to half of them are blended from their last redraw each frame, moved with the face; no face twice
running, the eyes never redrawn, and the carried faces close to what drawing them anew gives."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks.edges import OracleSegmentation, oracle_unmasker
from stream.compositing import CpuCompositor
from stream.reconstruct import TeleaReconstructor
from stream.tracking import FaceTracker, RunningMode
from stream.unmasker import CARRY_MAX_SHIFT, FULL_RATE_FACES, Unmasker, models_available
from tests.faces import masked_astronaut
from tests.test_hole import _eye_brow_region

TILE = 320


def crowd_frames(n: int, faces: int = 4, step_px: float = 1.0, fast_face: int | None = None):
    """`n` frames of `faces` masked astronauts in a 2-wide grid, each drifting `step_px` a frame to the
    right (`fast_face`: that one moves 15 px a frame); with the true covering of each frame."""
    img, gt = masked_astronaut()
    tile = cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA)
    tile_gt = cv2.resize(gt, (TILE, TILE), interpolation=cv2.INTER_NEAREST)
    rows = -(-faces // 2)
    out = []
    for k in range(n):
        frame = np.full((rows * TILE, 2 * TILE + 40, 3), 90, np.uint8)
        truth = np.zeros(frame.shape[:2], np.float32)
        for i in range(faces):
            dx = k * (15.0 if i == fast_face else step_px)
            m = np.float32([[1, 0, dx], [0, 1, 0]])
            y, x = (i // 2) * TILE, (i % 2) * TILE
            frame[y:y + TILE, x:x + TILE] = cv2.warpAffine(tile, m, (TILE, TILE), borderMode=cv2.BORDER_REPLICATE)
            truth[y:y + TILE, x:x + TILE] = cv2.warpAffine(tile_gt, m, (TILE, TILE), flags=cv2.INTER_NEAREST) > 0
        out.append((frame, truth))
    return out


class CountingTelea(TeleaReconstructor):
    """Telea, counting the windows it is asked to redraw per call."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def inpaint(self, windows, holes, landmark_maps, genders):
        self.batches.append(len(windows))
        return super().inpaint(windows, holes, landmark_maps, genders)


def _run(frames, seg: OracleSegmentation, full_rate_faces, reconstructor=None):
    compositor = CpuCompositor(reconstructor or TeleaReconstructor())
    results = []
    with Unmasker(analyser=seg, compositor=compositor, full_rate_faces=full_rate_faces, max_faces=8) as u:
        for k, (frame, truth) in enumerate(frames):
            seg.truth = truth
            results.append(u.process(frame, timestamp_ms=40.0 * k))
    return results


def test_half_the_crowd_is_carried_each_frame_never_a_face_twice_running():
    frames = crowd_frames(10)
    counting = CountingTelea()
    results = _run(frames, OracleSegmentation(frames[0][1]), FULL_RATE_FACES, counting)
    # The detector's scan finds the faces over the first frames (stream.detection); from the third
    # frame on all four are tracked.
    settled = results[2:]
    assert all(sum(f.masked for f in r.faces) == 4 for r in settled)
    assert not any(f.carried for f in results[0].faces)             # nothing to carry on the first frame
    carried = [{f.track_id for f in r.faces if f.carried} for r in settled]
    assert all(len(c) == 2 for c in carried[1:])                    # half of four, frame after frame
    assert all(not (a & b) for a, b in zip(carried, carried[1:]))   # never the same face twice running
    # ... and the redrawing work really is halved: the reconstructor sees two windows a frame.
    assert counting.batches[3:] == [2] * 7


def test_few_faces_or_all_are_drawn_on_every_frame():
    two = crowd_frames(6, faces=2)
    assert not any(f.carried for r in _run(two, OracleSegmentation(two[0][1]), FULL_RATE_FACES) for f in r.faces)
    four = crowd_frames(6)
    assert not any(f.carried for r in _run(four, OracleSegmentation(four[0][1]), None) for f in r.faces)


def test_a_fast_face_is_drawn_anew():
    frames = crowd_frames(6, fast_face=0)
    results = _run(frames, OracleSegmentation(frames[0][1]), FULL_RATE_FACES)
    # The fast face's window moves ~15 * 128 / (face size) px a frame: more than CARRY_MAX_SHIFT.
    by_x = [sorted(r.faces, key=lambda f: (f.box[1] // TILE, f.box[0]))[0] for r in results]
    assert by_x[0].box[0] < TILE / 2
    assert not any(f.carried for f in by_x)
    assert any(f.carried for r in results[1:] for f in r.faces)     # the others still are
    assert CARRY_MAX_SHIFT < 15


def test_carried_faces_never_redraw_the_eyes_and_leave_the_rest_of_the_frame_alone():
    # A hand over the whole face (the covering is everything): carried or not, every face's eyes,
    # brows and above stay bit-identical, as does everything outside the faces' holes.
    frames = crowd_frames(6)
    results = _run(frames, OracleSegmentation(everything=True), FULL_RATE_FACES)
    tracker = FaceTracker(RunningMode.VIDEO, max_faces=8)
    assert any(f.carried for r in results for f in r.faces)
    for k, ((frame, _), res) in enumerate(zip(frames, results)):
        faces = tracker.process(frame)
        assert len(faces) == 4 or k < 2          # the scan finds them all by the third frame
        changed = (res.image != frame).any(axis=2)
        for face in faces:
            # Each face's eyes, brows and everything above them within its own tile (the frame above a
            # lower face holds other faces' holes).
            tile = np.zeros(frame.shape[:2], bool)
            y, x = (face.box[1] // TILE) * TILE, (face.box[0] // TILE) * TILE
            tile[y:y + TILE, x:x + TILE] = True
            eyes = _eye_brow_region(face.landmarks, frame.shape) & tile
            assert not changed[eyes].any(), f"frame {k}: eyes redrawn"
        holes = np.zeros(frame.shape[:2], bool)
        for f in res.faces:       # the covering, grown and feathered by ~5 px at these face sizes
            holes |= cv2.dilate(f.mask, np.ones((15, 15), np.uint8)) > 0
        assert not changed[~holes].any()
    tracker.close()


@pytest.mark.skipif(not models_available(), reason="needs the shipped models in models/weights")
def test_carried_faces_look_like_the_faces_drawn_anew():
    # The shipped models (segmentation, inpainter, colour, border match): the carried frames differ
    # from drawing every face anew by a one-frame-old redraw of a face drifting 1 px a frame.
    frames = crowd_frames(8)
    outs = {}
    for cadence in (None, FULL_RATE_FACES):
        with Unmasker(method="model", max_faces=8, full_rate_faces=cadence) as u:
            outs[cadence] = [u.process(f, timestamp_ms=40.0 * k) for k, (f, _) in enumerate(frames)]
    assert any(f.carried for r in outs[FULL_RATE_FACES] for f in r.faces)
    for (frame, truth), full, crowd in zip(frames, outs[None], outs[FULL_RATE_FACES]):
        hole = truth > 0
        err = (full.image[hole].astype(np.float64) - crowd.image[hole]) ** 2
        assert 10 * np.log10(255 ** 2 / max(err.mean(), 1e-9)) > 30          # dB, in the coverings
        # The redrawn faces really differ from the input there (the comparison is not vacuous).
        assert np.abs(full.image[hole].astype(int) - frame[hole]).mean() > 10


def test_full_rate_faces_is_checked():
    with pytest.raises(ValueError, match="full_rate_faces"):
        oracle_unmasker(OracleSegmentation(everything=True), full_rate_faces=-1)
