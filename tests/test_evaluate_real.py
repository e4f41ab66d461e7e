"""The real-world evaluation's pieces against values known by construction."""
from __future__ import annotations

import numpy as np
import pytest

from training.data.prepare import REAL_SHARE, split_of

skimage_color = pytest.importorskip("skimage.color")


def test_the_real_split_is_a_fixed_share_of_the_extra_faces_only():
    keys = [f"utkx_{a}_{g}_{r}_2017{n:06d}" for a in range(1, 60) for g in (0, 1) for r in range(5)
            for n in range(4)]
    splits = [split_of(k, "utkface_extra") for k in keys]
    share = splits.count("real") / len(splits)
    assert abs(share - REAL_SHARE / 100) < 0.04
    assert splits == [split_of(k, "utkface_extra") for k in keys]          # decided by the name alone
    assert {"train", "val", "test"} <= set(splits)
    for dataset in ("utkface", "celebahq", "ffhq"):
        assert "real" not in {split_of(k, dataset) for k in keys}


def _patch_of_lab(L: float, a: float, b: float) -> np.ndarray:
    rgb = skimage_color.lab2rgb(np.array([[[L, a, b]]], np.float64))
    return np.full((256, 256, 3), np.round(rgb[0, 0, ::-1] * 255), np.uint8)   # BGR


@pytest.mark.parametrize("L,b,expected_bin", [(75, 12, "1 very light"), (60, 16, "3 intermediate"), (55, 20, "4 tan"),
                                              (45, 20, "5 brown"), (30, 15, "6 dark")])
def test_ita_of_a_uniform_skin_patch(L, b, expected_bin):
    from training.evaluate_real import ita_bin, ita_degrees
    lm = np.full((468, 2), 128.0, np.float32)
    ita = ita_degrees(_patch_of_lab(L, 10, b), lm)
    truth = np.degrees(np.arctan((L - 50) / b))
    assert abs(ita - truth) < 2.0
    assert ita_bin(ita) == expected_bin


def test_delta_e_and_mean_lab():
    from training.evaluate_real import delta_e, mean_lab
    a = _patch_of_lab(60, 12, 18)
    where = np.ones(a.shape[:2], bool)
    np.testing.assert_allclose(mean_lab(a, where), [60, 12, 18], atol=0.6)
    assert delta_e(mean_lab(a, where), mean_lab(a, where)) == 0.0
    # CIEDE2000 of a pure lightness step of 5 at L=60 is 5 / S_L (S_L = 1 + 0.015 (L-50)^2 / sqrt(20 + (L-50)^2)).
    s_l = 1 + 0.015 * 100 / np.sqrt(20 + 100)
    d = delta_e(np.array([62.5, 12, 18.0]), np.array([57.5, 12, 18.0]))
    assert abs(d - 5 / s_l) < 0.02


def test_top1_counts_faces_nearest_to_their_own_truth():
    from training.evaluate_real import _top1
    eye = np.eye(4, dtype=np.float32)
    rows = [dict(emb_true=eye[i], emb_x=eye[i if i < 3 else 0]) for i in range(4)]
    assert _top1(rows, "x") == 0.75


