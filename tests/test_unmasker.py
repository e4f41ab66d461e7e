"""The library API contract (stream.Unmasker) on permissively licensed faces."""
import numpy as np
import pytest

from stream import Face, Result, Unmasker
from stream.unmasker import models_available
from tests.faces import astronaut, iou, masked_astronaut, side_by_side

# The shipped models are committed in models/weights: a checkout without them is broken, and
# the model tests fail (they are never skipped).
needs_models = pytest.mark.usefixtures("shipped_models")


@pytest.fixture(scope="session")
def shipped_models():
    assert models_available(), "the shipped models are missing from models/weights"


# Reconstruction inside the covering, against the astronaut's real (unmasked) lower face, in PSNR
# over the ground-truth covering mask (3 channels). Measured on 2026-12-02 with the shipped
# inpainter_fast (hole PSNR 21.1 dB on the test split): model 19.2 dB; the classical cv2.inpaint
# baseline 12.7 dB; a flat grey fill 12.1 dB; even filling the hole with the true face's own mean
# colour reaches only 18.5 dB. With the frame-resolution hole (eyes and brows kept, issue 14):
# model 19.3 dB, classical 14.0 dB. The threshold sits between the baseline and the model with
# margin on both sides: a grey or blurry inpainter cannot pass it.
HOLE_PSNR_THRESHOLD_DB = 17.0


def hole_psnr(image: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    diff = image[hole].astype(np.float64) - truth[hole].astype(np.float64)
    return float(10 * np.log10(255.0 ** 2 / np.mean(diff ** 2)))


@pytest.fixture(scope="module")
def um():
    with Unmasker() as u:
        yield u


def outside(mask_union: np.ndarray, result_image, original) -> int:
    """How many pixels changed outside the union of the faces' masks (dilated as blended)."""
    import cv2
    grown = cv2.dilate(mask_union, np.ones((41, 41), np.uint8))
    changed = (result_image != original).any(axis=2)
    return int((changed & (grown == 0)).sum())


@needs_models
def test_default_is_the_model_method_on_onnxruntime(um):
    assert um.method == "model"
    assert um.backend == "onnxruntime"


@needs_models
def test_result_contract_on_a_masked_face(um):
    img, gt = masked_astronaut()
    res = um.process(img)
    assert isinstance(res, Result)
    assert res.image.shape == img.shape and res.image.dtype == np.uint8
    assert len(res.faces) == 1
    f = res.faces[0]
    assert isinstance(f, Face)
    assert isinstance(f.box, tuple) and len(f.box) == 4 and all(isinstance(v, int) for v in f.box)
    x0, y0, x1, y1 = f.box
    assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0]
    assert f.landmarks.shape == (468, 2) and f.landmarks.dtype == np.float32
    assert f.mask.shape == img.shape[:2] and f.mask.dtype == np.uint8
    assert set(np.unique(f.mask)) <= {0, 255}
    assert f.gender in ("female", "male") and 0.5 <= f.gender_score <= 1.0
    assert isinstance(f.track_id, int)
    # The covering is found, where it really is.
    assert f.masked
    assert iou(f.mask, gt) > 0.6
    # Something was redrawn under the mask, and nothing changed outside it.
    assert (res.image[gt > 0] != img[gt > 0]).any(axis=1).mean() > 0.5
    assert outside(f.mask, res.image, img) == 0


@needs_models
def test_the_reconstruction_is_close_to_the_real_face_under_the_mask(um):
    img, gt = masked_astronaut()
    psnr = hole_psnr(um.process(img).image, astronaut(), gt > 0)
    assert psnr > HOLE_PSNR_THRESHOLD_DB, f"hole PSNR {psnr:.2f} dB"


def test_the_classical_baseline_cannot_reach_the_threshold():
    # What makes the threshold meaningful: cv2.inpaint (and a grey fill) stay below it.
    img, gt = masked_astronaut()
    with Unmasker(method="classical") as u:
        psnr = hole_psnr(u.process(img).image, astronaut(), gt > 0)
    grey = img.copy()
    grey[gt > 0] = 128
    assert psnr < HOLE_PSNR_THRESHOLD_DB - 2.0, f"classical hole PSNR {psnr:.2f} dB"
    assert hole_psnr(grey, astronaut(), gt > 0) < HOLE_PSNR_THRESHOLD_DB - 2.0


@needs_models
def test_still_images_have_no_temporal_state(um):
    img, _ = masked_astronaut()
    a = um.process(img)
    b = um.process(img)
    np.testing.assert_array_equal(a.image, b.image)


@needs_models
def test_unmasked_face_is_left_alone(um):
    img = astronaut()
    res = um.process(img)
    assert len(res.faces) == 1
    f = res.faces[0]
    assert not f.masked
    np.testing.assert_array_equal(res.image, img)


