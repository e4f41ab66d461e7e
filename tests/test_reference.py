"""The own-face path (stream.reference): a reference photo or the person's own unmasked frames.

Ground truth: the astronaut's unmasked photo is the truth under the pasted mask.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from stream import Unmasker
from stream.reference import ReferenceFace, canonical_mesh, facing_triangles, warp_mesh
from stream.unmasker import models_available
from tests.faces import astronaut, astronaut_landmarks, masked_astronaut

needs_models = pytest.mark.skipif(not models_available(), reason="shipped models missing from models/weights")


@pytest.fixture(scope="module")
def identity():
    """Cosine to the true astronaut by a face embedding the project never trains with.

    Pixel PSNR is the wrong judge here: it prefers a blurry average to the person's own,
    slightly misaligned, mouth. Measured on this image: masked input 0.65, the generative
    path 0.53-0.57 (it removes identity), the reference path 0.74-0.79.
    """
    from training.evaluate_real import EMBEDDING, Embedder
    if not EMBEDDING.exists():
        pytest.skip(f"the evaluation embedding is not here ({EMBEDDING}; it is in ../shared/weights)")
    embed = Embedder()
    lm = astronaut_landmarks()
    truth = embed(astronaut(), lm)
    return lambda image: float(embed(image, lm) @ truth)


def mean_delta_e(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    from skimage.color import deltaE_ciede2000, rgb2lab
    sel = mask > 0
    lab = lambda im: rgb2lab(im[sel][:, ::-1].reshape(-1, 1, 3)).reshape(-1, 3).mean(0)
    return float(deltaE_ciede2000(lab(a)[None], lab(b)[None])[0])


def test_the_canonical_mesh_faces_the_camera_on_a_frontal_face():
    tris, verts = canonical_mesh()
    assert tris.shape == (898, 3) and verts.shape == (468, 3) and tris.max() == 467
    assert facing_triangles(astronaut_landmarks()).mean() > 0.85
    # The same face seen from behind (mirrored points, same triangles) faces away everywhere.
    back = astronaut_landmarks().copy()
    back[:, 0] = -back[:, 0]
    assert facing_triangles(back).mean() < 0.05


def test_triangles_left_out_are_never_drawn_nor_filled_from_their_neighbours():
    """Turned-away triangles are left out; inside the face's outline nothing else may paint there
    (the generative fill shows), while past the outline the edge triangles are carried on."""
    lm = astronaut_landmarks()
    tris, _ = canonical_mesh()
    nose_x = lm[1, 0]
    use = facing_triangles(lm) & (lm[tris].mean(axis=1)[:, 0] < nose_x)     # the far half "turned away"
    _, covered = warp_mesh(astronaut(), lm, lm, 512, use)
    outline = np.zeros((512, 512), np.uint8)
    cv2.fillConvexPoly(outline, cv2.convexHull(np.round(lm).astype(np.int32)), 1)
    far_inside = (outline > 0) & (np.arange(512)[None, :] > nose_x + 12)
    assert far_inside.sum() > 1500
    assert covered[far_inside].mean() < 0.02, covered[far_inside].mean()   # triangles straddling the cut line
    near_inside = (outline > 0) & (np.arange(512)[None, :] < nose_x - 12)
    assert covered[near_inside].mean() > 0.97


def test_reference_photo_errors_are_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match="cannot read the reference photo"):
        ReferenceFace.from_image(tmp_path / "missing.jpg")
    blank = np.full((200, 200, 3), 127, np.uint8)
    with pytest.raises(ValueError, match="no face found"):
        ReferenceFace.from_image(blank)


@needs_models
def test_a_reference_photo_shows_the_persons_own_lower_face(identity):
    img, gt = masked_astronaut()
    truth = astronaut()
    with Unmasker() as plain:
        generative = plain.process(img)
    # A different photo of her: mirrored (another pose for an asymmetric face) and in other light.
    other = np.clip(truth[:, ::-1] * np.float32([0.7, 0.75, 0.8]), 0, 255).astype(np.uint8)
    with Unmasker(reference=other) as um:
        res = um.process(img)
    assert res.faces[0].reconstruction == "reference"
    assert generative.faces[0].reconstruction == "generative"
    ours, gen, masked = identity(res.image), identity(generative.image), identity(img)
    assert ours > masked + 0.05 and ours > gen + 0.15, (ours, gen, masked)   # measured 0.74 / 0.57 / 0.65
    # Outside the blended covering the frame is untouched.
    grown = cv2.dilate(res.faces[0].mask, np.ones((41, 41), np.uint8))
    assert not ((res.image != img).any(axis=2) & (grown == 0)).any()


@needs_models
def test_relighting_takes_the_reference_to_the_frames_light():
    img, gt = masked_astronaut()
    truth = astronaut()
    dark = np.clip(truth * 0.55, 0, 255).astype(np.uint8)      # the reference shot in far dimmer light
    with Unmasker(reference=truth) as um:
        same_light = um.process(img).image
    with Unmasker(reference=dark) as um:
        relit = um.process(img).image
    assert mean_delta_e(dark, truth, gt) > 15                  # unrelit, the step would be glaring
    # Measured 3.9. A pure x0.55 of the 8-bit values is what a per-channel gain (the first relighting)
    # fits exactly (2.0), but on real photo pairs an additive CIELAB offset lands nearer the true face
    # (held-out hole colour 7.1 -> 5.2 ΔE), so that is what ships.
    assert mean_delta_e(relit, same_light, gt) < 4.5
    assert mean_delta_e(same_light, truth, gt) < 4.0           # measured 2.7 (the mouth's shape differs)


@needs_models
def test_reference_for_one_track_and_clearing_it():
    img, _ = masked_astronaut()
    with Unmasker() as um:
        um.set_reference(astronaut(), track_id=7)            # no such track: the main face is generative
        assert um.process(img).faces[0].reconstruction == "generative"
        um.set_reference(astronaut())
        assert um.process(img).faces[0].reconstruction == "reference"
        um.clear_reference()
        assert um.process(img).faces[0].reconstruction == "generative"


@needs_models
def test_enrolment_keeps_a_persons_unmasked_view_for_when_the_mask_goes_on(tmp_path, identity):
    img, gt = masked_astronaut()
    truth = astronaut()
    frames = [truth] * 12 + [img] * 8
    with Unmasker(enrol="auto") as um:
        for i, f in enumerate(frames):
            res = um.process(f, timestamp_ms=i * 40.0)
        assert res.faces[0].reconstruction == "enrolled"
        enrolled = um.enrolled()
        assert len(enrolled) == 1
        assert identity(res.image) > identity(img) + 0.05   # her own face, not a generic one
        assert list(tmp_path.iterdir()) == []             # memory only, unless asked:
        written = um.save_enrolled(tmp_path)
        assert [p.name for p in written] == [f"track_{res.faces[0].track_id}.png"]
    with Unmasker() as um:                                # enrolment off by default
        for i, f in enumerate(frames):
            res = um.process(f, timestamp_ms=i * 40.0)
        assert res.faces[0].reconstruction == "generative"


def test_unknown_enrol_mode_is_rejected():
    with pytest.raises(ValueError, match="enrol"):
        Unmasker(method="classical", enrol="always")


# -- the command line ---------------------------------------------------------------
def test_cli_reference_photo_and_its_errors(tmp_path):
    from tests.faces import make_face_clip
    from tests.test_cli import one_line_error, run_cli
    clip = make_face_clip(tmp_path / "faces.mp4", n=6, audio=False)
    photo = tmp_path / "me.png"
    cv2.imwrite(str(photo), astronaut())
    out = tmp_path / "out.mp4"
    ok = run_cli("--source", clip, "--output", out, "--no-display", "--reference", photo)
    assert ok.returncode == 0, ok.stderr
    assert out.exists()
    assert "error:" in one_line_error(run_cli("--source", clip, "--no-display", "--reference",
                                              tmp_path / "nobody.png"))
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((100, 100, 3), 120, np.uint8))
    assert "no face found" in one_line_error(run_cli("--source", clip, "--no-display", "--reference", blank))
    assert "--enrol auto" in one_line_error(run_cli("--source", clip, "--no-display",
                                                    "--save-enrolled", tmp_path / "e"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.png").write_bytes(b"x")
    assert "--overwrite" in one_line_error(run_cli("--source", clip, "--no-display", "--enrol", "auto",
                                                   "--save-enrolled", tmp_path / "full"))


@needs_models
def test_a_lone_person_keeps_their_enrolment_across_a_lost_track():
    img, _ = masked_astronaut()
    truth = astronaut()
    blank = np.full_like(truth, 90)
    frames = [truth] * 12 + [blank] * 10 + [img] * 6          # seen unmasked, gone 0.4 s, back masked
    with Unmasker(enrol="auto") as um:
        ids = set()
        for i, f in enumerate(frames):
            res = um.process(f, timestamp_ms=i * 40.0)
            ids |= {x.track_id for x in res.faces}
        assert len(ids) == 2                                   # a new track...
        assert res.faces[0].reconstruction == "enrolled"       # ... that kept her own face


@needs_models
def test_an_enrolment_is_never_carried_to_someone_else():
    from tests.faces import side_by_side
    img, _ = masked_astronaut()
    truth = astronaut()
    blank = np.full_like(side_by_side(truth, truth), 90)
    left_only = blank.copy()
    left_only[:, :truth.shape[1]] = truth
    right_only = blank.copy()
    right_only[:, -truth.shape[1]:] = img
    # Enrolled on the left; after she leaves, a masked face comes in alone on the right: not her place.
    with Unmasker(enrol="auto", max_faces=4) as um:
        for i, f in enumerate([left_only] * 12 + [blank] * 10 + [right_only] * 10):
            res = um.process(f, timestamp_ms=i * 40.0)
        assert len(res.faces) == 1 and res.faces[0].reconstruction == "generative"
    # ... and with two masked faces, the one on the right never gets her face.
    with Unmasker(enrol="auto", max_faces=4) as um:
        for i, f in enumerate([left_only] * 12 + [blank] * 10 + [side_by_side(img, img)] * 12):
            res = um.process(f, timestamp_ms=i * 40.0)
            right = [x for x in res.faces if x.box[0] > truth.shape[1]]
            assert all(x.reconstruction == "generative" for x in right)
        assert len(res.faces) == 2


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 7, 14, 28])
def test_disc_dilation_by_rectangles_equals_opencvs_elliptic_kernel(radius):
    from stream.reference import _dilate_disc
    rng = np.random.default_rng(radius)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    for mask in ((rng.random((96, 128)) > 0.997).astype(np.uint8),
                 cv2.circle(np.zeros((128, 128), np.uint8), (64, 80), 30, 1, -1)):
        np.testing.assert_array_equal(_dilate_disc(mask, radius), cv2.dilate(mask, kernel))


def test_the_border_match_removes_a_step_at_the_hole_border_and_leaves_the_inside_alone():
    from stream.reference import SEAM_OFFSET_MAX, match_border
    from training.metrics import border_seam
    size = 128
    hole = np.zeros((size, size), np.float32)
    hole[40:110, 24:104] = 1.0
    covered = np.ones((size, size), bool)
    frame = np.full((size, size, 3), (120, 140, 170), np.uint8)          # the frame's skin around the hole
    drawn = np.full((size, size, 3), (132, 150, 178), np.float32)        # the render, 8-12 levels off
    out, offset = match_border(drawn, covered, frame, hole)
    just_outside = (cv2.dilate((hole > 0.5).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & (hole <= 0.5)
    np.testing.assert_allclose(out[just_outside], frame[just_outside].astype(np.float32), atol=1.5)
    np.testing.assert_allclose(out[75, 64], drawn[75, 64], atol=0.05)  # the middle of the hole: untouched
    pasted = lambda img: np.where(hole[..., None] > 0.5, np.clip(img + 0.5, 0, 255).astype(np.uint8), frame)
    assert border_seam(pasted(out), frame, hole)["colour_step"] < 0.25 * border_seam(pasted(drawn), frame, hole)["colour_step"]
    # A ring pixel that is not skin in one image (hair, the mask's fringe) moves the render at most
    # SEAM_OFFSET_MAX levels.
    far = np.full((size, size, 3), (10, 10, 10), np.uint8)
    _, offset = match_border(drawn, covered, far, hole)
    assert np.abs(offset).max() <= SEAM_OFFSET_MAX + 1e-3



def test_the_generative_fills_border_is_matched_to_the_frame_just_outside_the_hole():
    # Where the reference has no texture the generative fill shows; it has no pixels outside the
    # hole to compare (there it is the frame), so its inner ring is taken to the frame's outer ring.
    from stream.reference import match_fallback_border
    from training.metrics import border_seam
    size = 128
    hole = np.zeros((size, size), np.float32)
    hole[40:110, 24:104] = 1.0
    frame = np.full((size, size, 3), (120, 140, 170), np.uint8)
    inside = hole[..., None] > 0.5
    blended = np.where(inside, np.float32([140, 150, 185]), frame.astype(np.float32)).astype(np.float32)
    offset, _ = match_fallback_border(blended, frame, hole)
    assert not offset[~inside[..., 0]].any()                            # nothing outside the hole
    np.testing.assert_allclose(offset[75, 64], 0.0, atol=0.05)           # the middle of the hole: untouched
    fixed = blended + offset
    inner = (hole > 0.5) & ~(cv2.erode((hole > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)
    np.testing.assert_allclose(fixed[inner].mean(0), frame[0, 0].astype(np.float32), atol=4.0)
    pasted = lambda img: np.clip(img + 0.5, 0, 255).astype(np.uint8)
    assert border_seam(pasted(fixed), frame, hole)["colour_step"] < 0.3 * border_seam(pasted(blended), frame, hole)["colour_step"]


@needs_models
def test_a_large_face_rendered_at_the_frames_resolution_is_sharper(identity):
    # The astronaut at twice her size (a ~400 px face): her window spans ~2x its 128 px, so by
    # default her reference is drawn at ~256 px; reference_px=128 draws it in the window.
    img, gt = masked_astronaut()
    big = lambda x, interp=cv2.INTER_CUBIC: cv2.resize(x, None, fx=2, fy=2, interpolation=interp)
    frame, covering, truth = big(img), big(gt, cv2.INTER_NEAREST) > 0, big(astronaut())
    outputs = {}
    for px in (128, None):
        with Unmasker(reference=truth, reference_px=px) as um:
            res = um.process(frame)
        assert res.faces[0].reconstruction == "reference"
        outputs[px] = res.image
    detail = lambda x: float(cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY), cv2.CV_32F)[covering].std())
    # Fine detail (the Laplacian's spread inside the covering), measured: through the 128-px window
    # 5.3, at the frame's resolution 7.4, the true face 6.6: nearer the truth's, where the window's is soft.
    d_window, d_frame, d_truth = detail(outputs[128]), detail(outputs[None]), detail(truth)
    assert d_frame > 1.2 * d_window
    assert abs(d_frame - d_truth) < 0.75 * abs(d_window - d_truth)      # measured 0.80 against 1.32
    small = lambda x: cv2.resize(x, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    assert identity(small(outputs[None])) > identity(small(outputs[128])) - 0.03
    # Still nothing changes far outside the covering.
    grown = cv2.dilate(covering.astype(np.uint8), np.ones((81, 81), np.uint8)) > 0
    assert not ((outputs[None] != frame).any(axis=2) & ~grown).any()


@needs_models
def test_in_video_the_own_faces_light_follows_the_frame_and_holds_still_between_updates(monkeypatch):
    # Video solves the lighting on every LIGHT_EVERY-th frame only (the frames between add the last
    # correction). On a still face that must not add flicker to what solving every frame gives, and
    # when the light changes it must reach what a fresh still-image solve gives within about a
    # second (25 frames).
    import stream.reference as reference
    assert reference.LIGHT_EVERY > 1         # what this test is about
    img, gt = masked_astronaut()
    big = lambda x, interp=cv2.INTER_CUBIC: cv2.resize(x, None, fx=2, fy=2, interpolation=interp)
    frame, covering, truth = big(img), big(gt, cv2.INTER_NEAREST) > 0, big(astronaut())
    dim = np.clip(frame * 0.7, 0, 255).astype(np.uint8)
    with Unmasker(reference=truth) as um:                     # still image: solved from scratch
        still_dim = um.process(dim).image

    def video(frames):
        outputs = []
        with Unmasker(mode="video", reference=truth) as um:
            for i, f in enumerate(frames):
                res = um.process(f, timestamp_ms=40.0 * i)
                assert res.faces and res.faces[0].reconstruction == "reference"
                outputs.append(res.image[covering].astype(np.float32))
        return outputs
    change = lambda outs: float(np.mean([np.abs(a - b).mean() for a, b in zip(outs[5:13], outs[6:14])]))
    amortised = video([frame] * 14 + [dim] * 25)
    monkeypatch.setattr(reference, "LIGHT_EVERY", 1)
    every_frame = video([frame] * 14)
    # Measured: 0.85 and 0.84 levels a frame (the landmarks' jitter, not the lighting).
    assert change(amortised) < 1.1 * change(every_frame) + 0.05
    # The light drops by 30 %: the first dim frame still carries the bright correction; 25 frames
    # on, the hole's colour is the still-image solve's (measured: ΔE 15.7 -> 0.6).
    mask = covering.astype(np.uint8)
    as_image = lambda values: _on(frame, covering, values)
    first, last = mean_delta_e(as_image(amortised[14]), still_dim, mask), mean_delta_e(as_image(amortised[-1]), still_dim, mask)
    assert last < 1.5 and first > 2 * last, (first, last)


def _on(frame: np.ndarray, where: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`frame` with the pixels `where` set to `values` (an image for mean_delta_e)."""
    out = frame.copy()
    out[where] = np.clip(values + 0.5, 0, 255).astype(np.uint8)
    return out


