"""How often do we find masked faces? Measured, not assumed.

    python -m benchmarks.detection [--sections crowd photos clips fringe holes legacy]
                                   [--photos DIR] [--clips A.mp4 B.mp4] [--out DIR]
                                   [--trackers mediapipe torch]

* crowd: generated frames (benchmarks.clips: the masked astronaut tiled N times, ground-truth
  boxes from the face mesh) from ~25 px to ~230 px faces: the detector's recall by face size
  (20-40, 40-80, 80+ px) for YuNet (stream.detection, every scan pass) and for the previous
  detector (mediapipe's full-range BlazeFace on the frame and its tiles), and the video tracker's
  faces per frame against the truth (YuNet vs BlazeFace trackers, max_faces = the faces shown).
* photos: real masked photos (rmfd_dev, no labels; extract into data/raw): the reference is YuNet
  run offline at twice the photo's resolution, all passes; recall of our still-image tracker
  against it by face size and by yaw (from the reference's keypoints: nose offset from the eyes'
  midpoint over the eye distance: < 0.15 ~ frontal, 0.15-0.35 ~ 20-45 deg, > 0.35 ~ 45 deg+);
  photos where no face is found.
* clips: real videos: faces per frame of the Unmasker (video mode, every frame) against the
  reference (YuNet at the clip's own resolution, every tile) on every 3rd frame, the share of
  reference-visible frames where we have every face, and the share of frames with a redrawn face
  where the hole touches the eyes (any changed pixel in a disk of 0.2 eye distances around the
  reference's eye keypoints: independent of our own landmarks).
* fringe: the 1080p case of benchmarks.edges (teal covering, known truth), with the exact and a
  3-crop-pixel-short segmentation, refined and not, and with the shipped analyser: the share of
  a 10 px ring around the covering's edge left covering-coloured, the covering IoU, and the
  visible face changed (share of the covering's area).
* holes (not run by default): the still-image hole (Face.mask) against hand-labelled coverings
  (MaskedFace-Net photos, extracted by training.data.prepare; the analyser trained on them, so it
  measures the hole's edge rule): IoU, covering left outside the hole, visible face redrawn.
* legacy: the earlier report (mesh alone / BlazeFace / tracker on photos; frames with a face,
  sources and track ids on clips).
Writes JSON + Markdown.
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



SIZE_BINS = ((20, 40), (40, 80), (80, 10_000))
YAW_BINS = ((0.0, 0.15), (0.15, 0.35), (0.35, 10.0))
CROWDS = (((640, 360), 100), ((1280, 720), 150), ((1280, 720), 64), ((1280, 720), 16), ((1280, 720), 4))


def _bin_label(lo, hi, unit="px"):
    return f"{lo}+ {unit}" if hi >= 1000 else f"{lo}-{hi} {unit}"


def _matches(truth, found_boxes, min_iou=0.3) -> list[bool]:
    from stream.detection import box_iou
    return [any(box_iou(g, b) >= min_iou for b in found_boxes) for g in truth]


def _by_bins(values, hits, bins, unit="px") -> dict:
    out = {}
    for lo, hi in bins:
        sel = [h for v, h in zip(values, hits) if lo <= v < hi]
        out[_bin_label(lo, hi, unit)] = {"faces": len(sel), "recall": (sum(sel) / len(sel)) if sel else None}
    return out


def _blazeface_boxes(tracker, bgr):
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return [d[0] for d in tracker._run_detector(rgb)]


def crowd_report(frames_per_clip: int = 24) -> dict:
    from benchmarks.clips import FrameRenderer
    from stream.detection import YuNetDetector
    from stream.tracking import FaceTracker, RunningMode
    yunet = YuNetDetector()
    blaze = FaceTracker(RunningMode.IMAGE, detector="blazeface")
    sizes, hits = [], {"yunet": [], "blazeface": []}
    ms = {"yunet": [], "blazeface": []}
    for size, n in CROWDS:
        r = FrameRenderer(size, n)
        img, truth = r.render(0), r.face_boxes(0)
        sizes += [b[2] - b[0] for b in truth]
        t = time.perf_counter()
        hits["yunet"] += _matches(truth, [d.box for d in yunet.detect(img)])
        ms["yunet"].append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        hits["blazeface"] += _matches(truth, _blazeface_boxes(blaze, img))
        ms["blazeface"].append((time.perf_counter() - t) * 1e3)
    blaze.close()
    detectors = {k: {"by_size": _by_bins(sizes, hits[k], SIZE_BINS), "recall": float(np.mean(hits[k])),
                     "ms_per_frame_mean": float(np.mean(ms[k]))} for k in hits}
    trackers = []
    for size, n in (((1280, 720), 16), ((1280, 720), 40)):
        r = FrameRenderer(size, n)
        for kind in ("yunet", "blazeface"):
            tr = FaceTracker(RunningMode.VIDEO, max_faces=n, detector=kind)
            per_frame, found, times = [], [], []
            for i in range(frames_per_clip):
                img, truth = r.render(i), r.face_boxes(i)
                t = time.perf_counter()
                faces = tr.process(img)
                times.append((time.perf_counter() - t) * 1e3)
                m = _matches(truth, [f.box for f in faces])
                per_frame.append(sum(m))
                found.append(len(faces))
            tr.close()
            trackers.append({"detector": kind, "frame": f"{size[0]}x{size[1]}", "faces_shown": n,
                             "face_px": float(np.mean([b[2] - b[0] for b in r.face_boxes(0)])),
                             "true_faces_per_frame": float(np.mean(per_frame)),
                             "true_faces_per_frame_last_half": float(np.mean(per_frame[frames_per_clip // 2:])),
                             "faces_reported_per_frame": float(np.mean(found)),
                             "track_ms_mean": float(np.mean(times))})
    return {"detectors": detectors, "trackers": trackers, "frames_per_clip": frames_per_clip}


REFERENCE_SCORE = 0.7     # the offline reference keeps only confident faces (hands score 0.6-0.7)


def _reference(detector, img):
    """The offline reference: YuNet at twice the image's resolution, every pass."""
    big = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    out = []
    for d in detector.detect(big):
        out.append(type(d)(tuple(int(round(v / 2)) for v in d.box), d.keypoints / 2, d.score))
    return out


