"""Evaluate the shipped ONNX models on a split that training never saw.

    python -m training.evaluate --split test [--out runs/eval] [--limit N]

Writes <out>/metrics.json, <out>/report.md and PNG grids:

* analyser: covering IoU / Dice on synthetic coverings (by kind and yaw bin)
  and on the held-back fold of real labelled photos; NME of the hidden
  lower-face landmarks (normalised by the inter-ocular distance) against the
  mediapipe teacher on the unmasked original, next to mediapipe's own mesh run
  on the masked image; gender balanced accuracy from masked faces (adults;
  children apart), by covering kind and yaw bin.
* inpainter: PSNR / SSIM / L1 inside the hole and over the whole window and
  canonical crop, next to cv2.inpaint Telea and Navier-Stokes on the same
  holes; by kind, yaw bin and face region (CelebA-HQ parsing: nose, mouth,
  lips, chin/skin); gender consistency (the analyser's gender on the output vs
  the label) and landmark consistency (mesh on the output vs on the original).
* grids: 24 test faces (input, mask, landmarks, gender, output, truth); the
  real masked photos of data/real/rmfd_dev run through the full `Unmasker`.

Only numpy / OpenCV / ONNX Runtime / mediapipe are needed: it runs from the
shipped ONNX files exactly as the product does.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from models.spec import ANALYSER, CANONICAL_SIZE, INPAINTER_PRESETS, decode_analyser, weights_file, window_matrix
from training.data.dataset import CACHE, FaceCache, RealSegCache, SampleMaker
from stream.face_state import MASKED_FRACTION
from training.metrics import (balanced_accuracy, paste_window, iou_dice, nme, psnr, ssim_gray, _tile)

ROOT = Path(__file__).resolve().parents[1]
YAW_BINS = [(-1.01, -0.35, "left"), (-0.35, 0.35, "frontal"), (0.35, 1.01, "right")]
# CelebAMask-HQ classes per reported region.
REGIONS = {"nose": [2], "mouth": [10], "lips": [11, 12], "skin": [1]}


def yaw_bin(y: float) -> str:
    return next(name for lo, hi, name in YAW_BINS if lo <= y < hi)


class Models:
    def __init__(self, backend="onnxruntime", preset="fast", weights: Path | None = None, colour: bool = True,
                 gender_probe: bool = True):
        """The shipped models, or the candidates in `weights` (a folder of .onnx files). The inpainter's
        output goes through its fitted colour correction (models.colour) as in the product, unless
        `colour` is False (what training.fit_colour fits on); the gender is fused with the gender probe
        (models.gender) as in the product, unless `gender_probe` is False or there is none."""
        from engines import create_runner
        from models.colour import ColourCorrection
        from models.gender import GENDER_PROBE_PATH, GenderProbe
        pick = lambda name: weights_file(f"{name}.onnx", weights)
        # The candidates' folder, if any: what runs through stream.Unmasker (the clip measure) gets it too.
        self.candidates = weights
        self.analyser = create_runner(pick("analyser"), backend=backend)
        self.inpainter = create_runner(pick(f"inpainter_{preset}"), backend=backend)
        self.colour = ColourCorrection.for_inpainter(pick(f"inpainter_{preset}")) if colour else None
        self.gender_probe = GenderProbe.shipped(weights_file(GENDER_PROBE_PATH.name, weights)) if gender_probe else None
        from stream.compositing import GENERATED_BORDER_MATCH
        from stream.reference import REFERENCE_BORDER_MATCH
        # As the product's CpuCompositor and own-face render (0: off).
        self.border_match, self.reference_border_match = GENERATED_BORDER_MATCH, REFERENCE_BORDER_MATCH
        self._embedder = None

    def fused_gender(self, p_analyser, covered_crops, landmarks) -> np.ndarray:
        """P(female) as the product decides a still's: the analyser's, fused with the probe's logit on
        the embedding of each covered face (full-resolution crops, aligned by `landmarks` in their
        pixels: the analyser's estimate). The analyser's alone without a probe."""
        p_analyser = np.asarray(p_analyser, np.float64)
        if self.gender_probe is None:
            return p_analyser
        if self._embedder is None:
            from stream.identity import FaceEmbedder
            self._embedder = FaceEmbedder(threads=2)
        emb = np.stack([self._embedder(c, lm) for c, lm in zip(covered_crops, landmarks)])
        return self.gender_probe.fuse(self.gender_probe.logit(emb), p_analyser)

    def analyse(self, images: list[np.ndarray]):
        x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255
        r = self.analyser.run({"image": x})
        return decode_analyser(r["mask_logits"], r["gender_logit"], r["landmarks"], landmark_scale=1)

    def inpaint(self, images, holes, maps, genders, colour: bool = True, window_points=None):
        """The fills as the product draws them: colour-corrected and (with the faces' `window_points`,
        (N, 468, 2) window px) their border matched to the face (stream.compositing); `colour` False:
        the network's raw output (what training.fit_colour fits on)."""
        r = self.inpainter.run({
            "image": np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255,
            "hole": np.stack(holes)[:, None].astype(np.float32),
            "landmark_map": np.stack(maps)[:, None].astype(np.float32),
            "gender": np.asarray(genders, np.float32)})
        out = np.clip(r["output"].transpose(0, 2, 3, 1) * 255 + 0.5, 0, 255).astype(np.uint8)
        return self.finish(images, holes, out, window_points) if colour else out

    def finish(self, images, holes, outs, window_points=None):
        """Raw fills as the product finishes them: the colour correction, then (given the faces'
        window landmarks) the border match to the face around the hole."""
        outs = self.correct(images, holes, outs)
        if window_points is not None and self.border_match:
            from stream.compositing import match_generated_borders
            outs = match_generated_borders(outs, np.stack(images), np.stack(holes), window_points, self.border_match)
        return outs

    def correct(self, images, holes, outs):
        """The inpainter's outputs through its colour correction (unchanged without one)."""
        return outs if self.colour is None else self.colour.correct(np.stack(images), np.stack(holes), np.stack(outs))


def _mesh():
    import mediapipe as mp
    return mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                           min_detection_confidence=0.3)


