"""Several people, several reference photos: each masked face gets its own person's photo.

Real faces from permissive sources: scikit-image's public-domain astronaut and two public-domain
official portraits (assets/real_faces/SOURCES.md), each covered by the bundled mask template.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest

from stream import Unmasker
from stream.unmasker import models_available
from tests.faces import astronaut, masked_astronaut, side_by_side
from training.real_grid import PHOTOS, cover, photo_landmarks

pytestmark = pytest.mark.skipif(not models_available(), reason="shipped models missing from models/weights")


@functools.lru_cache(maxsize=4)
def portrait(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(the photo at the astronaut's height, the same photo wearing a surgical mask)."""
    photo = cv2.imread(str(PHOTOS / f"{name}.jpg"))
    photo = cv2.resize(photo, None, fx=512 / photo.shape[0], fy=512 / photo.shape[0], interpolation=cv2.INTER_CUBIC)
    covered, _, _ = cover(photo, photo_landmarks(photo), "surgical_blue", seed=1)
    return photo, covered


def ids_left_to_right(faces) -> list:
    return [f.reference_id for f in sorted(faces, key=lambda f: f.box[0])]


def test_each_masked_face_gets_the_photo_of_its_own_person_whatever_the_order():
    congress, congress_masked = portrait("congress_T000193")
    frame = side_by_side(masked_astronaut()[0], congress_masked)
    with Unmasker() as um:
        um.set_references([astronaut(), congress])
        res = um.process(frame)
        assert ids_left_to_right(res.faces) == [0, 1]
        assert all(f.reconstruction == "reference" for f in res.faces)
        um.set_references([congress, astronaut()])
        assert ids_left_to_right(um.process(frame).faces) == [1, 0]
        # Nobody's photo: both faces generative again.
        um.clear_reference("all")
        res = um.process(frame)
        assert ids_left_to_right(res.faces) == [None, None]
        assert all(f.reconstruction == "generative" for f in res.faces)


def test_a_face_that_looks_like_none_of_the_photos_stays_generative():
    congress, congress_masked = portrait("congress_T000193")
    _, stranger_masked = portrait("congress_C001061")
    frame = side_by_side(masked_astronaut()[0], stranger_masked, congress_masked)
    with Unmasker(reference=[astronaut(), congress]) as um:
        res = um.process(frame)
    assert ids_left_to_right(res.faces) == [0, None, 1]
    assert [f.reconstruction for f in sorted(res.faces, key=lambda f: f.box[0])] == \
        ["reference", "generative", "reference"]


def test_in_video_each_track_keeps_its_persons_photo():
    congress, congress_masked = portrait("congress_T000193")
    frame = side_by_side(congress_masked, masked_astronaut()[0])
    with Unmasker(reference=[astronaut(), congress]) as um:
        frames = [um.process(frame, timestamp_ms=40.0 * i).faces for i in range(12)]
    # The tracker may find the second face a few frames later: a face may wait for its photo, but
    # never gets the other person's; then both keep theirs.
    for faces in frames:
        for f in faces:
            assert f.reference_id in (None, 1 if f.box[0] < congress.shape[1] else 0), ids_left_to_right(faces)
    assert all(ids_left_to_right(faces) == [1, 0] for faces in frames[-4:]), [ids_left_to_right(f) for f in frames]


def test_the_command_line_takes_one_reference_photo_per_person(tmp_path):
    from tests.test_cli import run_cli
    congress, congress_masked = portrait("congress_T000193")
    masked = masked_astronaut()[0]
    cv2.imwrite(str(tmp_path / "two.png"), side_by_side(masked, congress_masked))
    cv2.imwrite(str(tmp_path / "astronaut.png"), astronaut())
    cv2.imwrite(str(tmp_path / "congress.png"), congress)
    out = tmp_path / "out.png"
    r = run_cli("--source", tmp_path / "two.png", "--output", out, "--no-display",
                "--reference", tmp_path / "astronaut.png", "--reference", tmp_path / "congress.png")
    assert r.returncode == 0, r.stderr
    # Both faces drawn from their own photos: each looks more like the person (the face embedding,
    # against the uncovered photo) than a generative run's output does.
    from stream.identity import FaceEmbedder
    embed = FaceEmbedder()
    with Unmasker() as um:
        generative = um.process(side_by_side(masked, congress_masked)).image
    got = cv2.imread(str(out))
    w = masked.shape[1]
    for truth, part in ((astronaut(), slice(0, w)), (congress, slice(w + 40, None))):
        lm = photo_landmarks(truth)
        same = lambda img: float(embed(np.ascontiguousarray(img[:truth.shape[0], part]), lm) @ embed(truth, lm))
        assert same(got) > same(generative) + 0.05, (same(got), same(generative))
    missing = run_cli("--source", tmp_path / "two.png", "--output", tmp_path / "o2.png", "--no-display",
                      "--reference", tmp_path / "astronaut.png", "--reference", tmp_path / "nobody.png")
    assert missing.returncode != 0 and "nobody.png" in missing.stderr and "Traceback" not in missing.stderr


def test_the_assignment_rule_needs_similarity_and_a_clear_lead():
    from stream.unmasker import PERSON_MARGIN, PERSON_MIN_COSINE
    from training.evaluate_people import decide
    t, m = PERSON_MIN_COSINE, PERSON_MARGIN
    assert decide(np.array([t + 0.2, 0.0, 0.05]), t, m) == 0
    assert decide(np.array([0.0, t + 0.01, t + 0.01 - m / 2]), t, m) is None     # two photos alike: neither
    assert decide(np.array([t - 0.01, 0.0]), t, m) is None                        # not similar enough
    assert decide(np.array([t + 0.05]), t, m) == 0                                # one photo: no lead needed


def test_reference_px_needs_a_reference_and_a_sane_size(tmp_path):
    from tests.test_cli import run_cli
    cv2.imwrite(str(tmp_path / "face.png"), masked_astronaut()[0])
    cv2.imwrite(str(tmp_path / "me.png"), astronaut())
    base = ["--source", tmp_path / "face.png", "--output", tmp_path / "o.png", "--no-display"]
    alone = run_cli(*base, "--reference-px", "256")
    assert alone.returncode != 0 and "--reference-px needs --reference" in alone.stderr
    huge = run_cli(*base, "--reference", tmp_path / "me.png", "--reference-px", "5000")
    assert huge.returncode != 0 and "between 32 and 1024" in huge.stderr and "Traceback" not in huge.stderr
    ok = run_cli(*base, "--reference", tmp_path / "me.png", "--reference-px", "256")
    assert ok.returncode == 0, ok.stderr
    assert (cv2.imread(str(tmp_path / "o.png")) != masked_astronaut()[0]).any()