def _yaw_proxy(kp) -> float:
    mid = (kp[0] + kp[1]) / 2
    iod = float(np.linalg.norm(kp[1] - kp[0])) or 1.0
    return abs(float(kp[2][0] - mid[0])) / iod


def photos_reference_report(paths: list[Path]) -> dict:
    from stream.detection import YuNetDetector
    from stream.tracking import FaceTracker, RunningMode
    ref_det = YuNetDetector(score_threshold=REFERENCE_SCORE, fine_side=4096)
    trackers = {k: FaceTracker(RunningMode.IMAGE, max_faces=16, detector=k) for k in ("yunet", "blazeface")}
    sizes, yaws, hits = [], [], {k: [] for k in trackers}
    none_found = {k: 0 for k in trackers}
    photos = photos_with_ref = 0
    for p in paths:
        img = cv2.imread(str(p))
        if img is None:
            continue
        photos += 1
        ref = _reference(ref_det, img)
        photos_with_ref += bool(ref)
        sizes += [d.side for d in ref]
        yaws += [_yaw_proxy(d.keypoints) for d in ref]
        for k, tr in trackers.items():
            faces = tr.process(img)
            none_found[k] += bool(ref) and not faces
            hits[k] += _matches([d.box for d in ref], [f.box for f in faces])
    for tr in trackers.values():
        tr.close()
    return {"photos": photos, "photos_with_reference_face": photos_with_ref, "reference_faces": len(sizes),
            "trackers": {k: {"recall": float(np.mean(hits[k])) if hits[k] else None,
                             "photos_with_no_face_found": none_found[k] / max(photos_with_ref, 1),
                             "by_size": _by_bins(sizes, hits[k], SIZE_BINS),
                             "by_yaw_proxy": _by_bins(yaws, hits[k], YAW_BINS, "")} for k in trackers}}


EYE_DISK = 0.2       # radius, in eye distances: the eye, its lids and what is just under them
EYE_OPENING = 0.1    # the eye itself (an eye opening is ~0.2 eye distances tall)


def _eye_disks(shape, ref, radius: float = EYE_DISK) -> np.ndarray:
    """Disks of `radius` eye distances around the reference's eye keypoints."""
    out = np.zeros(shape[:2], np.uint8)
    for d in ref:
        iod = float(np.linalg.norm(d.keypoints[1] - d.keypoints[0]))
        for eye in d.keypoints[:2]:
            cv2.circle(out, (int(round(eye[0])), int(round(eye[1]))), max(1, int(round(radius * iod))), 1, -1)
    return out.astype(bool)


