"""Fit the inpainter's skin-tone correction (models.colour) on the training split.

    python -m training.fit_colour [--faces 12000] [--preset fast] [--check real] [--weights runs/candidates]

Every face of an evenly spaced subset of the training split is covered synthetically and
reconstructed exactly as `training.evaluate_real` does (the analyser's gender guiding the
inpainter), then a ridge regression learns, from the visible skin around the hole
(models.colour.FEATURES), how far the generated hole's mean Lab colour is from the true one.
The held-out `--check` split is only measured, never fitted. Writes
inpainter_<preset>_colour.json beside the inpainter (models/weights, or a candidate's `--weights`
folder: fit a retrained inpainter before comparing it with the shipped one): the weights, the
features they belong to, the inpainter checkpoint's sha256 (a retrained inpainter is not
corrected with stale weights) and the fit's figures.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

from models.colour import FEATURES, RING_PX, SAMPLE_STRIDE, ColourCorrection, bgr_to_lab, colour_path, file_sha256, lab_features
from models.spec import WEIGHTS_DIR
from training.data.dataset import CACHE, FaceCache, SampleMaker
from training.evaluate import Models
from training.evaluate_real import _subset, ita_bin, ita_degrees, reconstruct
from training.metrics import mean_lab

RIDGE = 10.0     # on features of tens of Lab units; the bias is not penalised
BATCH = 32


def collect(models: Models, split: str, n: int, preset: str, cache=CACHE):
    """(features (M, F), true hole mean Lab (M, 3), generated hole mean Lab (M, 3),
    the uncorrected outputs' CIEDE2000 inputs, ITA bins) for the usable faces of `split`."""
    faces = FaceCache(split, cache)
    if not len(faces):
        raise SystemExit(f"fit_colour: the {split!r} split of {cache} is empty (prepare the data first)")
    idx = np.linspace(0, len(faces) - 1, min(n, len(faces))).round().astype(int)
    faces = _subset(faces, idx)
    maker = SampleMaker(faces, train=False)
    X, true_cv, gen_cv, true_sk, windows_all, holes_all, gens_all, bins = [], [], [], [], [], [], [], []
    for start in range(0, len(faces), BATCH):
        ids = list(range(start, min(start + BATCH, len(faces))))
        _, _, _, _, samples, outs = reconstruct(models, maker, ids, preset)
        windows = np.stack([s["image"] for s in samples])
        holes = np.stack([s["hole"] for s in samples]) > 0.5
        targets = np.stack([s["target"] for s in samples])
        outs = np.stack(outs)
        feats = lab_features(bgr_to_lab(windows), bgr_to_lab(outs), holes)
        tgt_lab = bgr_to_lab(targets)
        for k, (i, f) in enumerate(zip(ids, feats)):
            if f is None or holes[k].sum() < 50:
                continue
            X.append(f)
            true_cv.append(tgt_lab[k][holes[k]].mean(0))
            gen_cv.append(f[FEATURES.index("mean_generated") * 3: FEATURES.index("mean_generated") * 3 + 3])
            true_sk.append(mean_lab(targets[k], holes[k]))
            windows_all.append(windows[k]); holes_all.append(holes[k]); gens_all.append(outs[k])
            bins.append(ita_bin(ita_degrees(faces.images[i], faces.landmarks[i])))
        print(f"fit_colour: {split} {min(start + BATCH, len(faces))}/{len(faces)}", file=sys.stderr, flush=True)
    return dict(X=np.array(X), true_cv=np.array(true_cv), gen_cv=np.array(gen_cv), true=np.array(true_sk),
                windows=np.array(windows_all), holes=np.array(holes_all), generated=np.array(gens_all),
                bins=np.array(bins))


def fit_ridge(X: np.ndarray, Y: np.ndarray, lam: float = RIDGE) -> np.ndarray:
    """[X, 1] @ W ~ Y, W (F + 1, 3), ridge on all but the bias."""
    A = np.hstack([X, np.ones((len(X), 1))])
    reg = lam * np.eye(A.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(A.T @ A + reg, A.T @ Y)


def measure(correction: ColourCorrection | None, data: dict) -> dict:
    """Mean CIEDE2000 (skimage, as training.evaluate_real) of the hole's mean colour, uncorrected and
    corrected the way the product corrects (per-pixel Lab shift of the uint8 window), per ITA bin."""
    from skimage.color import deltaE_ciede2000

    def per_face(outs):
        got = np.array([mean_lab(o, h) for o, h in zip(outs, data["holes"])])
        return deltaE_ciede2000(got, data["true"])

    res = {"n": int(len(data["X"]))}
    before = per_face(data["generated"])
    after = per_face(correction.correct(data["windows"], data["holes"].astype(np.float32), data["generated"])) \
        if correction is not None else before
    for name, de in (("uncorrected", before), ("corrected", after)):
        res[name] = {"mean": round(float(de.mean()), 3),
                     "by_ita": {b: round(float(de[data["bins"] == b].mean()), 3) for b in sorted(set(data["bins"]))}}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Fit the inpainter's colour correction on the training split.")
    ap.add_argument("--faces", type=int, default=12000, help="training faces to fit on (evenly spaced)")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--check", default="real", help="held-out split measured (never fitted); '' for none")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--weights", type=Path, default=None,
                    help="a folder with a candidate inpainter_<preset>.onnx (default: the shipped one)")
    args = ap.parse_args(argv)
    onnx = (args.weights or WEIGHTS_DIR) / f"inpainter_{args.preset}.onnx"
    if not onnx.exists():
        print(f"fit_colour: no {onnx}", file=sys.stderr)
        return 2
    models = Models(preset=args.preset, weights=args.weights, colour=False)
    train = collect(models, "train", args.faces, args.preset, args.cache)
    W = fit_ridge(train["X"], train["true_cv"] - train["gen_cv"])
    spec = {
        "what": "Lab shift of the generated hole = [features, 1] @ weights (models.colour)",
        "features": list(FEATURES), "ring_px": list(RING_PX), "sample_stride": SAMPLE_STRIDE,
        "inpainter": onnx.name, "inpainter_sha256": file_sha256(onnx),
        "state_dict_sha256": file_sha256(onnx.with_suffix(".pt")) if onnx.with_suffix(".pt").exists() else None,
        "fitted": {"command": f"python -m training.fit_colour --faces {args.faces} --preset {args.preset}"
                              + (f" --weights {args.weights}" if args.weights else ""),
                   "split": "train", "faces": int(len(train["X"])), "ridge": RIDGE,
                   "date": datetime.date.today().isoformat()},
    }
    correction = ColourCorrection(W, spec)
    spec["measured"] = {"train": measure(correction, train)}
    if args.check:
        spec["measured"][args.check] = measure(correction, collect(models, args.check, 10 ** 9, args.preset, args.cache))
    out = colour_path(onnx)
    out.write_text(json.dumps({**spec, "weights": np.round(W, 7).tolist()}, indent=1) + "\n")
    print(json.dumps(spec["measured"], indent=1))
    print(f"fit_colour: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
