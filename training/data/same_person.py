"""Different photos of the same people, for the own-face path's real same-person evaluation.

    python -m training.data.same_person --source PATH/TO/faceRecognition [--per-person 8]

No shared set has identity labels (the order of ../shared's CelebA-HQ tar is not CelebAMask-HQ's, so
CelebA's labels cannot be joined to it). The source used instead:

* photos: the `Celeb/` folder of github.com/matush97/faceRecognition at commit
  e7ba6c0951ace22b43ef32fc903a7dae1babe55d: 6,300 CelebA "in the wild" photos (img_celeba, CelebA's
  original file names) of 299 people, 291 of them with 3 or more photos;
* labels: `identity_CelebA.txt` in the same commit, CelebA's own identity file (the same content as the
  copy in github.com/sdulloor/DCGAN-tensorflow @ bbf5938d37de2860d76fb93a1ebf0650dc3d45c7).

Licence: CelebA (Liu et al., ICCV 2015, mmlab.ie.cuhk.edu.hk/projects/CelebA.html) is for
non-commercial research and educational purposes only; the repository adds no licence of its own. So the
photos, the labels and everything built from them stay in the ignored `data/` folder, never in git.
Get the source with

    git clone https://github.com/matush97/faceRecognition && git -C faceRecognition checkout e7ba6c09

This script aligns up to `--per-person` photos of every person with 3 or more to the canonical 256 crop
(mediapipe's mesh and the stream's upper-face similarity fit, exactly as `training.data.prepare` does)
and writes `data/raw/identities/celeba_same_person/{crops/*.jpg, meta.npz}` in the cache layout that
`training.data.dataset.FaceCache(split="same_person", cache=...)` reads, with an `identity` column.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SAME_PERSON = ROOT / "data" / "raw" / "identities" / "celeba_same_person"
SOURCE = "github.com/matush97/faceRecognition @ e7ba6c0951ace22b43ef32fc903a7dae1babe55d (Celeb/, identity_CelebA.txt)"
MIN_PHOTOS = 3


def missing_message(folder: Path | None = None, templates: Path | None = None) -> str | None:
    """One line saying how to build the set (and the mask templates its probes are covered with),
    or None when both are there."""
    folder = folder or SAME_PERSON
    if not (folder / "meta.npz").exists():
        return (f"no same-person set in {folder}: get {SOURCE} (CelebA, non-commercial research only) and run "
                "python -m training.data.same_person --source PATH/TO/faceRecognition")
    from training.data.synth import templates_missing
    return templates_missing(templates or ROOT / "data" / "raw" / "maskthefacetemplates")


def read_identities(path: Path) -> dict[str, int]:
    """CelebA's identity_CelebA.txt: `000001.jpg 2880` per line (a header line, CRLF or LF)."""
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def choose_photos(files: list[str], identity: dict[str, int], per_person: int) -> dict[int, list[str]]:
    """Up to `per_person` photos (lowest file numbers first) of each person with >= MIN_PHOTOS."""
    people = defaultdict(list)
    for f in sorted(files):
        if f in identity:
            people[identity[f]].append(f)
    return {p: fs[:per_person] for p, fs in sorted(people.items()) if len(fs) >= MIN_PHOTOS}


def build(source: Path, out: Path = SAME_PERSON, per_person: int = 8, workers: int = 1) -> int:
    from concurrent.futures import ProcessPoolExecutor
    from models.spec import CANONICAL_FACE_PATH
    from training.data.prepare import _detect, _warp

    identity = read_identities(source / "identity_CelebA.txt")
    people = choose_photos([p.name for p in (source / "Celeb").glob("*.jpg")], identity, per_person)
    items = [dict(key=f"celeba_wild_{Path(f).stem}", path=str(source / "Celeb" / f), dataset="celeba_wild",
                  gender=-1, age=-1, parsing="", identity=pid) for pid, fs in people.items() for f in fs]
    (out / "crops").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers) as ex:
        found = [(it, lm) for it, lm in zip(items, ex.map(_detect, [it["path"] for it in items], chunksize=16))
                 if lm is not None]
    canonical = np.load(CANONICAL_FACE_PATH)
    with ProcessPoolExecutor(workers) as ex:
        warped = list(ex.map(_warp, [(it, lm, canonical, out) for it, lm in found], chunksize=16))
    kept = [it for it, _ in found]
    np.savez(out / "meta.npz",
             keys=np.array([it["key"] for it in kept]), dataset=np.array([it["dataset"] for it in kept]),
             gender=np.full(len(kept), -1, np.int8), age=np.full(len(kept), -1, np.int16),
             split=np.array(["same_person"] * len(kept)), identity=np.array([it["identity"] for it in kept]),
             has_parsing=np.zeros(len(kept), bool), landmarks=np.stack([w[0] for w in warped]).astype(np.float32),
             matrix=np.stack([w[1] for w in warped]).astype(np.float32), source_hw=np.stack([w[2] for w in warped]))
    (out / "SOURCE.txt").write_text(f"{SOURCE}\nCelebA licence: non-commercial research and educational use only.\n"
                                    f"{len(kept)} of {len(items)} photos aligned (the mesh found no face in the rest), "
                                    f"{len(people)} people, up to {per_person} photos each.\n")
    print(f"aligned {len(kept)}/{len(items)} photos of {len(people)} people into {out}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", type=Path, required=True,
                    help="a checkout of github.com/matush97/faceRecognition (Celeb/ and identity_CelebA.txt)")
    ap.add_argument("--out", type=Path, default=SAME_PERSON)
    ap.add_argument("--per-person", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    for need in (args.source / "Celeb", args.source / "identity_CelebA.txt"):
        if not need.exists():
            print(f"error: {need} not found: get {SOURCE}", file=sys.stderr)
            return 2
    return build(args.source, args.out, args.per_person, args.workers)


if __name__ == "__main__":
    sys.exit(main())
