"""Align the shared face datasets to the canonical 256 crop and cache them.

    python -m training.data.prepare [--shared ../shared] [--out data/cache] [--workers 2]

Pass 1 runs mediapipe's face mesh (still-image mode) on every *unmasked* face
and keeps the 468 teacher landmarks. The canonical mean shape
(models/canonical_face_256.npy) is the mean of the FFHQ-aligned meshes. Pass 2
warps every face to the canonical crop with the same upper-face similarity fit
the stream uses at run time, and writes:

    data/cache/crops/<key>.jpg      256x256 aligned face
    data/cache/parsing/<key>.png    CelebAMask-HQ parsing in the crop (CelebA-HQ only)
    data/cache/meta.npz             keys, dataset, gender, age, split, landmarks (N,468,2)

The split (90/5/5) is decided once from a hash of the key, so it never depends
on the order of files or on which faces the mesh found.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from models.spec import CANONICAL_FACE_PATH
from stream.alignment import CANONICAL_SIZE, UPPER_FACE, ffhq_similarity, fit_similarity, transform_points

ROOT = Path(__file__).resolve().parents[2]


# Share of the UTKFace "aligned & cropped" release (mostly Black, Indian and
# Asian faces) that no model ever trains on: the `real` split that
# `training.evaluate --real` reports first. It is the evaluation whose faces
# differ most from the training mix the first models were fitted to.
REAL_SHARE = 25


def split_of(key: str, dataset: str = "") -> str:
    h = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 100
    if dataset == "utkface_extra":
        # Its own hash bins: the first REAL_SHARE % are held out for good.
        if h < REAL_SHARE:
            return "real"
        h = (h - REAL_SHARE) * 100 // (100 - REAL_SHARE)
    return "train" if h < 90 else ("val" if h < 95 else "test")


def extract(shared: Path, raw: Path) -> None:
    for tar in ["faces/utkface_200.tar", "faces/utkface_extra_200.tar", "faces/celebahq_256.tar", "faces/ffhq_256.tar",
                "masks/maskthefacetemplates.tar", "segmentation/maskedface_seg_train_384.tar",
                "real/rmfd_dev.tar"]:
        dest = raw / Path(tar).stem
        if dest.exists():
            continue
        dest.mkdir(parents=True)
        with tarfile.open(shared / "data" / tar) as t:
            t.extractall(dest, filter="data")


def list_faces(raw: Path) -> list[dict]:
    items = []
    for p in sorted((raw / "utkface_200").rglob("*.jpg")):
        parts = p.name.split("_")
        try:
            age, gender = int(parts[0]), int(parts[1])
        except (ValueError, IndexError):
            continue
        items.append(dict(key=f"utk_{p.stem.split('.')[0]}", path=str(p), dataset="utkface",
                          gender=gender, age=age, parsing=""))
    # race: 0 White, 1 Black, 2 Asian, 3 Indian, 4 other (UTKFace's own, noisy labels).
    for p in sorted((raw / "utkface_extra_200").rglob("*.jpg")):
        parts = p.name.split("_")
        try:
            age, gender, race = int(parts[0]), int(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            continue
        items.append(dict(key=f"utkx_{p.stem.split('.')[0]}", path=str(p), dataset="utkface_extra",
                          gender=gender, age=age, parsing="", race=race))
    celeba = next((raw / "celebahq_256").rglob("images")).parent
    for p in sorted((celeba / "images").glob("*.webp")):
        items.append(dict(key=f"celeba_{p.stem}", path=str(p), dataset="celebahq", gender=-1,
                          age=-1, parsing=str(celeba / "parsing" / f"{p.stem}.png")))
    ffhq = next((raw / "ffhq_256").rglob("gender.csv")).parent
    with open(ffhq / "gender.csv") as f:
        genders = {r["file"]: r["gender"] for r in csv.DictReader(f)}
    for p in sorted((ffhq / "images").glob("*.jpg")):
        g = {"male": 0, "female": 1}.get(genders.get(p.name, ""), -1)
        items.append(dict(key=f"ffhq_{p.stem}", path=str(p), dataset="ffhq", gender=g, age=-1,
                          parsing=""))
    return items


_mesh = None


def _detect(path: str):
    """468 landmarks in image pixels, or None when the mesh finds no face."""
    global _mesh
    import mediapipe as mp
    if _mesh is None:
        _mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                refine_landmarks=False, min_detection_confidence=0.3)
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        return None
    # Tightly cropped faces (UTKFace) are found far more often with a margin.
    pad = img.shape[0] // 3
    padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    res = _mesh.process(cv2.cvtColor(padded, cv2.COLOR_BGR2RGB))
    if not res.multi_face_landmarks:
        return None
    h, w = padded.shape[:2]
    lm = np.array([(p.x * w - pad, p.y * h - pad) for p in res.multi_face_landmarks[0].landmark],
                  np.float32)
    return lm


def _warp(args):
    item, lm, canonical, out = args
    img = cv2.imread(item["path"], cv2.IMREAD_COLOR)
    m = fit_similarity(lm[UPPER_FACE], canonical[UPPER_FACE])
    # Replicate, not reflect, at the borders: tightly cropped photos (UTKFace)
    # would otherwise get a mirrored mouth just under the chin, which the
    # inpainter would learn to draw.
    crop = cv2.warpAffine(img, m, (CANONICAL_SIZE, CANONICAL_SIZE), flags=cv2.INTER_AREA
                          if np.sqrt(abs(np.linalg.det(m[:, :2]))) < 1 else cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)
    cv2.imwrite(str(out / "crops" / f"{item['key']}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if item["parsing"]:
        par = cv2.imread(item["parsing"], cv2.IMREAD_GRAYSCALE)
        # Parsing maps are 512 px for CelebA-HQ; rescale to the image first.
        s = img.shape[0] / par.shape[0]
        ms = m @ np.array([[s, 0, 0], [0, s, 0], [0, 0, 1]])
        par_c = cv2.warpAffine(par, ms, (CANONICAL_SIZE, CANONICAL_SIZE), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        cv2.imwrite(str(out / "parsing" / f"{item['key']}.png"), par_c)
    return transform_points(lm, m), m, np.array(img.shape[:2], np.int32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--raw", type=Path, default=ROOT / "data" / "raw")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "cache")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="only the first N faces (smoke runs)")
    args = ap.parse_args(argv)

    extract(args.shared, args.raw)
    items = list_faces(args.raw)
    if args.limit:
        items = items[:: max(1, len(items) // args.limit)][: args.limit]
    (args.out / "crops").mkdir(parents=True, exist_ok=True)
    (args.out / "parsing").mkdir(parents=True, exist_ok=True)

    lm_path = args.out / "landmarks_raw.npz"
    if lm_path.exists():
        d = np.load(lm_path, allow_pickle=False)
        raw = dict(zip(d["keys"].tolist(), d["landmarks"]))
    else:
        raw = {}
    todo = [it for it in items if it["key"] not in raw]
    with ProcessPoolExecutor(args.workers) as ex:
        for it, lm in zip(todo, tqdm(ex.map(_detect, [t["path"] for t in todo], chunksize=32),
                                     total=len(todo), desc="face mesh")):
            if lm is not None:
                raw[it["key"]] = lm
    np.savez(lm_path, keys=np.array(list(raw)), landmarks=np.stack(list(raw.values())))
    found = [it for it in items if it["key"] in raw]
    print(f"face mesh found {len(found)}/{len(items)} faces", file=sys.stderr)

    canonical_path = CANONICAL_FACE_PATH
    if not canonical_path.exists():
        aligned = [transform_points(raw[it["key"]], ffhq_similarity(raw[it["key"]]))
                   for it in found if it["dataset"] != "utkface" or it["age"] >= 13]
        canonical = np.median(np.stack(aligned), 0)
        # FFHQ framing puts the chin near the bottom edge; masks reach below
        # the chin, so shrink the face 10 % and lift it 10 px to keep the
        # whole covering (and some neck) inside the crop.
        centre = CANONICAL_SIZE / 2
        canonical = ((canonical - centre) * 0.9 + centre - [0, 10]).astype(np.float32)
        np.save(canonical_path, canonical)
    canonical = np.load(canonical_path)

    jobs = [(it, raw[it["key"]], canonical, args.out) for it in found]
    with ProcessPoolExecutor(args.workers) as ex:
        warped = list(tqdm(ex.map(_warp, jobs, chunksize=32), total=len(jobs), desc="align"))
    crops_lm = [w[0] for w in warped]
    np.savez(args.out / "meta.npz",
             keys=np.array([it["key"] for it in found]),
             dataset=np.array([it["dataset"] for it in found]),
             gender=np.array([it["gender"] for it in found], np.int8),
             age=np.array([it["age"] for it in found], np.int16),
             split=np.array([split_of(it["key"], it["dataset"]) for it in found]),
             race=np.array([it.get("race", -1) for it in found], np.int8),
             has_parsing=np.array([bool(it["parsing"]) for it in found]),
             landmarks=np.stack(crops_lm).astype(np.float32),
             # Where the original photo lies in the crop (the rest is border fill):
             # training replaces that fill with random backgrounds.
             matrix=np.stack([w[1] for w in warped]).astype(np.float32),
             source_hw=np.stack([w[2] for w in warped]))
    print(f"wrote {len(found)} crops to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
