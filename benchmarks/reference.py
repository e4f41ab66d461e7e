"""The own-face path beside the generative one, on the same frames: its cost per face and its flicker.

    python -m benchmarks.reference [--source assets/sample.mp4] [--frames 120] [--json PATH]

Every frame goes through two Unmaskers in turn (alternating which runs first, so both see the same
machine load): the generative path, and the own-face path with a reference photo. The bundled sample
shows the public-domain astronaut photo wearing a mask, so her unmasked photo (scikit-image's
`astronaut`) is a true reference for it. Reported: `process` time per frame (median, p95) for each and
the difference (the own-face path's extra cost per face), and flicker as `benchmarks.temporal`
measures it: the mean absolute change inside the covering between consecutive output frames after the
previous frame is warped onto the current one (head motion removed), over the same measure on the
input's real upper-face skin (about 1: the reconstruction changes no more than real skin does).
Also the time inside the reference's render per face (median, p95): the same cost without the
other path's noise; and a bare decode -> H.264 encode of the same frames (the floor), so the
milliseconds can be read at the ~50 FPS floor the issues' targets assume.
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


def _frames(source: Path, limit: int):
    import av
    with av.open(str(source)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= limit:
                return
            yield f.to_ndarray(format="bgr24")


def floor_fps(source: Path, frames: int) -> float:
    """Frames per second of a bare decode -> H.264 encode of the same frames (the encoder settings of
    stream.sinks.VideoFileSink): the machine's speed in this run, to read the milliseconds against."""
    import io

    import av

    from stream.sinks import _encoder_options
    images = list(_frames(source, frames))
    buffer = io.BytesIO()
    t = time.perf_counter()
    with av.open(str(source)) as src, av.open(buffer, "w", format="mp4") as dst:
        stream = dst.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        stream.codec_context.options = _encoder_options("libx264", 20, "veryfast", live=False)
        for i, f in enumerate(src.decode(video=0)):
            if i >= len(images):
                break
            frame = av.VideoFrame.from_ndarray(f.to_ndarray(format="bgr24"), format="bgr24")
            for packet in stream.encode(frame):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    return len(images) / (time.perf_counter() - t)