@needs_models
def test_an_enrolled_view_is_drawn_at_the_frames_resolution_as_sharply_as_a_photo():
    # An enrolled view keeps no frame, only its lower face: at the sizes the compositor draws at
    # (up to the face's own span), so a large enrolled face is as sharp as one from a photo.
    img, gt = masked_astronaut()
    big = lambda x, interp=cv2.INTER_CUBIC: cv2.resize(x, None, fx=2, fy=2, interpolation=interp)
    frame, covering, truth = big(img), big(gt, cv2.INTER_NEAREST) > 0, big(astronaut())
    detail = lambda x: float(cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY), cv2.CV_32F)[covering].std())
    with Unmasker(enrol="auto") as um:
        for i, f in enumerate([truth] * 12 + [frame] * 4):
            res = um.process(f, timestamp_ms=i * 40.0)
        assert res.faces[0].reconstruction == "enrolled"
        enrolled = next(iter(um.enrolled().values()))
        assert enrolled.image is None                      # the frame itself is not kept
        enrolled_out = res.image
    with Unmasker(reference=truth) as um:
        photo_out = um.process(frame).image
    with Unmasker(enrol="auto", reference_px=128) as um:   # drawn in the window
        for i, f in enumerate([truth] * 12 + [frame] * 4):
            window_out = um.process(f, timestamp_ms=i * 40.0).image
    # Measured: window 5.0, enrolled at the frame's resolution 7.6, the photo 7.4 (truth 6.6).
    assert detail(enrolled_out) > 1.2 * detail(window_out)
    assert abs(detail(enrolled_out) - detail(photo_out)) < 0.1 * detail(photo_out)


