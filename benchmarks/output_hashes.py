"""Per-frame md5 hashes of what `Unmasker` returns, to prove a change left the outputs bit for bit alone.

    python -m benchmarks.output_hashes record  --out DIR [--clips A.mp4 B.mp4 ...] [--frames 60]
    python -m benchmarks.output_hashes compare --out DIR     # recompute and compare, exit 1 on a difference

For each clip (default: the bundled sample) and each setup in `SETUPS` it hashes, per frame, the
output image and every `Face` field (box, landmarks, track id, mask, masked, gender, gender score,
landmark source); timings are left out. Only the public API is used, so the hashes survive any
restructuring behind it. The hashes are written to DIR (never commit hashes of third-party clips'
frames together with the frames; the hashes alone reveal nothing of them).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "sample.mp4"


def _md5(a) -> str:
    return hashlib.md5(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()


def frame_record(res) -> dict:
    from stream.stages import host_image
    image = host_image(res.image)
    return {
        "image": _md5(image),
        "faces": [{"box": [int(v) for v in f.box], "landmarks": _md5(f.landmarks), "track_id": int(f.track_id),
                   "mask": _md5(f.mask), "masked": bool(f.masked), "gender": f.gender,
                   "gender_score": repr(float(f.gender_score)), "landmark_source": f.landmark_source}
                  for f in res.faces],
    }


def read_frames(path: Path, n: int) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while len(frames) < n:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    if not frames:
        raise SystemExit(f"error: no frames could be read from {path}")
    return frames, fps


def _cpu_model():
    from stream import Unmasker
    return Unmasker(method="model", backend="onnxruntime")


def _cpu_classical():
    from stream import Unmasker
    return Unmasker(method="classical")


def _torch_cpu():
    # The GPU path's torch code run on the CPU in fp32 (how the tests check it without a GPU).
    from stream.gpu import GpuUnmasker
    return GpuUnmasker(device="cpu", tracker="torch")


# name -> (factory, video mode?, frames used of each clip at most)
SETUPS = {
    "model_video": (_cpu_model, True, None),
    "model_image": (_cpu_model, False, 8),
    "classical_video": (_cpu_classical, True, 30),
}
try:
    import torch  # noqa: F401  (the inference install has no torch)
    SETUPS["torch_cpu_video"] = (_torch_cpu, True, 10)
except ImportError:
    pass


def compute(clips: list[Path], frames: int) -> dict:
    out = {}
    for clip in clips:
        images, fps = read_frames(clip, frames)
        for name, (factory, video, cap) in SETUPS.items():
            um = factory()
            recs = []
            try:
                for i, img in enumerate(images[:cap or len(images)]):
                    res = um.process(img, timestamp_ms=i * 1000.0 / fps) if video else um.process(img)
                    recs.append(frame_record(res))
            finally:
                um.close()
            out[f"{clip.name}:{name}"] = recs
            print(f"{clip.name} {name}: {len(recs)} frames, "
                  f"{sum(len(r['faces']) for r in recs)} faces", file=sys.stderr)
    return out


def compare(ref: dict, new: dict) -> list[str]:
    diffs = []
    for key in sorted(set(ref) | set(new)):
        a, b = ref.get(key), new.get(key)
        if a is None or b is None:
            diffs.append(f"{key}: only in {'reference' if b is None else 'new run'}")
            continue
        if len(a) != len(b):
            diffs.append(f"{key}: {len(a)} frames in the reference, {len(b)} now")
        for i, (fa, fb) in enumerate(zip(a, b)):
            if fa != fb:
                fields = [k for k in ("image", "faces") if fa[k] != fb[k]]
                diffs.append(f"{key} frame {i}: {', '.join(fields)} differ")
    return diffs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("record", "compare"))
    ap.add_argument("--out", required=True, type=Path, help="folder for hashes.json")
    ap.add_argument("--clips", nargs="*", type=Path, default=None, help="video files (default: the sample)")
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args(argv)
    path = args.out / "hashes.json"
    if args.action == "record":
        clips = args.clips or [SAMPLE]
        data = {"clips": [str(c) for c in clips], "frames": args.frames, "hashes": compute(clips, args.frames)}
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
        print(f"wrote {path}", file=sys.stderr)
        return 0
    if not path.exists():
        print(f"error: no reference at {path}: run 'record' first", file=sys.stderr)
        return 2
    ref = json.loads(path.read_text())
    clips = args.clips or [Path(c) for c in ref["clips"]]
    diffs = compare(ref["hashes"], compute(clips, ref["frames"]))
    for d in diffs[:40]:
        print(d)
    n = sum(len(v) for v in ref["hashes"].values())
    print(f"{'IDENTICAL' if not diffs else 'DIFFERENT'}: {n} reference frames, {len(diffs)} differences")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