@needs_models
def test_no_face_returns_the_frame_unchanged(um):
    img = np.full((240, 320, 3), 127, np.uint8)
    res = um.process(img)
    assert res.faces == []
    np.testing.assert_array_equal(res.image, img)
    assert res.image is not img   # a copy: the caller's frame is never aliased


@needs_models
def test_input_is_never_modified(um):
    img, _ = masked_astronaut()
    before = img.copy()
    um.process(img)
    np.testing.assert_array_equal(img, before)


@needs_models
def test_bad_frames_raise_value_error(um):
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), "frame"):
        with pytest.raises(ValueError):
            um.process(bad)


@needs_models
def test_video_timestamps_must_increase():
    img, _ = masked_astronaut()
    with Unmasker() as u:
        u.process(img, timestamp_ms=100)
        with pytest.raises(ValueError):
            u.process(img, timestamp_ms=100)
        u.reset()                      # forgetting state allows starting over
        u.process(img, timestamp_ms=0)


@needs_models
def test_video_track_ids_are_stable_and_new_after_the_face_leaves():
    img, _ = masked_astronaut()
    blank = np.full_like(img, 60)
    with Unmasker() as u:
        ids = [u.process(img, timestamp_ms=t * 40).faces[0].track_id for t in range(5)]
        assert len(set(ids)) == 1
        for t in range(5, 15):         # gone long enough for the track to be dropped
            assert u.process(blank, timestamp_ms=t * 40).faces == []
        again = u.process(img, timestamp_ms=15 * 40).faces
        assert len(again) == 1 and again[0].track_id != ids[0]


@needs_models
def test_several_faces_are_tracked_and_redrawn():
    img, gt = masked_astronaut()
    two = side_by_side(img, img)
    with Unmasker(max_faces=2) as u:
        res = u.process(two)
    assert len(res.faces) == 2
    assert len({f.track_id for f in res.faces}) == 2
    assert all(f.masked for f in res.faces)
    union = np.maximum(res.faces[0].mask, res.faces[1].mask)
    assert outside(union, res.image, two) == 0
    left, right = sorted(res.faces, key=lambda f: f.box[0])
    assert left.box[2] < img.shape[1] < right.box[0]
    with Unmasker(max_faces=1) as u:
        assert len(u.process(two).faces) == 1


def test_classical_baseline_is_labelled_and_confined_to_the_lower_face():
    img, gt = masked_astronaut()
    with Unmasker(method="classical") as u:
        assert u.method == "classical"
        res = u.process(img)
    f = res.faces[0]
    assert f.gender == "unknown"
    assert iou(f.mask, gt) > 0.3      # a landmark polygon, not a segmentation
    assert outside(f.mask, res.image, img) == 0


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError):
        Unmasker(method="magic")


def test_running_mode_is_fixed_at_construction():
    img, _ = masked_astronaut()
    with Unmasker(method="classical", mode="image") as u:
        assert len(u.process(img).faces) == 1
        with pytest.raises(ValueError, match="image mode"):
            u.process(img, timestamp_ms=0)
    with Unmasker(method="classical", mode="video") as u:
        assert len(u.process(img, timestamp_ms=0).faces) == 1
        with pytest.raises(ValueError, match="video mode"):
            u.process(img)
    with pytest.raises(ValueError):
        Unmasker(method="classical", mode="stream")


def test_the_cpu_path_returns_arrays_only():
    img, _ = masked_astronaut()
    with Unmasker(method="classical") as u:
        with pytest.raises(ValueError, match="as_tensor"):
            u.process(img, as_tensor=True)


def test_stages_can_be_composed_and_are_called_through_their_interfaces():
    """A stage is replaced by passing it in: here a reconstructor that paints the hole flat grey."""
    from stream.analyser import LowerFaceAnalyser
    from stream.compositing import CpuCompositor

    class Grey:
        name, window_size = "grey", 128

        def inpaint(self, windows, holes, landmark_maps, genders):
            out = windows.copy()
            out[holes > 0.5] = 128
            return out

        def close(self):
            pass

    img, _ = masked_astronaut()
    with Unmasker(analyser=LowerFaceAnalyser(), compositor=CpuCompositor(Grey())) as u:
        assert u.method == "classical" and u.backend == "opencv" and isinstance(u.compositor.reconstructor, Grey)
        res = u.process(img)
    f = res.faces[0]
    assert f.masked
    inner = (f.mask > 0) & (cv2_erode(f.mask, 15) > 0)       # well inside the blended hole
    assert inner.sum() > 1000 and (res.image[inner] == 128).all()
    assert outside(f.mask, res.image, img) == 0
    with pytest.raises(ValueError):
        Unmasker(analyser=LowerFaceAnalyser())