def test_the_generated_fill_meets_the_face_and_the_background_each_its_own():
    # A fill 20 levels lighter than the face around it, in a hole whose right side reaches past the
    # face's outline onto a green background, where the network drew grey: on the face the inner ring
    # moves toward the face's skin (GENERATED_BORDER_MATCH of the step), past the outline toward the
    # background; neither is pulled toward the other.
    from stream.alignment import FACE_OVAL
    from stream.compositing import GENERATED_BORDER_MATCH, match_generated_borders
    size = 128
    points = np.zeros((468, 2), np.float32)
    angles = np.linspace(0, 2 * np.pi, len(FACE_OVAL), endpoint=False)
    points[FACE_OVAL] = np.stack([54 + 40 * np.cos(angles), 64 + 56 * np.sin(angles)], 1)   # face: x 14..94
    yy, xx = np.mgrid[:size, :size]
    face = ((xx - 54) / 40.0) ** 2 + ((yy - 64) / 56.0) ** 2 <= 1
    window = np.where(face[..., None], np.uint8([120, 140, 170]), np.uint8([40, 90, 40])).astype(np.uint8)
    hole = np.zeros((size, size), np.float32)
    hole[60:100, 30:120] = 1.0                                # its right end is on the background
    inside = hole > 0.5
    fill = np.where(inside[..., None], np.clip(window.astype(int) + 20, 0, 255), window).astype(np.uint8)
    fill[inside & ~face] = (60, 60, 60)                       # what the network drew past the face
    out = match_generated_borders(fill[None], window[None], hole[None], points[None])[0]
    assert (out[~inside] == fill[~inside]).all()              # only the hole changes
    np.testing.assert_array_equal(out[80, 60], fill[80, 60])  # deep inside: as drawn
    moved = fill[60:62, 40:80].reshape(-1, 3).astype(float).mean(0) - out[60:62, 40:80].reshape(-1, 3).astype(float).mean(0)
    # Toward the skin by GENERATED_BORDER_MATCH of the step, a little less on the ring's inner pixels
    # (the offset fades into the hole); not toward the green.
    assert (moved >= 0.65 * GENERATED_BORDER_MATCH * 20).all() and (moved <= GENERATED_BORDER_MATCH * 20 + 1).all()
    past = out[60:62, 104:116].reshape(-1, 3).astype(float).mean(0)      # top ring, past the outline
    green = np.float32([40, 90, 40]) - np.float32([60, 60, 60])
    assert 0.5 * GENERATED_BORDER_MATCH < ((past - 60) @ green) / (green @ green) <= 1.05 * GENERATED_BORDER_MATCH