def test_same_person_protocol_picks_a_frontal_reference_one_gallery_photo_and_the_rest_as_probes():
    from training.evaluate_real import same_person_protocol
    identity = np.array([7, 7, 7, 7, 3, 3, 3, 9, 9])        # person 9 has two photos only
    yaw = np.array([0.5, -0.05, 0.3, -0.7, 0.2, 0.1, -0.4, 0.0, 0.1])
    keys = np.array([f"k{i}" for i in range(9)])
    roles = same_person_protocol(identity, yaw, keys)
    assert roles["reference"] == {3: 5, 7: 1}               # the most frontal photo of each person
    assert set(roles["gallery"]) == {3, 7} and 9 not in roles["reference"]
    for person, ref in roles["reference"].items():
        own = set(np.flatnonzero(identity == person))
        gallery = roles["gallery"][person]
        assert gallery in own and gallery != ref
        assert set(p for p in roles["probes"] if identity[p] == person) == own - {ref, gallery}
    assert 7 not in roles["probes"] and 8 not in roles["probes"]
    assert roles == same_person_protocol(identity, yaw, keys)  # decided by the data alone


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_identification_finds_the_own_person_in_a_shuffled_gallery():
    from training.evaluate_real import identification
    rng = np.random.default_rng(0)
    people = np.array([11, 4, 25, 8, 30])
    gallery = _unit(rng.normal(size=(5, 16)))
    order = np.array([3, 0, 4, 1, 2])                      # probes in another order than the gallery
    hit, cos = identification(gallery[order], people[order], gallery, people)
    assert hit.all() and np.allclose(cos, 1.0)
    shuffled = rng.permutation(5)                          # the same gallery, rows shuffled
    hit, cos = identification(gallery[order], people[order], gallery[shuffled], people[shuffled])
    assert hit.all() and np.allclose(cos, 1.0)
    # A probe nearer to someone else's photo than to its own is a miss, with its own cosine kept.
    probe = _unit(0.2 * gallery[0] + gallery[1])
    hit, cos = identification(probe[None], people[:1], gallery, people)
    assert not hit[0] and abs(cos[0] - float(probe @ gallery[0])) < 1e-6


def test_top1_in_a_smaller_gallery_counts_the_distractors_drawn():
    from training.evaluate_real import top1_in_smaller_gallery
    gallery = np.eye(6, dtype=np.float32)
    people = np.arange(6)
    probe = _unit([[0.5, 0.9, 0, 0, 0, 0]])               # own person 0, but person 1 looks closer
    assert top1_in_smaller_gallery(probe, people[:1], gallery, people, size=6) == 0.0
    assert top1_in_smaller_gallery(probe, people[:1], gallery, people, size=1) == 1.0
    # Gallery of 2: one distractor of the 5 others, person 1 one time in five.
    share = top1_in_smaller_gallery(probe, people[:1], gallery, people, size=2, draws=2000)
    assert abs(share - 0.8) < 0.03


def test_same_person_summary_by_method_and_yaw():
    from training.evaluate_real import SAME_PERSON_METHODS, summarise_same_person
    rng = np.random.default_rng(1)
    people = np.arange(10)
    gallery = _unit(rng.normal(size=(10, 32)))
    rows = []
    for k in range(20):
        p = k % 10
        row = dict(person=p, kind="cloth", yaw="frontal" if k < 12 else "~30 deg")
        row["emb_unmasked"] = gallery[p]                   # identical to the gallery photo
        row["emb_reference"] = gallery[p]
        row["emb_masked"] = gallery[(p + 1) % 10]          # always someone else
        row["emb_generative"] = gallery[p] if k < 12 else gallery[(p + 3) % 10]
        row["emb_own_face"] = _unit(gallery[p] + 0.1 * rng.normal(size=32))
        rows.append(row)
    m = summarise_same_person(rows, gallery, people)
    o = m["overall"]
    assert o["n"] == 20 and o["n_people"] == 10 and m["gallery_people"] == 10
    assert o["top1_unmasked"] == 1.0 and abs(o["cos_unmasked"] - 1.0) < 1e-6
    assert o["top1_masked"] == 0.0 and o["top1_own_face"] == 1.0
    assert o["top1_generative"] == 0.6
    assert m["by_yaw"]["frontal"]["top1_generative"] == 1.0 and m["by_yaw"]["~30 deg"]["top1_generative"] == 0.0
    assert m["by_yaw"]["frontal"]["n"] == 12
    for n in SAME_PERSON_METHODS:                          # gallery of 156 > 10 people: the whole gallery
        assert o[f"top1_{n}_gallery_156"] == o[f"top1_{n}"]
    assert "emb_masked" not in m["rows"][0] and m["rows"][0]["top1_unmasked"] is True