def clip_reference_report(path: Path, max_frames: int = 150, every: int = 3) -> dict:
    """The Unmasker on every frame; the reference (YuNet at the clip's resolution, all tiles) and
    the comparisons on every `every`-th frame."""
    import av
    from stream.detection import YuNetDetector
    from stream.unmasker import Unmasker
    ref_det = YuNetDetector(score_threshold=REFERENCE_SCORE, fine_side=4096)        # full resolution, every tile
    frames = ref_frames = found_in_ref = redrawn = eyes_touched = openings_touched = 0
    ours_n, ref_n, times = [], [], []
    with Unmasker(max_faces=16) as um, av.open(str(path)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if i >= max_frames:
                break
            img = fr.to_ndarray(format="bgr24")
            t = time.perf_counter()
            res = um.process(img, timestamp_ms=40.0 * i)
            times.append((time.perf_counter() - t) * 1e3)
            if i % every:
                continue
            ref = ref_det.detect(img)
            frames += 1
            ours_n.append(len(res.faces))
            ref_n.append(len(ref))
            if ref:
                ref_frames += 1
                found_in_ref += all(_matches([d.box for d in ref], [f.box for f in res.faces]))
            changed = (res.image != img).any(axis=2)
            if changed.any():
                redrawn += 1
                eyes_touched += bool((changed & _eye_disks(img.shape, ref)).any())
                # A high covering's top edge lies inside the 0.2 disks (under the lower lids): the
                # eye openings themselves are what must never be redrawn.
                openings_touched += bool((changed & _eye_disks(img.shape, ref, EYE_OPENING)).any())
    return {"clip": path.name, "frames": frames, "faces_per_frame": float(np.mean(ours_n)),
            "reference_faces_per_frame": float(np.mean(ref_n)),
            "frames_with_every_reference_face_found": found_in_ref / max(ref_frames, 1),
            "frames_redrawn": redrawn / max(frames, 1),
            "redrawn_frames_with_hole_on_the_eyes": eyes_touched / max(redrawn, 1),
            "redrawn_frames_with_hole_on_the_eye_openings": openings_touched / max(redrawn, 1),
            "unmasker_ms_mean": float(np.mean(times))}


def fringe_report() -> dict:
    from benchmarks.edges import OracleSegmentation, fringe, fringe_case, oracle_unmasker
    from stream.unmasker import Unmasker, models_available
    frame, truth = fringe_case()
    rows = []

    def measure(label, um):
        with um:
            t = time.perf_counter()
            res = um.process(frame)
            ms = (time.perf_counter() - t) * 1e3
        cov = (res.faces[0].mask > 0) if res.faces else np.zeros_like(truth)
        changed = (res.image != frame).any(axis=2)
        rows.append({"case": label, "fringe": fringe(res.image, truth),
                     "covering_iou": float((cov & truth).sum() / max((cov | truth).sum(), 1)),
                     "visible_face_changed": float((changed & ~truth).sum() / truth.sum()), "ms": ms})

    for short in (0, 3):
        for refine in (True, False):
            um = oracle_unmasker(OracleSegmentation(truth, short), refine_edges=refine)
            measure(f"segmentation {short} px short, {'refined' if refine else 'not refined'}", um)
    if models_available():
        for refine in (True, False):
            measure(f"shipped analyser + inpainter, {'refined' if refine else 'not refined'}",
                    Unmasker(refine_edges=refine))
    return {"frame": "1920x1080", "ring_px": 10, "input_fringe": fringe(frame, truth), "rows": rows}


def _md(result: dict) -> str:
    lines = []
    if "crowd" in result:
        c = result["crowd"]
        lines += ["## Crowds (generated, ground truth)", "",
                  "| detector | " + " | ".join(c["detectors"]["yunet"]["by_size"]) + " | all | ms / frame |",
                  "|---|" + "---|" * (len(SIZE_BINS) + 2)]
        for k, d in c["detectors"].items():
            cells = [f"{v['recall']:.1%} ({v['faces']})" if v["recall"] is not None else "-" for v in d["by_size"].values()]
            lines.append(f"| {k} | " + " | ".join(cells) + f" | {d['recall']:.1%} | {d['ms_per_frame_mean']:.0f} |")
        lines += ["", "| tracker detector | frame | faces shown (px) | true faces / frame (all, 2nd half) | "
                      "reported / frame | track ms |", "|---|---|---|---|---|---|"]
        for t in c["trackers"]:
            lines.append(f"| {t['detector']} | {t['frame']} | {t['faces_shown']} ({t['face_px']:.0f}) | "
                         f"{t['true_faces_per_frame']:.1f}, {t['true_faces_per_frame_last_half']:.1f} | "
                         f"{t['faces_reported_per_frame']:.1f} | {t['track_ms_mean']:.0f} |")
        lines.append("")
    if result.get("photos_reference"):
        p = result["photos_reference"]
        lines += [f"## Real masked photos ({p['photos']}, {p['reference_faces']} reference faces; reference: "
                  "YuNet at 2x, all passes)", "",
                  "| tracker detector | recall | no face found | " + " | ".join(p["trackers"]["yunet"]["by_size"]) +
                  " | " + " | ".join(f"yaw {k}" for k in p["trackers"]["yunet"]["by_yaw_proxy"]) + " |",
                  "|---|---|---|" + "---|" * (len(SIZE_BINS) + len(YAW_BINS))]
        for k, t in p["trackers"].items():
            cells = [f"{v['recall']:.0%} ({v['faces']})" if v["recall"] is not None else "-"
                     for v in list(t["by_size"].values()) + list(t["by_yaw_proxy"].values())]
            lines.append(f"| {k} | {t['recall']:.1%} | {t['photos_with_no_face_found']:.1%} | " + " | ".join(cells) + " |")
        lines.append("")
    if result.get("clips_reference"):
        lines += ["## Real clips (Unmasker, video mode, max_faces 16; reference: YuNet, all tiles, every 3rd frame)", "",
                  "| clip | frames | faces / frame (reference) | frames with every reference face | frames redrawn | "
                  "redrawn frames with the hole on the eyes (0.2 eye distances) | ... on the eye openings (0.1) | "
                  "ms / frame |", "|---|---|---|---|---|---|---|---|"]
        for c in result["clips_reference"]:
            lines.append(f"| {c['clip']} | {c['frames']} | {c['faces_per_frame']:.2f} ({c['reference_faces_per_frame']:.2f}) | "
                         f"{c['frames_with_every_reference_face_found']:.1%} | {c['frames_redrawn']:.1%} | "
                         f"{c['redrawn_frames_with_hole_on_the_eyes']:.1%} | "
                         f"{c['redrawn_frames_with_hole_on_the_eye_openings']:.1%} | {c['unmasker_ms_mean']:.0f} |")
        lines.append("")
    if "fringe" in result:
        f = result["fringe"]
        lines += [f"## Fringe at 1080p (covering-coloured share of a {f['ring_px']} px ring around the covering; "
                  f"input {f['input_fringe']:.1%})", "",
                  "| case | fringe | covering IoU | visible face changed | ms |", "|---|---|---|---|---|"]
        for r in f["rows"]:
            lines.append(f"| {r['case']} | {r['fringe']:.2%} | {r['covering_iou']:.3f} | {r['visible_face_changed']:.1%} | {r['ms']:.0f} |")
        lines.append("")
    if "holes" in result:
        h = result["holes"]
        lines += [f"## The hole against hand-labelled coverings ({h['photos']} MaskedFace-Net photos; the analyser "
                  "was trained on them: this measures the hole's edge rule)", "",
                  "| IoU | covering left outside the hole | photos with > 2 % left | visible face redrawn |",
                  "|---|---|---|---|",
                  f"| {h['iou']:.3f} | {h['covering_left']:.2%} | {h['photos_with_over_2pct_left']:.1%} | "
                  f"{h['face_redrawn']:.2%} |", ""]
    return "\n".join(lines)


DEFAULT_PHOTOS = ROOT / "data" / "raw" / "rmfd_dev"


LABELLED = ROOT / "data" / "raw" / "maskedface_seg_train_384"


def labelled_photos(folder: Path) -> list[tuple[Path, Path]]:
    """(photo, label) pairs of the MaskedFace-Net photos with hand labels (training.data.prepare
    extracts them): `.../images/N.jpg` with `.../masks/N_gt.png`."""
    pairs = []
    for photo in sorted(folder.rglob("images/*.jpg")):
        label = photo.parent.parent / "masks" / f"{photo.stem}_gt.png"
        if label.exists():
            pairs.append((photo, label))
    return pairs


def hole_report(pairs: list[tuple[Path, Path]]) -> dict:
    """The frame-resolution hole (Face.mask, still-image mode) against hand-labelled coverings: IoU,
    the share of the covering left outside the hole (fragments that show), the photos with more than
    2 % left, and the visible face redrawn (hole outside the covering, as a share of the covering).
    The analyser was trained on these photos: this measures the hole's edge rule, not the network."""
    from stream.unmasker import Unmasker
    rows = []
    with Unmasker() as um:
        for photo, label in pairs:
            img, lab = cv2.imread(str(photo)), cv2.imread(str(label))
            covering = (lab[..., 1] > 64) & (lab[..., 0] < 64) & (lab[..., 2] < 64)     # BGR (0, 128, 0)
            if covering.sum() < 100:
                continue
            faces = [f for f in um.process(img).faces if f.masked and f.mask is not None]
            hole = np.zeros(covering.shape, bool)
            for f in faces:
                hole |= f.mask > 0
            rows.append(((hole & covering).sum() / (hole | covering).sum(), (covering & ~hole).sum() / covering.sum(),
                         (hole & ~covering).sum() / covering.sum()))
    r = np.array(rows, float).reshape(-1, 3)
    return {"photos": len(r), "iou": float(r[:, 0].mean()), "covering_left": float(r[:, 1].mean()),
            "photos_with_over_2pct_left": float((r[:, 1] > 0.02).mean()), "face_redrawn": float(r[:, 2].mean())}


def missing_data(folder: Path, photos: list, clips: list, sections=("photos", "clips")) -> str | None:
    """Why there is nothing to measure (an empty table is not a result), with the command that
    prepares the data; None when there is something. The generated sections (crowd, fringe) need no data."""
    needs_data = [s for s in sections if s in ("photos", "clips", "legacy")]
    if not needs_data or photos or clips:
        return None
    where = f"no photos in {folder}" if folder.is_dir() else f"photo folder {folder} does not exist"
    hint = ("python -m training.data.prepare extracts rmfd_dev there" if folder == DEFAULT_PHOTOS
            else "pass --photos DIR with .jpg/.png photos")
    return f"nothing to measure for {', '.join(needs_data)}: {where} ({hint}) and no clips (--clips A.mp4 ...)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", nargs="+", choices=["crowd", "photos", "clips", "fringe", "holes", "legacy"],
                    default=["crowd", "photos", "clips", "fringe"])
    ap.add_argument("--labelled", type=Path, default=LABELLED,
                    help="hand-labelled masked photos for the holes section (default: data/raw/maskedface_seg_train_384)")
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--clips", type=Path, nargs="*", default=sorted(
        (ROOT.parent / "shared" / "data" / "real" / "videos").glob("*.mp4")))
    ap.add_argument("--max-frames", type=int, default=150, help="frames per real clip (clips section)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "detection")
    ap.add_argument("--trackers", nargs="+", choices=["mediapipe", "torch"], default=["mediapipe"])
    ap.add_argument("--device", default="cpu", help="the torch tracker's device (cpu, cuda)")
    args = ap.parse_args(argv)
    for c in args.clips:
        if not c.exists():
            print(f"error: clip not found: {c}", file=sys.stderr)
            return 2
    photos = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) \
        if args.photos.is_dir() else []
    problem = missing_data(args.photos, photos, args.clips, args.sections)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    labelled = labelled_photos(args.labelled) if "holes" in args.sections and args.labelled.is_dir() else []
    if "holes" in args.sections and not labelled:
        print(f"error: nothing to measure for holes: no labelled photos in {args.labelled} "
              "(python -m training.data.prepare extracts them there)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    result = {}
    if "crowd" in args.sections:
        result["crowd"] = crowd_report()
    if "photos" in args.sections:
        result["photos_reference"] = photos_reference_report(photos) if photos else None
    if "clips" in args.sections:
        result["clips_reference"] = [clip_reference_report(c, args.max_frames) for c in args.clips]
    if "fringe" in args.sections:
        result["fringe"] = fringe_report()
    if "holes" in args.sections:
        result["holes"] = hole_report(labelled)
    md = _md(result)
    if "legacy" in args.sections:
        result["photos"] = [photos_report(photos, k, args.device) for k in args.trackers] if photos else []
        result["clips"] = [clip_report(c, 1, k, args.device) for k in args.trackers for c in args.clips]
        md += "\n" + _legacy_md(result, args.photos.name)
    (args.out / "detection.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "detection.md").write_text(md)
    print(md)
    return 0


def _legacy_md(result: dict, photos_name: str) -> str:
    lines = ["## Legacy", "", "| tracker | input | frames/photos | with a face | from mesh | from detector | track ids | "
             "track ms (mean / p95) |", "|---|---|---|---|---|---|---|---|"]
    for ph in result["photos"]:
        lines.append(f"| {ph['tracker']} | photos ({photos_name}) | {ph['photos']} | "
                     f"{ph['tracker_mesh_then_detector']:.1%} (mediapipe's mesh alone {ph['mesh_only']:.1%}, "
                     f"detector alone {ph['full_range_detector']:.1%}) | | | | |")
    for c in result["clips"]:
        lines.append(f"| {c['tracker']} | {c['clip']} | {c['frames']} | {c['frames_with_face']:.1%} | {c['faces_from_mesh']} | "
                     f"{c['faces_from_detector']} | {c['track_ids']} | {c['track_ms_mean']:.1f} / {c['track_ms_p95']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