def test_the_finished_own_face_meets_the_face_around_the_hole():
    # A finished own-face render 20 levels lighter than the face around the hole (what a colour
    # correction's mean shift can leave at the border): its inner ring is moved REFERENCE_BORDER_MATCH
    # of the way to the face, and the move joins the correction that the unlit frames and the
    # frame-resolution render reuse; deep inside the hole and outside it nothing changes.
    from stream.alignment import FACE_OVAL
    from stream.reference import REFERENCE_BORDER_MATCH
    ref = ReferenceFace.from_image(astronaut())
    size = 128
    points = np.zeros((468, 2), np.float32)
    angles = np.linspace(0, 2 * np.pi, len(FACE_OVAL), endpoint=False)
    points[FACE_OVAL] = np.stack([64 + 48 * np.cos(angles), 64 + 60 * np.sin(angles)], 1)
    frame = np.full((size, size, 3), (120, 140, 170), np.uint8)
    hole = np.zeros((size, size), np.float32)
    hole[60:110, 30:98] = 1.0
    inside = hole > 0.5
    lit = np.where(inside[..., None], np.float32([140, 160, 190]), frame.astype(np.float32)).astype(np.float32)
    weights = (inside.astype(np.float32), 1 - inside.astype(np.float32))
    zero = np.zeros((size, size, 3), np.float32)
    out, correction, fallback_fix = ref._meet_the_border(lit, zero.copy(), frame, zero.copy(), weights, frame,
                                                         hole, points, smooth=True)
    assert not (out - lit)[~inside].any()                                 # only the hole
    np.testing.assert_allclose(out[85, 64], lit[85, 64], atol=0.05)       # deep inside: as rendered
    ring = inside & ~(cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0) & (np.arange(size)[:, None] < 62)
    np.testing.assert_allclose((lit - out)[ring].mean(0), REFERENCE_BORDER_MATCH * 20, atol=2.5)
    np.testing.assert_allclose(correction, out - lit, atol=1e-4)          # carried with the correction
    np.testing.assert_array_equal(ref._correction, correction)