def cv2_erode(mask, k):
    import cv2
    return cv2.erode(mask, np.ones((k, k), np.uint8))


class _ScriptedTracker:
    """A tracker that reports one face (track 0) in the first frames and loses it after."""

    def __init__(self, present: int):
        from stream.alignment import load_canonical_shape
        self.present, self.frame, self.alive = present, 0, set()
        self.shape = load_canonical_shape() + [100.0, 60.0]

    def process(self, image_bgr):
        from stream.tracking import TrackedFace
        i, self.frame = self.frame, self.frame + 1
        if i >= self.present:
            self.alive = set()
            return []
        self.alive = {0}
        lm = (self.shape + 3.0 * np.sin(np.arange(468)[:, None] + i)).astype(np.float32)   # jitter to smooth
        return [TrackedFace(0, lm, (100, 60, 356, 316), "mesh", 1.0, i == 0)]

    @property
    def active_track_ids(self):
        return set(self.alive)

    def close(self):
        pass


def test_finishing_a_frame_after_the_tracker_ran_ahead_keeps_that_frames_track_state():
    # The pipeline tracks frame n+1 before frame n is finished. If the face is lost in n+1, frame n
    # must still be finished with its track's smoothing state, exactly as process() would.
    frames = [np.full((400, 480, 3), 120, np.uint8) for _ in range(3)]

    def unmasker():
        return Unmasker(method="classical", make_tracker=lambda mode: _ScriptedTracker(present=2))

    with unmasker() as seq:
        expected = [seq.process(f, timestamp_ms=40.0 * i) for i, f in enumerate(frames)]
    with unmasker() as ahead:
        t0 = ahead.track_frame(frames[0], 0.0)
        r0 = ahead.finish_frame(t0)
        t1 = ahead.track_frame(frames[1], 40.0)
        t2 = ahead.track_frame(frames[2], 80.0)          # the face is gone in the frame tracked ahead
        r1, r2 = ahead.finish_frame(t1), ahead.finish_frame(t2)
    for got, want in zip((r0, r1, r2), expected):
        assert len(got.faces) == len(want.faces)
        for a, b in zip(got.faces, want.faces):
            np.testing.assert_array_equal(a.landmarks, b.landmarks)
    # ... and frame 1's landmarks were smoothed (they differ from the tracker's raw ones).
    raw = _ScriptedTracker(2)
    raw.process(frames[0])
    assert not np.allclose(expected[1].faces[0].landmarks, raw.process(frames[1])[0].landmarks)


def _cut_clip():
    """Ten frames of the masked astronaut, then a cut to another shot of her, unmasked: lit from one
    side and a little to the side of where she was (the same track continues across it)."""
    masked, _ = masked_astronaut()
    frames = []
    for i in range(10):
        frame = np.full((480, 640, 3), 70, np.uint8)
        frame[40:440, 100 + 2 * i:500 + 2 * i] = masked[0:400, 56:456]
        frames.append(frame)
    after = np.full((480, 640, 3), 95, np.uint8)
    side_light = np.linspace(0.55, 1.35, 400, dtype=np.float32)[None, :, None]
    after[40:440, 150:550] = np.clip(astronaut()[0:400, 56:456] * side_light, 0, 255).astype(np.uint8)
    return frames, after


@needs_models
def test_a_cut_to_an_unmasked_face_redraws_nothing_on_its_first_frame(monkeypatch):
    import stream.face_state as face_state

    frames, after = _cut_clip()

    def first_frame_after_the_cut():
        with Unmasker() as um:
            for i, f in enumerate(frames):
                assert um.process(f, timestamp_ms=40.0 * i).faces[0].masked
            res = um.process(after, timestamp_ms=400.0)
            return res, um._states[res.faces[0].track_id]

    res, state = first_frame_after_the_cut()
    assert state.cuts == 1 and not res.faces[0].masked
    np.testing.assert_array_equal(res.image, after)       # the unmasked mouth is shown as it is
    # Without the cut test, the last shot's smoothed covering is drawn over her mouth for a frame.
    monkeypatch.setattr(face_state, "CUT_CHANGE", float("inf"))
    res, state = first_frame_after_the_cut()
    assert state.cuts == 0 and (res.image != after).any(axis=2).sum() > 5000


@needs_models
def test_a_moving_face_is_not_taken_for_a_cut():
    from tests.faces import face_clip_frames
    with Unmasker() as um:
        for i, (frame, _) in enumerate(face_clip_frames(30, step_px=6)):
            res = um.process(frame, timestamp_ms=40.0 * i)
        assert len(res.faces) == 1 and um._states[res.faces[0].track_id].cuts == 0
