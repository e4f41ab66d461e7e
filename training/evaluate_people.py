"""How well several reference photos are given to the right people (stream.unmasker.set_references).

    python -m training.evaluate_people [--probes 350] [--json PATH]

On the same-person set (`training.data.same_person`: CelebA, research only): each covered probe's
embedding (stream.identity, as the product computes it on the covered face) against every person's
reference photo. Groups of three photos are drawn at random (fixed seed): the probe's own and two
others, or (a stranger) three others; the product's rule (PERSON_MIN_COSINE, PERSON_MARGIN) decides
on one look. Reported: how often the own photo is given, a wrong one, and a stranger given any.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from stream.unmasker import PERSON_MARGIN, PERSON_MIN_COSINE, is_person


def decide(cosines: np.ndarray, threshold: float, margin: float) -> int | None:
    """The photo the product gives (the most similar, if the rule accepts it), or None."""
    best = int(np.argmax(cosines))
    return best if is_person(cosines, best, threshold, margin) else None


def run(n_probes: int = 350, trials: int = 2000, seed: int = 0) -> dict:
    from training.data.dataset import FaceCache, SampleMaker
    from training.data.same_person import SAME_PERSON, missing_message
    from training.data.synth import KINDS, estimate_yaw
    from training.evaluate_real import Embedder, same_person_protocol
    from training.metrics import paste_window
    problem = missing_message(SAME_PERSON)
    if problem:
        raise FileNotFoundError(problem)
    faces = FaceCache("same_person", cache=SAME_PERSON)
    identity = np.load(SAME_PERSON / "meta.npz")["identity"]
    roles = same_person_protocol(identity, np.array([estimate_yaw(lm) for lm in faces.landmarks]), faces.keys)
    people = sorted(roles["reference"])
    embed = Embedder()
    refs = np.stack([embed(faces.images[roles["reference"][p]], faces.landmarks[roles["reference"][p]])
                     for p in people])
    maker = SampleMaker(faces, train=False)
    probes = roles["probes"][::max(1, len(roles["probes"]) // n_probes)][:n_probes]
    genuine, impostors = [], []
    for i in probes:
        s = maker.inpainter_sample(i, 0, "fast", kind=KINDS[i % len(KINDS)])
        covered = paste_window(faces.images[i], s["image"], s["matrix"], s["hole"])
        cos = refs @ embed(covered, faces.landmarks[i])
        own = people.index(int(identity[i]))
        genuine.append(cos[own])
        impostors.append(np.delete(cos, own))
    genuine, impostors = np.array(genuine), np.array(impostors)
    rng = np.random.default_rng(seed)
    grid = {}
    for threshold in (0.2, 0.25, PERSON_MIN_COSINE, 0.35):
        for margin in (0.05, PERSON_MARGIN):
            own = wrong = stranger = 0
            for _ in range(trials):
                k = rng.integers(len(genuine))
                others = rng.choice(impostors.shape[1], 3, replace=False)
                pick = decide(np.array([genuine[k], *impostors[k, others[:2]]]), threshold, margin)
                own += pick == 0
                wrong += pick not in (None, 0)
                stranger += decide(impostors[k, others], threshold, margin) is not None
            grid[f"{threshold:g}/{margin:g}"] = {"own_photo_given": own / trials, "wrong_photo_given": wrong / trials,
                                                 "stranger_given_a_photo": stranger / trials}
    return {"created": time.strftime("%Y-%m-%d %H:%M"), "command": "python -m training.evaluate_people",
            "probes": len(probes), "people": len(people), "group": "3 photos", "trials": trials,
            "genuine_cosine": {"mean": float(genuine.mean()), "p10": float(np.percentile(genuine, 10)),
                               "median": float(np.median(genuine))},
            "impostor_cosine": {"mean": float(impostors.mean()), "p99": float(np.percentile(impostors, 99)),
                                "max": float(impostors.max())},
            "shipped_rule": f"{PERSON_MIN_COSINE:g}/{PERSON_MARGIN:g}", "by_rule (threshold/margin)": grid}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--probes", type=int, default=350)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    try:
        result = run(args.probes)
    except FileNotFoundError as e:
        print(f"error: {e}")
        return 2
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