def measure(source: Path, reference: np.ndarray, frames: int, warmup: int = 10, reference_px: int | None = None) -> dict:
    from stream import Unmasker
    variants = {"generative": Unmasker(mode="video"),
                "reference": Unmasker(mode="video", reference=reference, reference_px=reference_px)}
    ms = {k: [] for k in variants}
    # The render's own time per face: the difference of two frame medians above is the
    # path's cost as a user sees it, but it carries both paths' noise on a loaded machine.
    render_ms = []
    face = variants["reference"]._references[None]

    def timed(render):
        def timed_render(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return render(*args, **kwargs)
            finally:
                render_ms.append((time.perf_counter() - t0) * 1e3)
        return timed_render
    # In the window, or at the frame's resolution around the hole (a large face).
    face.render, face.render_region = timed(face.render), timed(face.render_region)
    from benchmarks.temporal import flicker
    change = {k: [] for k in variants}
    prev = {k: None for k in variants}
    prev_frame = None
    masked_faces = {k: 0 for k in variants}
    drawn_by = {k: {} for k in variants}
    try:
        for i, frame in enumerate(_frames(source, frames + warmup)):
            order = list(variants) if i % 2 == 0 else list(variants)[::-1]
            if i == warmup:
                render_ms.clear()
            for name in order:
                t = time.perf_counter()
                res = variants[name].process(frame, timestamp_ms=i * 40.0)
                dt = (time.perf_counter() - t) * 1e3
                if i < warmup:
                    continue
                ms[name].append(dt)
                for f in res.faces:
                    masked_faces[name] += f.masked
                    drawn_by[name][str(f.reconstruction)] = drawn_by[name].get(str(f.reconstruction), 0) + 1
                face = next((f for f in res.faces if f.masked), None)
                if prev[name] is not None and face is not None and prev[name][1] is not None:
                    fl = flicker(prev_frame, frame, prev[name][0], res.image, prev[name][1], face.landmarks, face.mask)
                    if fl and fl["stab_output_lower"] is not None and fl["stab_input_upper"]:
                        change[name].append(fl["stab_output_lower"] / fl["stab_input_upper"])
                prev[name] = (res.image, face.landmarks if face is not None else None)
            prev_frame = frame
    finally:
        for um in variants.values():
            um.close()
    out = {}
    for name in variants:
        t = np.array(ms[name])
        out[name] = {"frames": len(t), "median_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)),
                     "masked_faces": masked_faces[name], "reconstruction": drawn_by[name],
                     "flicker_ratio": float(np.mean(change[name])) if change[name] else float("nan")}
    faces_per_frame = max(1.0, out["reference"]["masked_faces"] / max(1, out["reference"]["frames"]))
    out["extra_ms_per_face"] = (out["reference"]["median_ms"] - out["generative"]["median_ms"]) / faces_per_frame
    # The mean is what a face costs over time (video solves the lighting on every LIGHT_EVERY-th frame
    # only, so the median is an unlit frame's cost and the p95 a lit one's).
    out["render_ms_per_face"] = {"mean": float(np.mean(render_ms)), "median": float(np.median(render_ms)),
                                 "p95": float(np.percentile(render_ms, 95)),
                                 "calls": len(render_ms)} if render_ms else None
    out["flicker_vs_generative"] = out["reference"]["flicker_ratio"] / out["generative"]["flicker_ratio"]
    # The machine's speed varies up to 2x between sessions; the issues' millisecond targets assume a
    # ~50 FPS decode -> encode floor at 720p. Measured after the paths, on the same frames.
    out["floor_fps"] = floor_fps(source, frames + warmup)
    if out["render_ms_per_face"]:
        out["render_ms_per_face"]["at_50_fps_floor"] = out["render_ms_per_face"]["median"] * out["floor_fps"] / 50.0
        out["render_ms_per_face"]["mean_at_50_fps_floor"] = out["render_ms_per_face"]["mean"] * out["floor_fps"] / 50.0
    return out


def to_markdown(r: dict) -> str:
    g, ref = r["generative"], r["reference"]
    return "\n".join([
        f"# Own-face path vs generative ({r['source']}, {g['frames']} frames, {r['created']})", "",
        "| path | median ms / frame | p95 ms | flicker (stabilised, / real skin) | drawn by |", "|---|---:|---:|---:|---|",
        f"| generative | {g['median_ms']:.1f} | {g['p95_ms']:.1f} | {g['flicker_ratio']:.2f} | {g['reconstruction']} |",
        f"| own face (reference photo) | {ref['median_ms']:.1f} | {ref['p95_ms']:.1f} | "
        f"{ref['flicker_ratio']:.2f} | {ref['reconstruction']} |", "",
        f"Extra cost of the own-face path: {r['extra_ms_per_face']:.2f} ms per face (difference of the frame "
        f"medians); the render itself {_render_text(r)}; its flicker is {r['flicker_vs_generative']:.2f}x the "
        "generative path's.", ""])


def _render_text(r: dict) -> str:
    t = r.get("render_ms_per_face")
    if not t:
        return "not measured"
    text = f"{t['median']:.2f} ms median, {t['p95']:.2f} ms p95 over {t['calls']} faces"
    if "mean" in t:
        text = f"{t['mean']:.2f} ms mean, " + text
    if "mean_at_50_fps_floor" in t:
        text += (f" (this run's decode -> encode floor: {r['floor_fps']:.1f} FPS; scaled to a 50 FPS floor "
                 f"{t['mean_at_50_fps_floor']:.2f} ms mean, {t['at_50_fps_floor']:.2f} ms median)")
    elif "at_50_fps_floor" in t:
        text += (f" (this run's decode -> encode floor: {r['floor_fps']:.1f} FPS; scaled to a 50 FPS floor "
                 f"{t['at_50_fps_floor']:.2f} ms)")
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", type=Path, default=ROOT / "assets" / "sample.mp4")
    ap.add_argument("--reference", type=Path, help="reference photo (default: scikit-image's astronaut)")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--reference-px", type=int, help="the own face's largest render in px (default: stream.reference.REFERENCE_PX; "
                    "the window's size renders in the window)")
    ap.add_argument("--json", type=Path, help="write the results JSON here")
    args = ap.parse_args(argv)
    if not args.source.exists():
        print(f"error: {args.source} not found", file=sys.stderr)
        return 2
    if args.reference:
        reference = cv2.imread(str(args.reference))
        if reference is None:
            print(f"error: cannot read {args.reference}", file=sys.stderr)
            return 2
    else:
        try:
            import skimage.data
        except ImportError:
            print("error: the default reference needs scikit-image (pip install .[train]) or --reference",
                  file=sys.stderr)
            return 2
        reference = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    result = {"source": str(args.source.relative_to(ROOT) if args.source.is_relative_to(ROOT) else args.source),
              "created": time.strftime("%Y-%m-%d %H:%M"), "reference_px": args.reference_px,
              **measure(args.source, reference, args.frames, reference_px=args.reference_px)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