def _mesh_points(mesh, image) -> np.ndarray | None:
    res = mesh.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if not res.multi_face_landmarks:
        return None
    h, w = image.shape[:2]
    return np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark], np.float32)


def _mean_by(rows: list[dict], key: str, value: str) -> dict:
    groups = defaultdict(list)
    for r in rows:
        if r.get(value) is not None and not np.isnan(r[value]):
            groups[r[key]].append(r[value])
    return {k: {"mean": float(np.mean(v)), "n": len(v)} for k, v in sorted(groups.items())}


def fused_gender(models: Models, maker: SampleMaker, idx: list[int], samples: list[dict], p_analyser,
                 landmarks) -> np.ndarray:
    """P(female) as the product decides it (the analyser's fused with the gender probe, as in
    training.evaluate_real): the probe sees each covered face at full resolution, covered with the
    sample's kind, aligned by the analyser's landmarks. Unmasked samples are embedded as they are."""
    if models.gender_probe is None:
        return np.asarray(p_analyser, np.float64)
    covered = [maker.faces.images[i] if s["kind"] == "none" else
               maker.synth(maker.faces.images[i], maker.faces.landmarks[i], maker._rng(i, 0), kind=s["kind"])[0]
               for i, s in zip(idx, samples)]
    return models.fused_gender(p_analyser, covered, np.asarray(landmarks) * CANONICAL_SIZE)


