"""Real-world evaluation: faces of a source no model trains on, broken down by who they are.

    python -m training.evaluate --real [--limit N] [--out runs/eval_real]
    python -m training.evaluate --real --same-person [--out runs/same_person]   (see same_person_identity)

The `real` split is a fixed quarter of the UTKFace "aligned & cropped" release
(`../shared/data/faces/utkface_extra_200.tar`: mostly Black, Indian and Asian faces,
phone and press photos of every age), chosen by a hash of the file name in
`training.data.prepare` and never used for training or checkpoint selection by
`training.train`. It is the set that differs most from the data the first models
were fitted to. Each face gets a synthetic covering of a fixed kind (cycling
through every template kind) at the evaluation seed, so the truth under it is known.

Everything is reported overall and by skin tone (ITA° of the visible forehead and
upper cheeks, Chardon's six bins), gender, UTKFace race label, age group and yaw:

* gender: balanced accuracy on the masked face (adults) of the product's rule (the analyser fused
  with the gender probe on the face embedding, models.gender) and of the analyser alone;
* covering: IoU of the analyser's segmentation with the pasted covering;
* reconstruction given the true hole: hole PSNR of the inpainter as the product runs it
  (its fill's colour corrected from the skin around the hole, `models.colour`, fitted on
  the training split by `training.fit_colour`) and uncorrected, next to cv2.inpaint Telea;
* colour: CIEDE2000 between the mean Lab colour of the reconstructed and the true
  hole, and the signed L*, a*, b* shifts;
* identity: cosine between a face embedding the project never trains with (Intel's
  face-reidentification-retail-0095, `../shared/weights`) of the true face and of the
  masked input / the reconstruction / Telea, and top-1 identification in a gallery of
  the true faces (the masked input's upper face matches its gallery photo exactly, so
  this measures whether a reconstruction adds or removes evidence, not absolute
  recognition across photos).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from models.spec import CANONICAL_SIZE, HIDDEN_REGION, INPAINTER_PRESETS, draw_landmark_map
from stream.alignment import face_region
from stream.identity import FACE_EMBEDDING, FaceEmbedder
from training.data.dataset import CACHE, FaceCache, SampleMaker
from training.data.synth import KINDS
from training.metrics import (balanced_accuracy, border_seam, delta_e, iou_dice, mean_lab,
                              paste_window, psnr, _tile)

ROOT = Path(__file__).resolve().parents[1]
EMBEDDING = FACE_EMBEDDING     # models/weights/face_embedding.onnx: ../shared/weights' Intel network, byte for byte
# Chardon's ITA° skin-tone categories (upper bounds exclusive), light to dark.
ITA_BINS = [(55, 91, "1 very light"), (41, 55, "2 light"), (28, 41, "3 intermediate"),
            (10, 28, "4 tan"), (-30, 10, "5 brown"), (-91, -30, "6 dark")]
RACES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "other"}
# Visible skin that a covering never reaches: forehead and the cheekbones under the eyes.
SKIN_POINTS = [151, 108, 337, 9, 117, 346, 118, 347]


def ita_degrees(crop_bgr: np.ndarray, landmarks: np.ndarray) -> float:
    """Individual Typology Angle of the visible skin (median L*, b* around SKIN_POINTS)."""
    from skimage.color import rgb2lab
    mask = np.zeros(crop_bgr.shape[:2], np.uint8)
    for p in landmarks[SKIN_POINTS]:
        cv2.circle(mask, (int(round(p[0])), int(round(p[1]))), 6, 1, -1)
    px = crop_bgr[mask > 0][:, ::-1].reshape(-1, 1, 3)
    lab = rgb2lab(px).reshape(-1, 3)
    L, b = np.median(lab[:, 0]), np.median(lab[:, 2])
    return float(np.degrees(np.arctan2(L - 50.0, b)))


def ita_bin(ita: float) -> str:
    return next((name for lo, hi, name in ITA_BINS if lo <= ita < hi), "6 dark" if ita < 0 else "1 very light")


# The identity judge: stream.identity's face embedding (never used by training; the product uses it
# only to tell several reference photos apart).
Embedder = FaceEmbedder


def _subset(faces: FaceCache, idx: np.ndarray) -> FaceCache:
    for name in ("keys", "dataset", "gender", "age", "landmarks", "has_parsing", "matrix", "source_hw"):
        value = getattr(faces, name)
        if value is not None:
            setattr(faces, name, value[idx])
    faces.images = [faces.images[i] for i in idx]
    return faces


def _yaw_bin(yaw: float) -> str:
    a = abs(yaw)
    return "frontal" if a < 0.25 else ("~30 deg" if a < 0.6 else "~60 deg")


def _age_group(age: int) -> str:
    return "child <13" if age < 13 else ("13-59" if age < 60 else "60+")


def evaluate_real(models, out: Path, limit: int = 0, preset: str = "fast") -> dict:
    """Per-face rows and their breakdowns on the `real` split; writes grids to `out`."""
    faces = FaceCache("real")
    if limit and limit < len(faces):
        # An even stride, not the first N: keys sort by age (UTKFace names start with it).
        faces = _subset(faces, np.linspace(0, len(faces) - 1, limit).round().astype(int))
    if not len(faces):
        raise FileNotFoundError("no faces in the real split: run python -m training.data.prepare "
                                "(it holds out part of utkface_extra_200.tar)")
    meta = np.load(CACHE / "meta.npz")
    race_of = dict(zip(meta["keys"].tolist(), meta["race"].tolist())) if "race" in meta else {}
    maker = SampleMaker(faces, train=False)
    embed = Embedder()
    from training import gender_judge
    judge_problem = gender_judge.missing()
    if judge_problem:
        print(f"note: {judge_problem}: the drawn-gender columns are left empty", flush=True)
    judge = None if judge_problem else gender_judge.GenderJudge()
    import mediapipe as mp
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                           min_detection_confidence=0.3)
    rows, grid = [], []
    for start in range(0, len(faces), 32):
        idx = list(range(start, min(start + 32, len(faces))))
        # The fills before and after the colour correction (models.colour), for its effect.
        a_samples, probs, genders, a_lms, samples, raws, g_analyser = reconstruct(models, maker, idx, preset, colour=False)
        outs = models.finish([s["image"] for s in samples], [s["hole"] for s in samples], raws,
                             [s["landmarks"] for s in samples])
        for i, a, p, g, g_a, s, o, raw, a_lm in zip(idx, a_samples, probs, genders, g_analyser, samples, outs, raws,
                                                    a_lms):
            crop, lm = faces.images[i], faces.landmarks[i]
            hole = s["hole"] > 0.5
            telea = cv2.inpaint(s["image"], hole.astype(np.uint8), 5, cv2.INPAINT_TELEA)
            own = _reference_render(crop, lm, a_lm, s, o, mesh, i, border_match=models.reference_border_match)
            truth_lab = mean_lab(s["target"], hole)
            ita = ita_degrees(crop, lm)
            e_true = embed(crop, lm)
            row = dict(key=str(faces.keys[i]), kind=s["kind"], gender=int(faces.gender[i]),
                       age=int(faces.age[i]), race=RACES.get(race_of.get(str(faces.keys[i]), -1), "?"),
                       ita=ita, skin=ita_bin(ita), yaw=_yaw_bin(s["yaw"]),
                       iou=iou_dice(p, a["mask"])[0], pred_gender=int(g > 0.5), p_female=float(g),
                       pred_gender_analyser=int(g_a > 0.5))
            on_face = face_region(s["landmarks"], hole.shape[0])
            for name, img in (("ours", o), ("uncorrected", raw), ("reference", own), ("telea", telea),
                              ("masked", s["image"])):
                if name != "masked":
                    row[f"psnr_{name}"] = psnr(img, s["target"], s["hole"])
                    # The colour step across the hole's border where it runs over the face (not the
                    # background), beyond the true face's own step there.
                    row[f"seam_step_{name}"] = border_seam(img, s["target"], s["hole"], region=on_face)["colour_step"]
                    lab = mean_lab(img, hole)
                    row[f"de_{name}"] = delta_e(lab, truth_lab)
                    row[f"dL_{name}"], row[f"da_{name}"], row[f"db_{name}"] = (lab - truth_lab).tolist()
                full = paste_window(crop, img, s["matrix"], s["hole"])
                if judge is not None and name in ("ours", "reference", "masked"):
                    row[f"judge_{name}"] = judge(full, lm)
                e = embed(full, lm)
                row[f"cos_{name}"] = float(e @ e_true)
                row[f"emb_{name}"] = e
            row["emb_true"] = e_true
            if judge is not None:
                row["judge_true"] = judge(crop, lm)
            rows.append(row)
            if len(grid) < 30 and i % max(1, len(faces) // 30) == 0:
                grid.append(np.hstack([s["image"], o, own, telea, s["target"]]))
    if grid:
        cv2.imwrite(str(out / "real_grid.png"), _tile(grid, 3))
    return summarise(rows)


def _reference_render(crop, lm, analyser_lm, sample, fallback, mesh, i, correct_colour: bool = True,
                      border_match: float | None = None):
    """The own-face path with another photo of the same face as the reference.

    No public same-person set with masked and unmasked photos is here, so the reference
    is this face's own photo mirrored (another pose for an asymmetric face), turned by a
    few degrees and shot in other light (per-channel gains 0.6-1.3): the render must get
    the geometry and the light right to score. The current face's hidden landmarks are
    the analyser's, as in the product.
    """
    from stream.reference import ReferenceFace
    rng = np.random.default_rng((4242, i))
    size = crop.shape[0]
    other = crop[:, ::-1]
    rot = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-8, 8), rng.uniform(0.9, 1.1))
    other = cv2.warpAffine(other, rot, (size, size), borderMode=cv2.BORDER_REPLICATE)
    other = np.clip(other * rng.uniform(0.6, 1.3, 3).astype(np.float32), 0, 255).astype(np.uint8)
    try:
        ref = ReferenceFace.from_image(other, mesh=mesh)
    except ValueError:
        return fallback
    ref.correct_colour = correct_colour
    if border_match is not None:
        ref.border_match = border_match
    return own_face_window(ref, lm, analyser_lm, sample, fallback)


def reconstruct(models, maker: SampleMaker, idx: list[int], preset: str = "fast", colour: bool = True):
    """One batch of faces covered synthetically (a fixed kind per index) and reconstructed.

    Returns (analyser samples, covering probabilities, genders, analyser landmarks,
    inpainter samples, generative outputs, the analyser's own genders), as the product would make
    them (`colour` False: the outputs before the inpainter's colour correction; genders: fused with
    the gender probe when there is one).
    """
    size = INPAINTER_PRESETS[preset]["size"]
    kinds = [KINDS[i % len(KINDS)] for i in idx]
    a_samples = [maker.analyser_sample(i, 0, kind=k) for i, k in zip(idx, kinds)]
    probs, genders, a_lms = models.analyse([s["image"] for s in a_samples])
    # The gender probe sees the covered face at full resolution (the same covering kind and seed),
    # aligned by the analyser's landmarks, as in the product (training.fit_gender embeds the same way).
    covered = [maker.synth(maker.faces.images[i], maker.faces.landmarks[i], maker._rng(i, 0), kind=k)[0]
               for i, k in zip(idx, kinds)] if models.gender_probe is not None else []
    genders_analyser = genders
    genders = models.fused_gender(genders, covered, a_lms * CANONICAL_SIZE)
    samples = [maker.inpainter_sample(i, 0, preset, kind=k) for i, k in zip(idx, kinds)]
    maps = [draw_landmark_map(s["landmarks"], size) for s in samples]
    # The inpainter is guided by the decided gender (fused with the probe), as in the product.
    outs = models.inpaint([s["image"] for s in samples], [s["hole"] for s in samples], maps,
                          [float(g) for g in genders], colour=colour, window_points=[s["landmarks"] for s in samples])
    return a_samples, probs, genders, a_lms, samples, outs, genders_analyser


def own_face_window(ref, lm: np.ndarray, analyser_lm: np.ndarray, sample: dict, fallback: np.ndarray):
    """The own-face path's window for one covered face, drawn from the reference `ref`.

    The current face's hidden landmarks are the analyser's (as in the product); the rest
    are the mesh's on the crop. Where the reference shows nothing, `fallback` stays.
    """
    points = lm.copy()
    points[HIDDEN_REGION] = analyser_lm[HIDDEN_REGION] * CANONICAL_SIZE
    window_points = points @ sample["matrix"][:, :2].T + sample["matrix"][:, 2]
    out, _ = ref.render(window_points.astype(np.float32), sample["image"], sample["hole"], fallback)
    return out


def _top1(rows: list[dict], name: str) -> float:
    """Identification: is each face's embedding nearest to its own true face in the gallery?"""
    gallery = np.stack([r["emb_true"] for r in rows])
    queries = np.stack([r[f"emb_{name}"] for r in rows])
    return float((np.argmax(queries @ gallery.T, axis=1) == np.arange(len(rows))).mean())


def _group_stats(rows: list[dict]) -> dict:
    adults = [r for r in rows if r["age"] >= 18]
    res = {"n": len(rows), "n_adult": len(adults),
           "gender_bacc_adult": balanced_accuracy([r["gender"] for r in adults],
                                                  [r["pred_gender"] for r in adults]) if adults else float("nan")}
    res["gender_bacc_adult_analyser"] = balanced_accuracy([r["gender"] for r in adults],
                                                          [r["pred_gender_analyser"] for r in adults]) \
        if adults else float("nan")
    for g, name in ((1, "women"), (0, "men")):
        sel = [r for r in adults if r["gender"] == g]
        res[f"gender_acc_{name}"] = float(np.mean([r["pred_gender"] == g for r in sel])) if sel else float("nan")
        res[f"gender_acc_{name}_analyser"] = float(np.mean([r["pred_gender_analyser"] == g for r in sel])) \
            if sel else float("nan")
    for k in ["iou", "psnr_ours", "psnr_uncorrected", "psnr_telea", "psnr_reference", "de_ours",
              "de_uncorrected", "de_telea", "de_reference", "dL_ours", "da_ours", "db_ours", "dL_uncorrected",
              "da_uncorrected", "db_uncorrected", "cos_masked", "cos_ours", "cos_uncorrected", "cos_telea",
              "cos_reference"]:
        res[k] = float(np.mean([r[k] for r in rows]))
    res["covering_total_failures"] = int(sum(r["iou"] < 0.1 for r in rows))
    for name in ("ours", "uncorrected", "telea", "reference"):
        steps = np.array([r.get(f"seam_step_{name}", np.nan) for r in rows], np.float64)
        steps = steps[np.isfinite(steps)]
        res[f"seam_step_{name}"] = float(steps.mean()) if len(steps) else float("nan")
        res[f"seam_step_above_2.3_{name}"] = float((steps > 2.3).mean()) if len(steps) else float("nan")
    # Drawn as the right gender: the independent judge (training.gender_judge) on each image, adults.
    for name in ("true", "masked", "ours", "reference"):
        judged = [r for r in adults if f"judge_{name}" in r]
        res[f"drawn_gender_{name}"] = float(np.mean([(r[f"judge_{name}"] > 0.5) == (r["gender"] == 1)
                                                     for r in judged])) if judged else float("nan")
    return res


def summarise(rows: list[dict]) -> dict:
    res = {"overall": _group_stats(rows)}
    res["overall"].update({f"top1_{n}": _top1(rows, n) for n in ("masked", "ours", "uncorrected", "telea",
                                                                   "reference")})
    for key in ("skin", "gender", "race", "yaw", "kind"):
        groups = defaultdict(list)
        for r in rows:
            groups[r[key] if key != "gender" else ("female" if r[key] == 1 else "male")].append(r)
        res[f"by_{key}"] = {k: _group_stats(v) for k, v in sorted(groups.items())}
    groups = defaultdict(list)
    for r in rows:
        groups[_age_group(r["age"])].append(r)
    res["by_age"] = {k: _group_stats(v) for k, v in sorted(groups.items())}
    return res


def to_markdown(m: dict) -> str:
    f = lambda v, p=3: "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{p}f}"
    o = m["overall"]
    lines = ["# Real-world evaluation (the held-out `real` split: UTKFace aligned & cropped, never trained on)", "",
             f"{o['n']} faces ({o['n_adult']} adults), synthetic coverings of every template kind, truth known.", "",
             "| metric | value | target |", "|---|---|---|",
             f"| gender balanced accuracy, masked adults | {f(o['gender_bacc_adult'])} "
             f"(women {f(o['gender_acc_women'])}, men {f(o['gender_acc_men'])}); the analyser alone "
             f"{f(o['gender_bacc_adult_analyser'])} (women {f(o['gender_acc_women_analyser'])}, men "
             f"{f(o['gender_acc_men_analyser'])}) | ≥ 0.95 |",
             f"| drawn as the right gender (adults; an independent judge, Intel's age-gender network, on the "
             f"image): true face / masked input / ours / own-face path | {f(o['drawn_gender_true'])} / "
             f"{f(o['drawn_gender_masked'])} / {f(o['drawn_gender_ours'])} / {f(o['drawn_gender_reference'])} "
             f"| ours ≥ 0.95 |",
             f"| covering IoU | {f(o['iou'])} ({o['covering_total_failures']} below 0.1) | ≥ 0.95 |",
             f"| hole PSNR, ours / Telea (dB), true hole | {f(o['psnr_ours'], 2)} / {f(o['psnr_telea'], 2)} "
             f"(ours − Telea {f(o['psnr_ours'] - o['psnr_telea'], 2)}) | ≥ Telea + 5 |",
             f"| mean-colour CIEDE2000, ours / Telea | {f(o['de_ours'], 2)} / {f(o['de_telea'], 2)} "
             f"| ≤ 3 in every skin bin |",
             f"| the same without the colour correction (models.colour): CIEDE2000 / hole PSNR / identity "
             f"cosine | {f(o['de_uncorrected'], 2)} / {f(o['psnr_uncorrected'], 2)} / {f(o['cos_uncorrected'])} | |",
             f"| colour step at the hole's border on the face beyond the true face's own (CIEDE2000; "
             f"`training.metrics.border_seam` on the face oval): mean / share above 2.3, ours / uncorrected / "
             f"Telea / own-face path | {f(o.get('seam_step_ours'), 2)} / {f(o.get('seam_step_above_2.3_ours'))}, "
             f"{f(o.get('seam_step_uncorrected'), 2)} / {f(o.get('seam_step_above_2.3_uncorrected'))}, "
             f"{f(o.get('seam_step_telea'), 2)} / {f(o.get('seam_step_above_2.3_telea'))}, "
             f"{f(o.get('seam_step_reference'), 2)} / {f(o.get('seam_step_above_2.3_reference'))} | none above 2.3 |",
             f"| signed shift of the hole's mean L* / a* / b* (ours) | {f(o['dL_ours'], 2)} / {f(o['da_ours'], 2)} / "
             f"{f(o['db_ours'], 2)} | 0 |",
             f"| identity cosine to the true face: masked / ours / Telea | {f(o['cos_masked'])} / "
             f"{f(o['cos_ours'])} / {f(o['cos_telea'])} | ours ≥ masked |",
             f"| identification top-1 (gallery of {o['n']}): masked / ours / Telea | {f(o['top1_masked'])} / "
             f"{f(o['top1_ours'])} / {f(o['top1_telea'])} | |",
             f"| own-face path (reference: the same person's photo, mirrored, turned, relit): identity cosine / "
             f"top-1 / hole PSNR / CIEDE2000 | {f(o['cos_reference'])} / {f(o['top1_reference'])} / "
             f"{f(o['psnr_reference'], 2)} / {f(o['de_reference'], 2)} | top-1 ≥ 0.60 |", ""]
    cols = ["n", "gender_bacc_adult", "gender_acc_women", "gender_acc_men", "gender_bacc_adult_analyser", "drawn_gender_true",
            "drawn_gender_ours", "iou", "psnr_ours", "psnr_telea",
            "de_ours", "de_uncorrected", "de_telea", "dL_ours", "da_ours", "cos_masked", "cos_ours", "cos_reference"]
    for key, title in (("by_skin", "skin tone (ITA°)"), ("by_gender", "gender"), ("by_race", "UTKFace race label"),
                       ("by_age", "age"), ("by_yaw", "yaw"), ("by_kind", "covering")):
        lines += [f"## By {title}", "", "| group | " + " | ".join(cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for g, v in m[key].items():
            lines.append(f"| {g} | " + " | ".join(str(v[c]) if c == "n" else f(v[c], 2) for c in cols) + " |")
        lines.append("")
    ce = m.get("clip_enrolment", {})
    if ce.get("n_masked_frames"):
        lines += ["## A real same-person clip: enrolment from video", "",
                  f"`{ce['clip']}` (a woman filmed unmasked, then putting masks on): identity cosine to her own "
                  f"unmasked frames ({ce['n_unmasked_frames']}) on {ce['n_masked_frames']} masked frames — masked input "
                  f"{f(ce['cos_masked'])}, generative {f(ce['cos_generative'])}, own face (enrolled) "
                  f"{f(ce['cos_own_face_enrolled'])}; frames drawn by {ce['frames_drawn_by']}.", ""]
    lines += ["dL/da: signed L*/a* shift of the reconstructed hole's mean colour against the truth "
              "(positive = lighter / pinker). Grid: real_grid.png (masked input, ours, own-face path, Telea, truth).", ""]
    return "\n".join(lines)


ENROL_CLIP = ROOT.parent / "shared" / "data" / "real" / "videos" / "04_woman_putting_on_kf94_masks_720p_9s.mp4"


def clip_enrolment(clip: Path = ENROL_CLIP, weights: Path | None = None, border_match: bool = True) -> dict:
    """A real same-person measure: a woman filmed unmasked, then putting masks on (shared clip 04).

    Her unmasked frames (the main face, frontal, no covering) give her identity; on her masked
    frames the embedding of the masked input, the generative reconstruction and the own-face path
    with enrolment (`enrol="auto"`: her own earlier unmasked view) are compared with it.
    `weights`: a candidates folder the stream runs instead of the shipped weights (stream.Unmasker's
    weights_dir); `border_match` False: without the product's border matches.
    """
    import av
    from stream import Unmasker
    from stream.alignment import yaw_proxy
    if not clip.exists():
        return {"clip": str(clip), "n_masked_frames": 0, "note": "clip not found"}
    embed = Embedder()
    unmasked, scores = [], defaultdict(list)
    with Unmasker(mode="video", weights_dir=weights) as generative, \
            Unmasker(mode="video", enrol="auto", weights_dir=weights) as enrolled, \
            av.open(str(clip)) as c:
        if not border_match:
            # The product without its border matches (--no-border-match): the generated fill's and the own face's.
            generative.compositor.border_match = enrolled.compositor.border_match = 0.0
            enrolled.reference_border_match = 0.0
        for i, f in enumerate(c.decode(video=0)):
            img = f.to_ndarray(format="bgr24")
            t = float(f.time * 1000) if f.time is not None else i * 33.3
            g, e = generative.process(img, timestamp_ms=t), enrolled.process(img, timestamp_ms=t)
            if not e.faces:
                continue
            face = max(e.faces, key=lambda x: (x.box[2] - x.box[0]) * (x.box[3] - x.box[1]))
            if not face.masked:
                if abs(yaw_proxy(face.landmarks)) < 0.3:
                    unmasked.append(embed(img, face.landmarks))
                continue
            gface = next((x for x in g.faces if x.masked), None)
            if gface is None or not unmasked:
                continue
            scores["masked"].append((embed(img, face.landmarks), i))
            scores["generative"].append((embed(g.image, gface.landmarks), i))
            scores["own_face_enrolled"].append((embed(e.image, face.landmarks), i))
            scores["drawn_by_" + str(face.reconstruction)].append((None, i))
    if not unmasked or not scores["masked"]:
        return {"clip": clip.name, "n_masked_frames": 0, "n_unmasked_frames": len(unmasked)}
    identity = np.mean(unmasked, axis=0)
    identity /= np.linalg.norm(identity)
    res = {"clip": clip.name, "n_unmasked_frames": len(unmasked), "n_masked_frames": len(scores["masked"])}
    for k in ("masked", "generative", "own_face_enrolled"):
        res[f"cos_{k}"] = float(np.mean([e @ identity for e, _ in scores[k]]))
    res["frames_drawn_by"] = {k[len("drawn_by_"):]: len(v) for k, v in scores.items() if k.startswith("drawn_by_")}
    return res


def run(models, out: Path, limit: int = 0, preset: str = "fast") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"split": "real", **evaluate_real(models, out, limit, preset)}
    # The clip runs through stream.Unmasker, given the candidates' folder (if any) like the runners.
    metrics["clip_enrolment"] = clip_enrolment(weights=models.candidates, border_match=bool(models.border_match))
    (out / "metrics_real.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    md = to_markdown(metrics)
    (out / "report_real.md").write_text(md)
    return metrics


# ---------------------------------------------------------------------------------------------
# A real same-person evaluation: other photos of the same people (training.data.same_person).

SAME_PERSON_METHODS = ("masked", "generative", "own_face", "reference", "unmasked")
# The real-photo measure identified 156 people; the same gallery size makes its
# numbers comparable with this set's larger gallery.
COMPARABLE_GALLERY = 156


def same_person_protocol(identity: np.ndarray, yaw: np.ndarray, keys: np.ndarray) -> dict:
    """Who is reference, gallery photo and probe, per person with three or more photos.

    The reference is the person's most frontal photo (one frontal reference photo, as a user
    would give); the gallery photo is the first of the others in a fixed order of the key's hash
    (any pose: it stands for the person's other photos); every remaining photo is a probe.
    Returns {"reference": {person: index}, "gallery": {person: index}, "probes": [index, ...]}.
    """
    import hashlib
    by_person = defaultdict(list)
    for i, p in enumerate(identity.tolist()):
        by_person[p].append(i)
    out = {"reference": {}, "gallery": {}, "probes": []}
    for person, idx in sorted(by_person.items()):
        if len(idx) < 3:
            continue
        ref = min(idx, key=lambda i: (abs(float(yaw[i])), str(keys[i])))
        rest = sorted((i for i in idx if i != ref),
                      key=lambda i: hashlib.sha1(str(keys[i]).encode()).hexdigest())
        out["reference"][person], out["gallery"][person] = ref, rest[0]
        out["probes"] += rest[1:]
    out["probes"].sort()
    return out


def identification(probes: np.ndarray, probe_person: np.ndarray, gallery: np.ndarray,
                   gallery_person: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 hit, cosine to the own gallery photo) per probe; embeddings are L2-normalised rows."""
    scores = probes @ gallery.T
    own = np.array([np.flatnonzero(gallery_person == p)[0] for p in probe_person])
    rows = np.arange(len(probes))
    return gallery_person[np.argmax(scores, axis=1)] == probe_person, scores[rows, own]


def top1_in_smaller_gallery(probes: np.ndarray, probe_person: np.ndarray, gallery: np.ndarray,
                            gallery_person: np.ndarray, size: int, draws: int = 20, seed: int = 0) -> float:
    """Mean top-1 when the gallery holds the probe's own person and `size` - 1 others drawn at random."""
    scores = probes @ gallery.T
    own = np.array([np.flatnonzero(gallery_person == p)[0] for p in probe_person])
    rng = np.random.default_rng(seed)
    hits = []
    for i, o in enumerate(own):
        others = np.flatnonzero(np.arange(len(gallery_person)) != o)
        for _ in range(draws):
            pick = rng.choice(others, size=min(size - 1, len(others)), replace=False)
            hits.append(scores[i, o] > scores[i, pick].max(initial=-np.inf))
    return float(np.mean(hits))


def same_person_identity(models, out: Path, limit: int = 0, preset: str = "fast", folder: Path | None = None) -> dict:
    """Identity top-1 and cosine of covered probes against other photos of the same people.

    For each probe (a real photo of a person, covered synthetically with the evaluation's kinds):
    (a) the masked input, (b) the generative path, (c) the own-face path with the person's frontal
    reference photo, next to (d) the reference photo itself and (e) the unmasked probe (the ceiling);
    the gallery holds one further unmasked photo of every person. By the probe's yaw.
    """
    from stream.reference import ReferenceFace, sharpness
    from training.data.same_person import SAME_PERSON, missing_message
    folder = folder or SAME_PERSON
    problem = missing_message(folder)
    if problem:
        raise FileNotFoundError(problem)
    faces = FaceCache("same_person", cache=folder)
    identity = np.load(folder / "meta.npz")["identity"]
    from training.data.synth import estimate_yaw
    yaws = np.array([estimate_yaw(lm) for lm in faces.landmarks])
    roles = same_person_protocol(identity, yaws, faces.keys)
    probes = roles["probes"]
    if limit and limit < len(probes):
        probes = [probes[j] for j in np.linspace(0, len(probes) - 1, limit).round().astype(int)]
    embed = Embedder()
    people = sorted(roles["gallery"])
    gallery = np.stack([embed(faces.images[roles["gallery"][p]], faces.landmarks[roles["gallery"][p]])
                        for p in people])
    refs = {p: ReferenceFace(faces.images[roles["reference"][p]], faces.landmarks[roles["reference"][p]], "photo",
                             sharpness(faces.images[roles["reference"][p]], faces.landmarks[roles["reference"][p]]))
            for p in people}
    for ref in refs.values():
        ref.border_match = models.reference_border_match      # as the product (0: --no-border-match)
    ref_emb = {p: embed(faces.images[roles["reference"][p]], faces.landmarks[roles["reference"][p]]) for p in people}
    maker = SampleMaker(faces, train=False)
    rows, grid = [], []
    for start in range(0, len(probes), 32):
        idx = probes[start:start + 32]
        _, _, _, a_lms, samples, outs, _ = reconstruct(models, maker, idx, preset)
        for i, s, o, a_lm in zip(idx, samples, outs, a_lms):
            crop, lm, person = faces.images[i], faces.landmarks[i], int(identity[i])
            own = own_face_window(refs[person], lm, a_lm, s, o)
            row = dict(key=str(faces.keys[i]), person=person, kind=s["kind"], yaw=_yaw_bin(s["yaw"]),
                       yaw_value=float(s["yaw"]))
            # Colour against the true face under the covering (mean Lab of the hole, CIEDE2000).
            hole = s["hole"] > 0.5
            truth_lab = mean_lab(s["target"], hole)
            row["de_generative"] = delta_e(mean_lab(o, hole), truth_lab)
            row["de_own_face"] = delta_e(mean_lab(own, hole), truth_lab)
            # Seams: each window hard-pasted over the true face outside the hole (the worst case of
            # the stream's blend), against the true face on the same border pixels.
            on_skin = face_region(s["landmarks"], hole.shape[0])
            for name, window in (("generative", o), ("own_face", own)):
                pasted_window = np.where(hole[..., None], window, s["target"])
                seam = border_seam(pasted_window, s["target"], s["hole"])
                row[f"seam_gradient_{name}"], row[f"seam_step_{name}"] = seam["gradient"], seam["colour_step"]
                # The same step where the border runs over the face's skin (not the background or eyes).
                row[f"seam_skin_{name}"] = border_seam(pasted_window, s["target"], s["hole"], region=on_skin)["colour_step"]
            pasted = {name: paste_window(crop, window, s["matrix"], s["hole"])
                      for name, window in (("masked", s["image"]), ("generative", o), ("own_face", own))}
            for name, full in pasted.items():
                row[f"emb_{name}"] = embed(full, lm)
            row["emb_reference"], row["emb_unmasked"] = ref_emb[person], embed(crop, lm)
            rows.append(row)
            if len(grid) < 24 and len(rows) % max(1, len(probes) // 24) == 0:
                # What the embedding sees: the crops with each window pasted into the hole.
                shown = [pasted["masked"], pasted["generative"], pasted["own_face"], crop,
                         faces.images[roles["reference"][person]]]
                grid.append(np.hstack([cv2.resize(x, (128, 128), interpolation=cv2.INTER_AREA) for x in shown]))
    if grid:
        out.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / "same_person_grid.png"), _tile(grid, 3))
    return summarise_same_person(rows, gallery, np.array(people))


def summarise_same_person(rows: list[dict], gallery: np.ndarray, gallery_person: np.ndarray) -> dict:
    """Top-1 (full gallery and COMPARABLE_GALLERY people) and mean own cosine, overall and by yaw."""
    person = np.array([r["person"] for r in rows])
    stats = {}
    for name in SAME_PERSON_METHODS:
        emb = np.stack([r[f"emb_{name}"] for r in rows])
        hit, cos = identification(emb, person, gallery, gallery_person)
        for r, h, c in zip(rows, hit, cos):
            r[f"top1_{name}"], r[f"cos_{name}"] = bool(h), float(c)
        stats[name] = top1_in_smaller_gallery(emb, person, gallery, gallery_person, COMPARABLE_GALLERY)

    def group(rs):
        res = {"n": len(rs), "n_people": len({r["person"] for r in rs})}
        for name in SAME_PERSON_METHODS:
            res[f"top1_{name}"] = float(np.mean([r[f"top1_{name}"] for r in rs]))
            res[f"cos_{name}"] = float(np.mean([r[f"cos_{name}"] for r in rs]))
        for name in ("generative", "own_face"):
            values = [r[f"de_{name}"] for r in rs if f"de_{name}" in r]
            if values:
                res[f"de_{name}"] = float(np.mean(values))
                res[f"de_{name}_over_10"] = float(np.mean(np.array(values) > 10))
            for kind in ("gradient", "step", "skin"):
                values = [r[f"seam_{kind}_{name}"] for r in rs if np.isfinite(r.get(f"seam_{kind}_{name}", np.nan))]
                if values:
                    res[f"seam_{kind}_{name}"] = float(np.mean(values))
                    if kind != "gradient":    # a visible step: above 2.3 ΔE more than the true face's own
                        res[f"seam_{kind}_{name}_above_2.3"] = float(np.mean(np.array(values) > 2.3))
                        res[f"seam_{kind}_{name}_p90"] = float(np.percentile(values, 90))
        return res

    res = {"gallery_people": int(len(gallery_person)), "overall": group(rows)}
    res["overall"].update({f"top1_{n}_gallery_{COMPARABLE_GALLERY}": v for n, v in stats.items()})
    by = defaultdict(list)
    for r in rows:
        by[r["yaw"]].append(r)
    res["by_yaw"] = {k: group(v) for k, v in sorted(by.items())}
    by = defaultdict(list)
    for r in rows:
        by[r["kind"]].append(r)
    res["by_kind"] = {k: group(v) for k, v in sorted(by.items())}
    res["rows"] = [{k: v for k, v in r.items() if not k.startswith("emb_")} for r in rows]
    return res


def same_person_markdown(m: dict) -> str:
    o, g = m["overall"], m["gallery_people"]
    names = {"masked": "masked input", "generative": "generative path", "own_face": "own-face path (reference)",
             "reference": "the reference photo itself", "unmasked": "the probe unmasked (ceiling)"}
    lines = ["# Same-person identity: covered real photos against other photos of the same people", "",
             f"{o['n']} probes of {o['n_people']} people (CelebA photos, `training.data.same_person`); "
             f"gallery: one further unmasked photo of each of {g} people. Embedding: Intel "
             "face-reidentification-retail-0095 (never used by training).", "",
             f"| method | top-1 (gallery {g}) | top-1 (gallery {COMPARABLE_GALLERY}) | mean cosine to own gallery photo |",
             "|---|---|---|---|"]
    for n in SAME_PERSON_METHODS:
        lines.append(f"| {names[n]} | {o[f'top1_{n}']:.3f} | {o[f'top1_{n}_gallery_{COMPARABLE_GALLERY}']:.3f} "
                     f"| {o[f'cos_{n}']:.3f} |")
    if "de_own_face" in o:
        lines += ["", "Colour of the hole against the true face (mean Lab, CIEDE2000; share of probes above 10): "
                  f"generative {o['de_generative']:.2f} ({o['de_generative_over_10']:.2f}), own-face path "
                  f"{o['de_own_face']:.2f} ({o['de_own_face_over_10']:.2f})."]
    if "seam_gradient_own_face" in o:
        lines += ["", "Seam at the hole border (`training.metrics.border_seam`: the window hard-pasted over the true "
                  "face; extra L* gradient per px on the border band, and the colour step across it in CIEDE2000, "
                  "each over the true face's own; 0 = no seam): "
                  f"generative {o['seam_gradient_generative']:.2f} / {o['seam_step_generative']:.2f}, own-face path "
                  f"{o['seam_gradient_own_face']:.2f} / {o['seam_step_own_face']:.2f}."]
        if "seam_step_own_face_above_2.3" in o:
            lines += ["", "Probes with a visible colour step (above 2.3 ΔE beyond the true face's own) on the whole "
                      f"border / where it runs over the face's skin: generative {o['seam_step_generative_above_2.3']:.1%} / "
                      f"{o.get('seam_skin_generative_above_2.3', float('nan')):.1%}, own-face path "
                      f"{o['seam_step_own_face_above_2.3']:.1%} / {o.get('seam_skin_own_face_above_2.3', float('nan')):.1%} "
                      f"(p90 of the step {o['seam_step_generative_p90']:.2f} / {o['seam_step_own_face_p90']:.2f})."]
        lines += ["", "| yaw | n | seam gradient generative / own face | colour step generative / own face |",
                  "|---|---|---|---|"]
        for k, v in m["by_yaw"].items():
            lines.append(f"| {k} | {v['n']} | {v.get('seam_gradient_generative', float('nan')):.2f} / "
                         f"{v.get('seam_gradient_own_face', float('nan')):.2f} | "
                         f"{v.get('seam_step_generative', float('nan')):.2f} / {v.get('seam_step_own_face', float('nan')):.2f} |")
    for key, title in (("by_yaw", "the probe's yaw"), ("by_kind", "covering")):
        lines += ["", f"## By {title} (top-1 in the gallery of {g} / mean cosine)", "",
                  "| group | n | " + " | ".join(names[n] for n in SAME_PERSON_METHODS) + " |",
                  "|---" * (len(SAME_PERSON_METHODS) + 2) + "|"]
        for k, v in m[key].items():
            lines.append(f"| {k} | {v['n']} | " + " | ".join(f"{v[f'top1_{n}']:.3f} / {v[f'cos_{n}']:.3f}"
                                                        for n in SAME_PERSON_METHODS) + " |")
    lines += ["", "Grid: same_person_grid.png (the probe masked, generative, own face — each pasted into the hole "
              "as the embedding sees it —, the probe unmasked, the reference photo).", ""]
    return "\n".join(lines)


def run_same_person(models, out: Path, limit: int = 0, preset: str = "fast") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"split": "same_person", **same_person_identity(models, out, limit, preset)}
    (out / "metrics_same_person.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    (out / "report_same_person.md").write_text(same_person_markdown(metrics))
    return metrics
