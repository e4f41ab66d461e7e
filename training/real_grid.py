"""The README's grids of real outputs: real public-domain / CC BY photos, covered, run through the product.

    python -m training.real_grid [--photos assets/real_faces] [--out assets] [--json PATH]

Each photo in `assets/real_faces` (sources and licences in its SOURCES.md) gets a covering pasted
onto its lower face (the MaskTheFace templates, placed as the training synthesiser does; one kind
per photo, in a fixed order), so the true lower face is known. The covered photo then goes through
the product itself, `stream.Unmasker` on a still: the covering found by the analyser, the hole,
the reconstruction and the blend are all the shipped path's, nothing is given the true mask.

* `real_grid_generative.jpg`: every photo: covered | generative | the photo itself.
* `real_grid_own_face.jpg`: the people with two photos (`<name>_reference.jpg` beside `<name>N.jpg`):
  reference photo | covered | generative | own face (the reference given) | the photo itself.

Measured per photo, against the photo itself: the mean colour of the hole (CIEDE2000 of the mean
CIELAB over the true covering) and the cosine, by the evaluation's face embedding (shipped in
`models/weights`, never trained with), of the output to the uncovered photo for the covered input,
the generative output and the own-face output.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "real_faces"
# One covering per photo, cycled in file order: the kinds real people wear most, and the largest.
GRID_KINDS = ("surgical_blue", "KN95", "cloth", "surgical", "N95", "surgical_green", "gas")
TILE = 200


def photo_landmarks(image: np.ndarray) -> np.ndarray | None:
    import mediapipe as mp
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        res = mesh.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if not res.multi_face_landmarks:
        return None
    h, w = image.shape[:2]
    return np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark], np.float32)


def cover(image: np.ndarray, landmarks: np.ndarray, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(the photo wearing `kind`, the true covering as bool, the kind used) — placed as the training
    synthesiser does."""
    from training.data.dataset import RAW
    from training.data.synth import MaskSynthesizer
    # All MaskTheFace templates (MIT) when the training data's copy is here, else the one bundled.
    templates = RAW / "maskthefacetemplates"
    synth = MaskSynthesizer(templates if templates.exists() else ROOT / "assets" / "mask_templates")
    # The synthesiser works on a square crop: pad the photo to one (its landmarks stay put).
    h, w = image.shape[:2]
    side = max(h, w)
    square = cv2.copyMakeBorder(image, 0, side - h, 0, side - w, cv2.BORDER_REPLICATE)
    if kind not in synth.templates:     # a fresh clone has only the bundled surgical_blue
        kind = "surgical_blue"
    covered, alpha, _ = synth(square, landmarks, np.random.default_rng(seed), kind=kind)
    return covered[:h, :w], alpha[:h, :w] > 0.5, kind


def _drawn_by(faces, truth_hole: np.ndarray) -> str | None:
    """What redrew the covered person's face (the found face whose covering overlaps the true one most;
    other people in the photo's background may be found too)."""
    overlap = [int(((f.mask > 0) & truth_hole).sum()) for f in faces]
    return faces[int(np.argmax(overlap))].reconstruction if faces and max(overlap) > 0 else None


def _tile(image: np.ndarray, label: str) -> np.ndarray:
    h, w = image.shape[:2]
    k = TILE / max(h, w)
    small = cv2.resize(image, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    out = np.full((TILE, TILE, 3), 255, np.uint8)
    y, x = (TILE - small.shape[0]) // 2, (TILE - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    cv2.rectangle(out, (0, TILE - 18), (TILE, TILE), (255, 255, 255), -1)
    cv2.putText(out, label, (4, TILE - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def run(photos: Path = PHOTOS, out: Path = ROOT / "assets") -> dict:
    from stream import Unmasker
    from training.metrics import delta_e, mean_lab
    embed = None
    from training.evaluate_real import EMBEDDING, Embedder
    if EMBEDDING.exists():
        embed = Embedder()
    files = sorted(p for p in photos.glob("*.jpg") if not p.stem.endswith("_reference"))
    if not files:
        raise FileNotFoundError(f"no photos (*.jpg) in {photos}")
    rows, plain_tiles, pair_tiles = [], [], []
    with Unmasker() as generative:
        for i, path in enumerate(files):
            image = cv2.imread(str(path))
            lm = photo_landmarks(image)
            if lm is None:
                raise RuntimeError(f"no face found in {path}")
            covered, truth_hole, kind = cover(image, lm, GRID_KINDS[i % len(GRID_KINDS)], seed=i)
            gen = generative.process(covered)
            row = {"photo": path.name, "kind": kind, "found": len(gen.faces),
                   "drawn_by": _drawn_by(gen.faces, truth_hole),
                   "de_generative": delta_e(mean_lab(gen.image, truth_hole), mean_lab(image, truth_hole))}
            outputs = {"covered": covered, "generative": gen.image}
            reference_path = photos / f"{path.stem.rstrip('0123456789')}1_reference.jpg"
            if reference_path.exists():
                reference = cv2.imread(str(reference_path))
                with Unmasker(reference=reference) as own:
                    res = own.process(covered)
                outputs["own_face"] = res.image
                row["drawn_by_own_face"] = _drawn_by(res.faces, truth_hole)
                row["de_own_face"] = delta_e(mean_lab(res.image, truth_hole), mean_lab(image, truth_hole))
                row["reference"] = reference_path.name
            if embed is not None:
                truth_emb = embed(image, lm)
                for name, img in outputs.items():
                    row[f"cos_{name}"] = float(embed(img, lm) @ truth_emb)
            rows.append(row)
            plain_tiles.append(np.hstack([_tile(covered, f"covered: {kind}"), _tile(gen.image, "generative"),
                                          _tile(image, "the photo itself")]))
            if "own_face" in outputs:
                pair_tiles.append(np.hstack([_tile(reference, "reference photo"), _tile(covered, f"covered: {kind}"),
                                             _tile(gen.image, "generative"), _tile(outputs["own_face"], "own face"),
                                             _tile(image, "the photo itself")]))
    out.mkdir(parents=True, exist_ok=True)
    # Two photo-rows side by side keep the generative grid about as wide as tall.
    pairs_of_rows = [np.hstack([a, b]) for a, b in zip(plain_tiles[0::2], plain_tiles[1::2] + [np.full_like(plain_tiles[0], 255)])]
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, 88]
    cv2.imwrite(str(out / "real_grid_generative.jpg"), np.vstack(pairs_of_rows), jpeg)
    if pair_tiles:
        cv2.imwrite(str(out / "real_grid_own_face.jpg"), np.vstack(pair_tiles), jpeg)
    mean = lambda key: float(np.mean([r[key] for r in rows if key in r])) if any(key in r for r in rows) else None
    summary = {k: mean(k) for k in ("de_generative", "de_own_face", "cos_covered", "cos_generative", "cos_own_face")}
    return {"created": time.strftime("%Y-%m-%d %H:%M"), "command": "python -m training.real_grid",
            "photos": len(rows), "summary": summary, "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=Path, default=PHOTOS)
    ap.add_argument("--out", type=Path, default=ROOT / "assets", help="folder for the two grid images")
    ap.add_argument("--json", type=Path, help="write the per-photo numbers here")
    args = ap.parse_args(argv)
    try:
        result = run(args.photos, args.out)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}")
        return 2
    for r in result["rows"]:
        print(json.dumps(r, default=float))
    print(json.dumps(result["summary"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
