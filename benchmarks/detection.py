"""How often do we find masked faces? Measured, not assumed.

    python -m benchmarks.detection [--photos DIR] [--clips A.mp4 B.mp4] [--out DIR]
                                   [--trackers mediapipe torch]

Photos (still-image mode): share of photos where mediapipe's mesh alone finds a
face, where the full-range BlazeFace detector does, and where our tracker (mesh,
then the detector for what the mesh missed) does. Clips (video mode): share of
frames with a face, how many faces came from the mesh vs the detector fallback,
how many distinct track ids were created (1 is ideal for one person), and the
tracker's cost per frame. `--trackers torch` measures the GPU tracker (mediapipe's networks run
by torch, stream.torch_tracking; on the CPU unless --device cuda) the same way. Writes JSON + Markdown.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_tracker(kind: str, mode, max_faces: int = 1, device: str = "cpu"):
    from stream.tracking import FaceTracker
    if kind == "torch":
        from stream.torch_tracking import TorchFaceTracker
        return TorchFaceTracker(mode, max_faces=max_faces, device=device)
    return FaceTracker(mode, max_faces=max_faces)


def photos_report(paths: list[Path], kind: str = "mediapipe", device: str = "cpu") -> dict:
    import mediapipe as mp
    from stream.tracking import RunningMode
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1)
    det = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
    tracker = make_tracker(kind, RunningMode.IMAGE, 1, device)
    n = mesh_found = det_found = ours = 0
    for p in paths:
        img = cv2.imread(str(p))
        if img is None:
            continue
        n += 1
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        mesh_found += bool(mesh.process(rgb).multi_face_landmarks)
        det_found += bool(det.process(rgb).detections)
        ours += bool(tracker.process(img))
    return {"tracker": kind, "photos": n, "mesh_only": mesh_found / max(n, 1), "full_range_detector": det_found / max(n, 1),
            "tracker_mesh_then_detector": ours / max(n, 1)}


def clip_report(path: Path, max_faces: int = 1, kind: str = "mediapipe", device: str = "cpu") -> dict:
    import av
    from stream.tracking import RunningMode
    tracker = make_tracker(kind, RunningMode.VIDEO, max_faces, device)
    frames = with_face = 0
    ids, sources, times = set(), {"mesh": 0, "detector": 0}, []
    with av.open(str(path)) as c:
        for fr in c.decode(video=0):
            img = fr.to_ndarray(format="bgr24")
            t = time.perf_counter()
            faces = tracker.process(img)
            times.append((time.perf_counter() - t) * 1e3)
            frames += 1
            with_face += bool(faces)
            for f in faces:
                ids.add(f.track_id)
                sources[f.source] += 1
    return {"tracker": kind, "clip": path.name, "frames": frames, "frames_with_face": with_face / max(frames, 1),
            "faces_from_mesh": sources["mesh"], "faces_from_detector": sources["detector"],
            "track_ids": len(ids), "detector_runs": tracker.stats["detector_runs"],
            "track_ms_mean": float(np.mean(times)), "track_ms_p95": float(np.percentile(times, 95))}


DEFAULT_PHOTOS = ROOT / "data" / "raw" / "rmfd_dev"


def missing_data(folder: Path, photos: list, clips: list) -> str | None:
    """Why there is nothing to measure (an empty table is not a result), with the command that
    prepares the data; None when there is something."""
    if photos or clips:
        return None
    where = f"no photos in {folder}" if folder.is_dir() else f"photo folder {folder} does not exist"
    hint = ("python -m training.data.prepare extracts rmfd_dev there" if folder == DEFAULT_PHOTOS
            else "pass --photos DIR with .jpg/.png photos")
    return f"nothing to measure: {where} ({hint}) and no clips (--clips A.mp4 ...)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--clips", type=Path, nargs="*", default=sorted(
        (ROOT.parent / "shared" / "data" / "real" / "videos").glob("*.mp4")))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "detection")
    ap.add_argument("--trackers", nargs="+", choices=["mediapipe", "torch"], default=["mediapipe"])
    ap.add_argument("--device", default="cpu", help="the torch tracker's device (cpu, cuda)")
    args = ap.parse_args(argv)
    for c in args.clips:
        if not c.exists():
            print(f"error: clip not found: {c}", file=sys.stderr)
            return 2
    photos = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    problem = missing_data(args.photos, photos, args.clips)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"photos": [photos_report(photos, k, args.device) for k in args.trackers] if photos else [],
              "clips": [clip_report(c, 1, k, args.device) for k in args.trackers for c in args.clips]}
    (args.out / "detection.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| tracker | input | frames/photos | with a face | from mesh | from detector | track ids | "
             "track ms (mean / p95) |", "|---|---|---|---|---|---|---|---|"]
    for ph in result["photos"]:
        lines.append(f"| {ph['tracker']} | photos ({args.photos.name}) | {ph['photos']} | "
                     f"{ph['tracker_mesh_then_detector']:.1%} (mediapipe's mesh alone {ph['mesh_only']:.1%}, "
                     f"detector alone {ph['full_range_detector']:.1%}) | | | | |")
    for c in result["clips"]:
        lines.append(f"| {c['tracker']} | {c['clip']} | {c['frames']} | {c['frames_with_face']:.1%} | {c['faces_from_mesh']} | "
                     f"{c['faces_from_detector']} | {c['track_ids']} | {c['track_ms_mean']:.1f} / {c['track_ms_p95']:.1f} |")
    md = "\n".join(lines) + "\n"
    (args.out / "detection.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