def evaluate_analyser(models: Models, faces: FaceCache, maker: SampleMaker, out: Path) -> dict:
    mesh = _mesh()
    size = ANALYSER["input_size"]
    rows, grid = [], []
    for start in range(0, len(faces), 64):
        idx = list(range(start, min(start + 64, len(faces))))
        samples = [maker.analyser_sample(i) for i in idx]
        probs, genders_analyser, lms = models.analyse([s["image"] for s in samples])
        genders = fused_gender(models, maker, idx, samples, genders_analyser, lms)
        for i, s, p, g, g_a, lm in zip(idx, samples, probs, genders, genders_analyser, lms):
            io, dc = iou_dice(p, s["mask"])
            gt_lm = s["landmarks"] * size
            row = dict(kind=s["kind"], yaw=yaw_bin(s["yaw"]), iou=io, dice=dc,
                       called_masked=bool((p > 0.5).mean() > MASKED_FRACTION),
                       gender=int(s["gender"]), age=int(s["age"]), pred_gender=int(g > 0.5),
                       pred_gender_analyser=int(g_a > 0.5))
            if s["kind"] != "none":
                row["nme_ours"] = nme(lm * size, gt_lm)
                # mediapipe's own mesh on the same masked face (upscaled: it wants ~192 px faces).
                big = cv2.resize(s["image"], (256, 256), interpolation=cv2.INTER_CUBIC)
                mp_lm = _mesh_points(mesh, big)
                row["nme_mediapipe"] = nme(mp_lm * size / 256, gt_lm) if mp_lm is not None else np.nan
                row["mediapipe_found"] = mp_lm is not None
            rows.append(row)
            if len(grid) < 24 and i % max(1, len(faces) // 24) == 0:
                grid.append((s, p, g, lm))
    masked_rows = [r for r in rows if r["kind"] != "none"]
    adult = [r for r in masked_rows if r["gender"] >= 0 and (r["age"] < 0 or r["age"] >= 18)]
    child = [r for r in masked_rows if r["gender"] >= 0 and 0 <= r["age"] < 13]

    def bacc(rs, key="pred_gender"):
        return balanced_accuracy([r["gender"] for r in rs], [r[key] for r in rs]) if rs else float("nan")

    found = [r for r in masked_rows if r.get("mediapipe_found")]
    res = {
        "n": len(rows),
        "iou": float(np.mean([r["iou"] for r in masked_rows])),
        "dice": float(np.mean([r["dice"] for r in masked_rows])),
        "unmasked_false_positive_rate": float(np.mean([r["called_masked"] for r in rows
                                                       if r["kind"] == "none"] or [np.nan])),
        "masked_miss_rate": float(np.mean([not r["called_masked"] for r in masked_rows])),
        "iou_by_kind": _mean_by(masked_rows, "kind", "iou"),
        "iou_by_yaw": _mean_by(masked_rows, "yaw", "iou"),
        "nme_hidden_ours": float(np.mean([r["nme_ours"] for r in masked_rows])),
        "nme_hidden_ours_where_mediapipe_found": float(np.mean([r["nme_ours"] for r in found])) if found else float("nan"),
        "nme_hidden_mediapipe": float(np.nanmean([r["nme_mediapipe"] for r in found])) if found else float("nan"),
        "mediapipe_found_rate": float(np.mean([r.get("mediapipe_found", False) for r in masked_rows])),
        "gender_bacc_adult": bacc(adult), "n_adult": len(adult),
        "gender_bacc_adult_analyser_only": bacc(adult, "pred_gender_analyser"),
        "gender_fused_with_probe": models.gender_probe is not None,
        "gender_bacc_child": bacc(child), "n_child": len(child),
        "gender_bacc_adult_by_kind": {k: bacc([r for r in adult if r["kind"] == k])
                                      for k in sorted({r["kind"] for r in adult})},
        "gender_bacc_adult_by_yaw": {k: bacc([r for r in adult if r["yaw"] == k])
                                     for k in sorted({r["yaw"] for r in adult})},
    }
    from training.metrics import analyser_grid
    cv2.imwrite(str(out / "analyser_grid.png"), analyser_grid(
        [g[0] for g in grid], [dict(mask=g[1], gender=float(g[2]), landmarks=g[3]) for g in grid]))
    return res


def evaluate_real_segmentation(models: Models, cache: Path = CACHE) -> dict:
    real = RealSegCache("eval", cache)
    if not len(real):
        return {"n": 0}
    size = ANALYSER["input_size"]
    ious, dices = [], []
    for im, mk in zip(real.images, real.masks):
        p, _, _ = models.analyse([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)])
        p = cv2.resize(p[0], (CANONICAL_SIZE, CANONICAL_SIZE), interpolation=cv2.INTER_LINEAR)
        i, d = iou_dice(p, mk.astype(np.float32) / 255)
        ious.append(i)
        dices.append(d)
    return {"n": len(ious), "iou": float(np.mean(ious)), "dice": float(np.mean(dices))}


