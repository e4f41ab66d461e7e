"""Fit the gender probe on face embeddings of masked faces (models/gender.py).

    python -m training.fit_gender                 # fit on the training split, choose on val, write the weights
    python -m training.fit_gender --check real    # ... and measure the shipped rule on the held-out real split

Every labelled face of the split is covered synthetically (a fixed covering kind per face, one in
eight left uncovered, as the analyser's samples), the analyser estimates its landmarks (hidden ones
included, as in the product), and the face embedding runs on the face aligned by them. The probe
(256 -> HIDDEN -> 1, ReLU) is fitted by L-BFGS with balanced class weights; its L2 weight and the
analyser's weight in the fused logit are chosen by the validation split's balanced accuracy on
adults. The real split is only measured (`--check real`), never used to choose anything.
Embeddings are cached in runs/fit_gender/ (keyed by the networks' sha256 and the faces).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from models.colour import file_sha256
from models.gender import ARRAYS, GENDER_PROBE_PATH, GenderProbe, logit
from models.spec import ANALYSER, CANONICAL_SIZE, FACE_EMBEDDING, WEIGHTS_DIR
from training.metrics import balanced_accuracy

HIDDEN = 128
L2_CHOICES = (1e-4, 3e-4)
ANALYSER_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
UNCOVERED_EVERY = 8          # one face in eight is embedded without a covering
CACHE_DIR = Path("runs/fit_gender")


def covering_kind(i: int) -> str:
    from training.data.synth import KINDS
    return "none" if i % UNCOVERED_EVERY == 0 else KINDS[i % len(KINDS)]


def embed_split(split: str, analyser_path: Path, limit: int = 0, quiet: bool = False) -> dict:
    """Embeddings of the split's labelled faces, covered, aligned by the analyser's landmarks."""
    from stream.identity import FaceEmbedder
    from training.data.dataset import FaceCache, SampleMaker
    from training.evaluate import Models
    faces = FaceCache(split)
    idx = np.flatnonzero(faces.gender >= 0)
    if limit and limit < len(idx):
        idx = idx[np.linspace(0, len(idx) - 1, limit).round().astype(int)]
    if not len(idx):
        raise FileNotFoundError(f"no labelled faces in the {split} split: run python -m training.data.prepare")
    key = hashlib.sha256(json.dumps([split, file_sha256(FACE_EMBEDDING), file_sha256(analyser_path),
                                     faces.keys[idx].tolist(), UNCOVERED_EVERY]).encode()).hexdigest()[:16]
    cached = CACHE_DIR / f"{split}-{key}.npz"
    if cached.exists():
        with np.load(cached, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    maker = SampleMaker(faces, train=False)
    embedder = FaceEmbedder(threads=2)
    models = Models(weights=analyser_path.parent, colour=False)
    size = ANALYSER["input_size"]
    out = {k: [] for k in ("emb", "gender", "age", "p_analyser", "covered")}
    t0 = time.time()
    for n, i in enumerate(idx):
        kind = covering_kind(int(i))
        masked, _, kind = maker.synth(faces.images[i], faces.landmarks[i], maker._rng(int(i), 0), kind=kind)
        _, p_female, landmarks = models.analyse([cv2.resize(masked, (size, size), interpolation=cv2.INTER_AREA)])
        out["emb"].append(embedder(masked, landmarks[0] * CANONICAL_SIZE))
        out["gender"].append(int(faces.gender[i]))
        out["age"].append(int(faces.age[i]))
        out["p_analyser"].append(float(p_female[0]))
        out["covered"].append(kind != "none")
        if not quiet and n % 2000 == 0:
            print(f"  {split}: {n}/{len(idx)} faces, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    res = {k: np.asarray(v) for k, v in out.items()}
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(cached, **res)
    return res


def fit_probe(emb: np.ndarray, gender: np.ndarray, l2: float, hidden: int = HIDDEN, seed: int = 0) -> dict:
    """Arrays of the probe (models.gender.ARRAYS) fitted by full-batch L-BFGS, balanced class weights."""
    import torch
    torch.manual_seed(seed)
    x = torch.tensor(emb, dtype=torch.float32)
    y = torch.tensor(gender, dtype=torch.float32)
    weight = torch.where(y == 1, (1 - y.mean()) / y.mean(), torch.ones_like(y))
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.LBFGS(net.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(net(x)[:, 0], y, reduction="none")
                * weight).mean() + l2 * (net[0].weight.square().sum() + net[2].weight.square().sum())
        loss.backward()
        return loss

    opt.step(closure)
    return {"w1": net[0].weight.detach().numpy().T.copy(), "b1": net[0].bias.detach().numpy().copy(),
            "w2": net[2].weight.detach().numpy().T.copy(), "b2": net[2].bias.detach().numpy().copy()}


def scores(probe: GenderProbe, d: dict) -> dict:
    """Balanced accuracy on adults (the issue's measure), and per gender, of the probe alone, the
    analyser alone and the fused rule."""
    adult = d["age"] >= 18
    y = d["gender"][adult]
    p_analyser = d["p_analyser"][adult]
    probe_logit = probe.logit(d["emb"][adult])
    res = {"n_adult": int(adult.sum())}
    for name, pred in (("analyser", p_analyser > 0.5), ("probe", probe_logit > 0),
                       ("fused", probe.fuse(probe_logit, p_analyser) > 0.5)):
        pred = pred.astype(int)
        res[name] = {"balanced_accuracy": balanced_accuracy(y.tolist(), pred.tolist()),
                     "women": float((pred[y == 1] == 1).mean()), "men": float((pred[y == 0] == 0).mean())}
        covered = d["covered"][adult]
        res[name]["covered_balanced_accuracy"] = balanced_accuracy(y[covered].tolist(), pred[covered].tolist())
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="folder with analyser.onnx; the probe is written there")
    ap.add_argument("--train-faces", type=int, default=0, help="use only N labelled training faces (0: all)")
    ap.add_argument("--check", choices=["real"], help="also measure the chosen rule on the held-out real split")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    analyser = args.weights / "analyser.onnx"
    if not analyser.exists():
        print(f"error: no analyser at {analyser}", file=sys.stderr)
        return 2
    try:
        train = embed_split("train", analyser, args.train_faces, args.quiet)
        val = embed_split("val", analyser, 0, args.quiet)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    best = None
    for l2 in L2_CHOICES:
        arrays = fit_probe(train["emb"], train["gender"], l2)
        for w in ANALYSER_WEIGHTS:
            probe = GenderProbe(**arrays, analyser_weight=w, provenance={})
            s = scores(probe, val)
            if not args.quiet:
                print(f"  l2 {l2:g}, analyser weight {w}: val balanced accuracy {s['fused']['balanced_accuracy']:.3f}",
                      file=sys.stderr)
            if best is None or s["fused"]["balanced_accuracy"] > best[0]["fused"]["balanced_accuracy"]:
                best = (s, arrays, l2, w)
    s_val, arrays, l2, w = best
    out = args.weights / GENDER_PROBE_PATH.name
    np.savez(out, **{k: arrays[k].astype(np.float32) for k in ARRAYS})
    spec = {"probe_sha256": file_sha256(out), "embedding_sha256": file_sha256(FACE_EMBEDDING),
            "analyser_sha256": file_sha256(analyser), "embedding_dim": int(arrays["w1"].shape[0]),
            "hidden": HIDDEN, "l2": l2, "analyser_weight": w,
            "fitted_on": {"split": "train", "faces": int(len(train["gender"])), "covered": int(train["covered"].sum()),
                          "uncovered_every": UNCOVERED_EVERY},
            "chosen_on": "val", "val": s_val, "command": "python -m training.fit_gender " + " ".join(argv or sys.argv[1:])}
    if args.check:
        probe = GenderProbe(**arrays, analyser_weight=w, provenance={})
        spec["check_" + args.check] = scores(probe, embed_split(args.check, analyser, 0, args.quiet))
    out.with_suffix(".json").write_text(json.dumps(spec, indent=1) + "\n")
    print(json.dumps({k: spec[k] for k in spec if k in ("l2", "analyser_weight", "val", "check_real")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