def test_same_person_labels_and_selection(tmp_path):
    from training.data.same_person import choose_photos, read_identities
    path = tmp_path / "identity_CelebA.txt"
    path.write_bytes(b"image identity\r\n000001.jpg 2880\r\n000002.jpg 12\r\n000003.jpg 2880\r\n"
                     b"000004.jpg 2880\r\n000005.jpg 12\r\n000006.jpg 2880\r\n")
    identity = read_identities(path)
    assert identity == {"000001.jpg": 2880, "000002.jpg": 12, "000003.jpg": 2880, "000004.jpg": 2880,
                        "000005.jpg": 12, "000006.jpg": 2880}
    files = ["000006.jpg", "000002.jpg", "000001.jpg", "000004.jpg", "000003.jpg", "000005.jpg", "other.jpg"]
    assert choose_photos(files, identity, per_person=3) == {2880: ["000001.jpg", "000003.jpg", "000004.jpg"]}


def test_same_person_evaluation_without_its_data_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    import training.data.same_person as same_person
    from training.evaluate import main
    monkeypatch.setattr(same_person, "SAME_PERSON", tmp_path / "missing")
    assert main(["--real", "--same-person", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training.data.same_person --source" in err[0] and "matush97/faceRecognition" in err[0]
    assert main(["--same-person", "--out", str(tmp_path / "out")]) == 2


def _hole(size=256, box=(78, 178)):
    hole = np.zeros((size, size), np.float32)
    hole[box[0]:box[1], box[0]:box[1]] = 1.0
    return hole


def test_border_seam_is_zero_for_the_true_face_and_measures_a_colour_step_exactly():
    from training.metrics import SEAM_BAND_PX, border_seam, delta_e
    rng = np.random.default_rng(0)
    truth = np.clip(_patch_of_lab(60, 12, 18).astype(int) + rng.integers(-6, 7, (256, 256, 1)), 0, 255).astype(np.uint8)
    hole = _hole()
    same = border_seam(truth.copy(), truth, hole)
    assert same == {"gradient": 0.0, "colour_step": 0.0}
    # A flat face with its hole redrawn 10 L* lighter: the step is the CIEDE2000 of the two colours,
    # and the edge adds d / (2 band) of L* gradient on the band.
    flat, lighter = _patch_of_lab(60, 12, 18), _patch_of_lab(70, 12, 18)
    redrawn = np.where(hole[..., None] > 0.5, lighter, flat)
    seam = border_seam(redrawn, flat, hole)
    lab = lambda img: skimage_color.rgb2lab(img[:1, :1, ::-1])[0, 0]
    assert abs(seam["colour_step"] - delta_e(lab(lighter), lab(flat))) < 0.05
    d = lab(lighter)[0] - lab(flat)[0]
    assert abs(seam["gradient"] - d / (2 * SEAM_BAND_PX)) < 0.2 * d / (2 * SEAM_BAND_PX)


def test_border_seam_does_not_count_a_change_that_fades_in_away_from_the_border():
    from training.metrics import border_seam
    flat = _patch_of_lab(60, 12, 18)
    lighter = _patch_of_lab(70, 12, 18).astype(np.float32)
    hole = _hole()
    inside = (hole > 0.5).astype(np.uint8)
    import cv2
    fade = np.clip(cv2.distanceTransform(inside, cv2.DIST_L2, 5) / 25.0, 0, 1)[..., None]   # 0 at the border
    blended = np.round(flat * (1 - fade) + lighter * fade).astype(np.uint8)
    hard = np.where(hole[..., None] > 0.5, lighter.astype(np.uint8), flat)
    soft, step = border_seam(blended, flat, hole), border_seam(hard, flat, hole)
    assert soft["gradient"] < 0.3 * step["gradient"] and soft["colour_step"] < 0.3 * step["colour_step"]