def evaluate_inpainter(models: Models, faces: FaceCache, maker: SampleMaker, out: Path,
                       preset: str = "fast") -> dict:
    from models.spec import draw_landmark_map
    mesh = _mesh()
    size = INPAINTER_PRESETS[preset]["size"]
    rows, grid = [], []
    for start in range(0, len(faces), 32):
        idx = list(range(start, min(start + 32, len(faces))))
        samples = [maker.inpainter_sample(i, 0, preset) for i in idx]
        genders = [0.5 if s["gender"] < 0 else float(s["gender"]) for s in samples]
        maps = [draw_landmark_map(s["landmarks"], size) for s in samples]
        outs = models.inpaint([s["image"] for s in samples], [s["hole"] for s in samples], maps, genders,
                              window_points=[s["landmarks"] for s in samples])
        for i, s, o in zip(idx, samples, outs):
            hole = s["hole"]
            hole_u8 = (hole > 0.5).astype(np.uint8)
            holed = s["image"].copy()
            telea = cv2.inpaint(holed, hole_u8, 5, cv2.INPAINT_TELEA)
            ns = cv2.inpaint(holed, hole_u8, 5, cv2.INPAINT_NS)
            crop = faces.images[i]
            full_truth = crop
            full_ours = paste_window(crop, o, s["matrix"], hole)
            full_telea = paste_window(crop, telea, s["matrix"], hole)
            row = dict(kind=s["kind"], yaw=yaw_bin(s["yaw"]),
                       psnr_hole=psnr(o, s["target"], hole), psnr_hole_telea=psnr(telea, s["target"], hole),
                       psnr_hole_ns=psnr(ns, s["target"], hole),
                       psnr_window=psnr(o, s["target"]), ssim_window=ssim_gray(o, s["target"]),
                       psnr_crop=psnr(full_ours, full_truth), ssim_crop=ssim_gray(full_ours, full_truth),
                       psnr_crop_telea=psnr(full_telea, full_truth), ssim_crop_telea=ssim_gray(full_telea, full_truth),
                       l1_hole=float(np.abs(o.astype(np.float64) - s["target"])[hole > 0.5].mean() / 255),
                       l1_hole_telea=float(np.abs(telea.astype(np.float64) - s["target"])[hole > 0.5].mean() / 255),
                       gender=int(s["gender"]), age=int(s["age"]))
            parsing = faces.parsing(i)
            if parsing is not None:
                par_w = cv2.warpAffine(parsing, s["matrix"], (size, size), flags=cv2.INTER_NEAREST)
                for name, classes in REGIONS.items():
                    region = np.isin(par_w, classes) & (hole > 0.5)
                    if region.sum() >= 20:
                        row[f"psnr_{name}"] = psnr(o, s["target"], region.astype(np.float32))
                        row[f"psnr_{name}_telea"] = psnr(telea, s["target"], region.astype(np.float32))
            # Gender and landmark consistency on the reconstructed canonical crop.
            a_in = cv2.resize(full_ours, (ANALYSER["input_size"],) * 2, interpolation=cv2.INTER_AREA)
            _, g_out, _ = models.analyse([a_in])
            row["gender_out"] = int(g_out[0] > 0.5)
            lm_out = _mesh_points(mesh, full_ours)
            if lm_out is not None:
                row["landmark_consistency_nme"] = nme(lm_out, faces.landmarks[i])
            rows.append(row)
            if len(grid) < 24 and i % max(1, len(faces) // 24) == 0:
                lmap = (maps[idx.index(i)] * 255).astype(np.uint8)
                grid.append(np.vstack([s["image"], np.dstack([lmap, (hole * 255).astype(np.uint8), lmap]),
                                       o, telea, s["target"]]))
    def mean(k):
        v = [r[k] for r in rows if k in r and not np.isnan(r[k])]
        return float(np.mean(v)) if v else float("nan")
    labelled = [r for r in rows if r["gender"] >= 0 and (r["age"] < 0 or r["age"] >= 18)]
    res = {"n": len(rows), "preset": preset}
    for k in ["psnr_hole", "psnr_hole_telea", "psnr_hole_ns", "psnr_window", "ssim_window", "psnr_crop",
              "ssim_crop", "psnr_crop_telea", "ssim_crop_telea", "l1_hole", "l1_hole_telea",
              "landmark_consistency_nme"] + [f"psnr_{n}{t}" for n in REGIONS for t in ("", "_telea")]:
        res[k] = mean(k)
    res["psnr_hole_gain_over_telea_db"] = res["psnr_hole"] - res["psnr_hole_telea"]
    res["gender_consistency_adult"] = float(np.mean([r["gender_out"] == r["gender"] for r in labelled])) \
        if labelled else float("nan")
    res["psnr_hole_by_kind"] = _mean_by(rows, "kind", "psnr_hole")
    res["psnr_hole_by_yaw"] = _mean_by(rows, "yaw", "psnr_hole")
    cv2.imwrite(str(out / "inpainter_grid.png"), _tile(grid, 12))
    return res


def real_photo_grid(out: Path, limit: int = 24) -> dict:
    """The full product on real masked photos (data/real/rmfd_dev): before / after pairs."""
    from stream import Unmasker
    photos = sorted((ROOT / "data" / "raw" / "rmfd_dev").rglob("*.jpg"))
    if not photos:
        return {"n": 0}
    tiles, found, masked = [], 0, 0
    with Unmasker() as um:
        for p in photos:
            img = cv2.imread(str(p))
            if img is None:
                continue
            res = um.process(img)
            found += bool(res.faces)
            masked += any(f.masked for f in res.faces)
            if len(tiles) < limit and res.faces:
                pair = np.hstack([img, res.image])
                tiles.append(cv2.resize(pair, (320, 160)))
    if tiles:
        cv2.imwrite(str(out / "rmfd_grid.png"), _tile(tiles, 4))
    return {"n": len(photos), "face_found_rate": found / len(photos), "masked_rate": masked / len(photos)}


def placement_check(faces: FaceCache, maker: SampleMaker, limit: int = 200) -> dict:
    """Do synthetic coverings sit where real ones do? Coverage of CelebA-HQ parsing regions."""
    from training.data.synth import KINDS
    cover = defaultdict(lambda: defaultdict(list))
    done = 0
    for i in range(len(faces)):
        parsing = faces.parsing(i)
        if parsing is None:
            continue
        rng = np.random.default_rng((999, i))
        kind = KINDS[i % len(KINDS)] if i % 4 else "incorrect"
        _, alpha, _ = maker.synth(faces.images[i], faces.landmarks[i], rng, kind=kind)
        for name, classes in (("nose", [2]), ("mouth_lips", [10, 11, 12])):
            region = np.isin(parsing, classes)
            if region.sum() >= 20:
                cover[kind][name].append(float((alpha[region] > 0.5).mean()))
        done += 1
        if done >= limit:
            break
    return {k: {n: float(np.mean(v)) for n, v in d.items()} for k, d in sorted(cover.items())}


def clip_frames_grid(out: Path, every: int = 40) -> dict:
    """The full product on the development clips (data/real/videos): input / output pairs."""
    import av
    from stream import Unmasker
    clips = sorted((ROOT.parent / "shared" / "data" / "real" / "videos").glob("*.mp4"))
    tiles, n = [], 0
    for clip in clips:
        with Unmasker() as um, av.open(str(clip)) as c:
            for i, f in enumerate(c.decode(video=0)):
                img = f.to_ndarray(format="bgr24")
                res = um.process(img, timestamp_ms=i * 1000.0 / 25)
                if i % every == 0 and res.faces:
                    x0, y0, x1, y1 = res.faces[0].box
                    cx, cy, half = (x0 + x1) // 2, (y0 + y1) // 2, int(max(x1 - x0, y1 - y0) * 0.8)
                    crop = lambda im: cv2.resize(
                        im[max(cy - half, 0):cy + half, max(cx - half, 0):cx + half], (200, 200))
                    tiles.append(np.hstack([crop(img), crop(res.image)]))
                    n += 1
    if tiles:
        cv2.imwrite(str(out / "clips_grid.png"), _tile(tiles, 3))
    return {"clips": len(clips), "frames_shown": n}


def to_markdown(m: dict) -> str:
    a, r, i = m.get("analyser", {}), m.get("real_segmentation", {}), m.get("inpainter", {})
    f = lambda v, p=3: "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{p}f}"
    lines = [f"# Evaluation ({m['split']} split)", ""]

    def breakdown(label: str, groups: dict, places: int = 3) -> str:
        """'label: a 0.9, b 0.8' from {group: value} or {group: {'mean': value, 'n': ...}}."""
        mean = lambda v: v["mean"] if isinstance(v, dict) else v
        return f"{label}: " + ", ".join(f"{k} {f(mean(v), places)}" for k, v in groups.items())

    if a:
        lines += ["## Analyser", "", "| metric | value | target |", "|---|---|---|",
                  f"| covering IoU, synthetic ({a['n']} faces) | {f(a['iou'])} | ≥ 0.95 |",
                  f"| covering Dice, synthetic | {f(a['dice'])} | |",
                  f"| covering IoU, real photos ({r.get('n', 0)}) | {f(r.get('iou'))} | ≥ 0.93 |",
                  f"| unmasked faces called masked | {f(a['unmasked_false_positive_rate'])} | |",
                  f"| masked faces called unmasked | {f(a['masked_miss_rate'])} | |",
                  f"| hidden-landmark NME, ours | {f(a['nme_hidden_ours'])} | ≤ 0.05 |",
                  f"| hidden-landmark NME, ours (faces mediapipe found) | {f(a['nme_hidden_ours_where_mediapipe_found'])} | |",
                  f"| hidden-landmark NME, mediapipe on the masked face | {f(a['nme_hidden_mediapipe'])} | (ours below) |",
                  f"| mediapipe found the masked face | {f(a['mediapipe_found_rate'])} | |",
                  f"| gender balanced accuracy, adults ({a['n_adult']}){' (fused with the gender probe)' if a.get('gender_fused_with_probe') else ''} | {f(a['gender_bacc_adult'])} | ≥ 0.95 |",
                  f"| the same, the analyser alone | {f(a.get('gender_bacc_adult_analyser_only'))} | |",
                  f"| gender balanced accuracy, children ({a['n_child']}) | {f(a['gender_bacc_child'])} | |", "",
                  breakdown("IoU by covering", a["iou_by_kind"]), "", breakdown("IoU by yaw", a["iou_by_yaw"]),
                  "", breakdown("Gender (adults) by covering", a["gender_bacc_adult_by_kind"]),
                  "", breakdown("Gender (adults) by yaw", a["gender_bacc_adult_by_yaw"]), ""]
    if i:
        lines += ["## Inpainter", "", "| metric | ours | Telea | target |", "|---|---|---|---|",
                  f"| hole PSNR (dB) | {f(i['psnr_hole'], 2)} | {f(i['psnr_hole_telea'], 2)} (NS {f(i['psnr_hole_ns'], 2)}) | ≥ Telea + 5 |",
                  f"| hole L1 | {f(i['l1_hole'], 4)} | {f(i['l1_hole_telea'], 4)} | |",
                  f"| window PSNR / SSIM | {f(i['psnr_window'], 2)} / {f(i['ssim_window'])} | | |",
                  f"| whole-crop PSNR (dB) | {f(i['psnr_crop'], 2)} | {f(i['psnr_crop_telea'], 2)} | ≥ 30 |",
                  f"| whole-crop SSIM | {f(i['ssim_crop'])} | {f(i['ssim_crop_telea'])} | ≥ 0.93 |",
                  f"| gender consistency (adults) | {f(i['gender_consistency_adult'])} | | ≥ 0.95 |",
                  f"| landmark consistency NME | {f(i['landmark_consistency_nme'])} | | |"]
        for n in REGIONS:
            lines.append(f"| {n} PSNR (dB) | {f(i[f'psnr_{n}'], 2)} | {f(i[f'psnr_{n}_telea'], 2)} | |")
        lines += ["", breakdown("Hole PSNR by covering", i["psnr_hole_by_kind"], 2), "",
                  breakdown("Hole PSNR by yaw", i["psnr_hole_by_yaw"], 2), ""]
    if m.get("placement"):
        lines += ["## Synthetic covering placement (CelebA-HQ parsing)", "",
                  "| covering | nose covered | mouth + lips covered |", "|---|---|---|"]
        for k, v in m["placement"].items():
            lines.append(f"| {k} | {f(v.get('nose'), 2)} | {f(v.get('mouth_lips'), 2)} |")
        lines.append("")
    if m.get("rmfd"):
        lines += ["## Real masked photos (rmfd_dev, no labels)", "",
                  f"{m['rmfd']['n']} photos: a face was found on {f(m['rmfd'].get('face_found_rate'))}, "
                  f"a covering on {f(m['rmfd'].get('masked_rate'))}.", ""]
    return "\n".join(lines) + "\n"


def missing_data(cache: Path, only: str) -> str | None:
    """What is missing for this evaluation, with the command that prepares it; None when ready."""
    if not (cache / "meta.npz").exists():
        return f"no prepared faces in {cache}: run python -m training.data.prepare first"
    if only in ("analyser", "all") and not (cache / "realseg" / "meta.npz").exists():
        return (f"no aligned real masked photos in {cache / 'realseg'}: run python -m "
                "training.data.realseg first (or evaluate --only inpainter)")
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Evaluate the shipped models on a held-out split.")
    ap.add_argument("--split", choices=["val", "test"], default="test")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "eval")
    ap.add_argument("--limit", type=int, default=0, help="only the first N faces (quick runs)")
    ap.add_argument("--only", choices=["analyser", "inpainter", "all"], default="all")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--weights", type=Path, default=None,
                    help="evaluate the .onnx candidates in this folder instead of the shipped ones")
    ap.add_argument("--real", action="store_true",
                    help="the real-world evaluation (training/evaluate_real.py): the held-out real split, "
                         "by skin tone, gender, race, age, yaw and covering; writes metrics_real.json")
    ap.add_argument("--same-person", action="store_true",
                    help="with --real: identity of covered real photos against other photos of the same people "
                         "(masked / generative / own-face path with a frontal reference / the reference itself), "
                         "by yaw; needs python -m training.data.same_person; writes metrics_same_person.json")
    ap.add_argument("--clip-enrolment", nargs="?", type=Path, const=True, default=None, metavar="CLIP",
                    help="with --real: only the real same-person clip's enrolment measure (identity cosine of "
                         "masked / generative / own face enrolled from her unmasked frames; default clip: "
                         "shared clip 04); writes metrics_clip_enrolment.json")
    ap.add_argument("--cache", type=Path, default=CACHE, help="the prepared data (default data/cache)")
    ap.add_argument("--no-border-match", action="store_true",
                    help="measure the product without its border matches (the generated fill's and the own "
                         "face's border moved toward the face around the hole: stream.compositing, stream.reference)")
    args = ap.parse_args(argv)
    for flag, given in (("--same-person", args.same_person), ("--clip-enrolment", args.clip_enrolment)):
        if given and not args.real:
            print(f"error: {flag} is part of the real-world evaluation: add --real", file=sys.stderr)
            return 2
    if args.weights is not None and not (args.weights.is_dir() and any(args.weights.glob("*.onnx"))):
        print(f"error: --weights {args.weights} is not a folder of candidate .onnx files "
              "(python -m training.train --export-dir writes one)", file=sys.stderr)
        return 2
    if args.clip_enrolment:
        from training.evaluate_real import ENROL_CLIP, clip_enrolment
        clip = ENROL_CLIP if args.clip_enrolment is True else args.clip_enrolment
        if not clip.exists():
            print(f"error: the same-person clip {clip} is not here (shared clip 04 is in "
                  f"../shared/data/real/videos)", file=sys.stderr)
            return 2
        result = clip_enrolment(clip, args.weights, not args.no_border_match)
        if not result.get("n_masked_frames"):
            print(f"error: nothing to measure in {clip}: {result.get('n_unmasked_frames', 0)} unmasked "
                  "frames and no masked frame after them", file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics_clip_enrolment.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    if args.same_person:
        from training.data.same_person import missing_message
        problem = missing_message()
    else:
        problem = missing_data(args.cache, args.only)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    models = Models(preset=args.preset, weights=args.weights)
    if args.no_border_match:
        models.border_match = models.reference_border_match = 0.0
    if args.same_person:
        from training.evaluate_real import run_same_person, same_person_markdown
        print(same_person_markdown(run_same_person(models, args.out, args.limit, args.preset)))
        return 0
    if args.real:
        from training.evaluate_real import run, to_markdown as real_markdown
        try:
            print(real_markdown(run(models, args.out, args.limit, args.preset)))
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    faces = FaceCache(args.split, cache=args.cache, limit=args.limit)
    maker = SampleMaker(faces, train=False)
    metrics = {"split": args.split, "n_faces": len(faces)}
    if args.only in ("analyser", "all"):
        metrics["analyser"] = evaluate_analyser(models, faces, maker, args.out)
        metrics["real_segmentation"] = evaluate_real_segmentation(models, args.cache)
    if args.only in ("inpainter", "all"):
        metrics["inpainter"] = evaluate_inpainter(models, faces, maker, args.out, args.preset)
    if args.only == "all":
        metrics["placement"] = placement_check(faces, maker)
        metrics["rmfd"] = real_photo_grid(args.out)
        metrics["clips"] = clip_frames_grid(args.out)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    md = to_markdown(metrics)
    (args.out / "report.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
