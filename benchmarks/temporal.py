"""Temporal stability of the reconstruction, with and without smoothing, beside its speed.

    python -m benchmarks.temporal                               # the bundled sample, every frame
    python -m benchmarks.temporal --source clip.mp4 --method model,classical
    python -m benchmarks.temporal --resolution 640x360 --faces 2 --frames 60
    python -m benchmarks.temporal --compare old/temporal.json new/temporal.json

Every frame of the clip goes through two Unmaskers side by side, one with
temporal smoothing and one with `smoothing=False` (alternating which runs
first), so both see the same frames under the same machine load:

* landmark jitter: for each face present in consecutive frames (same track id),
  the similarity transform (rotation, scale, shift) that best maps the previous
  frame's 468 landmarks onto the current ones is removed (head motion); the RMS
  of what is left, over the face's points, in % of the inter-ocular distance.
  Reported for all points, for the hidden lower-face points (the analyser's
  estimates under a mask) and for the visible ones. A rigidly moving face such
  as the sample's has no true non-rigid motion, so this is all jitter.
* output flicker: mean absolute change (grey levels, 0..255) between
  consecutive output frames inside the face's covering mask, beside the same
  measure on the input's upper face (forehead, brows, eyes: real pixels, so the
  natural change from motion, noise and compression): flicker ratio =
  output change / input upper-face change (about 1: the reconstruction changes
  no more than real skin does). "stabilised" values first warp the previous
  frame onto the current one with the similarity fitted on upper-face landmarks.
* speed: Unmasker.process time per frame (median, p95) and FPS for each variant,
  after --warmup frames; smoothing should cost no latency.

Results: temporal.json, temporal.md (also printed) and temporal.png in --out
(default benchmarks/results/<timestamp>/).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks import report
from benchmarks.report import BenchError, fmt, log, md_table, ratio, summarize

PROG = "benchmarks.temporal"
DEFAULT_SOURCE = report.ROOT / "assets" / "sample.mp4"
VARIANTS = ("smoothing_on", "smoothing_off")
METHODS = ("model", "classical", "auto")
LATENCY_TOLERANCE_MS = 1.0        # smoothing "costs no latency" within max(1 ms, 5 %)
LATENCY_TOLERANCE_REL = 0.05


def build_parser() -> argparse.ArgumentParser:
    p = report.new_parser(PROG, __doc__)
    p.add_argument("--source", help="a video file (default: the bundled assets/sample.mp4)")
    p.add_argument("--resolution", help="instead of --source: a generated clip of this size (720p, WxH)")
    p.add_argument("--faces", type=report.positive_int, help="masked faces in the generated clip (default 1)")
    p.add_argument("--clips-dir", type=Path, help="cache of generated clips (default benchmarks/results/clips/)")
    p.add_argument("--frames", type=report.positive_int, help="frames to use (default: the whole clip; "
                   "generated clips: 100)")
    p.add_argument("--warmup", type=report.non_negative_int, default=5,
                   help="first frames left out of the timing (they are still used for stability)")
    p.add_argument("--method", type=report.name_list(METHODS), default=["auto"],
                   help="model, classical and/or auto (default auto: the models when shipped)")
    p.add_argument("--backend", default="auto", help="model backend (auto, onnxruntime, torch, tensorrt)")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=report.positive_int, help="CPU threads per model")
    p.add_argument("--max-faces", type=report.positive_int, help="faces tracked (default: --faces, else 1)")
    report.add_output_arguments(p, "skip the PNG plot")
    report.add_compare_argument(p)
    return p


# ------------------------------------------------------------------------------------- metrics

def landmark_jitter(prev, cur) -> dict | None:
    """Non-rigid frame-to-frame landmark motion in % of the inter-ocular distance (all points,
    hidden lower-face points, visible points), after removing the best similarity prev -> cur."""
    import numpy as np
    from models.spec import HIDDEN_REGION
    from stream.alignment import LEFT_EYE, RIGHT_EYE, fit_similarity
    prev = np.asarray(prev, np.float64)
    cur = np.asarray(cur, np.float64)
    iod = float(np.linalg.norm(cur[LEFT_EYE].mean(0) - cur[RIGHT_EYE].mean(0)))
    if iod < 1.0:
        return None
    m = fit_similarity(prev, cur)
    resid = np.linalg.norm(cur - (prev @ m[:, :2].T + m[:, 2]), axis=1)
    hidden = np.zeros(len(cur), bool)
    hidden[HIDDEN_REGION] = True
    rms = lambda r: float(np.sqrt(np.mean(r ** 2))) / iod * 100.0   # noqa: E731
    return {"all": rms(resid), "hidden": rms(resid[hidden]), "visible": rms(resid[~hidden]), "iod_px": iod}


def _roi(lm, shape, grow: float = 0.25):
    import numpy as np
    h, w = shape[:2]
    lo, hi = lm.min(0), lm.max(0)
    pad = (hi - lo) * grow
    x0, y0 = np.maximum(np.floor(lo - pad).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(hi + pad).astype(int), [w, h])
    return int(x0), int(y0), int(x1), int(y1)


def _mad(a, b, region) -> float | None:
    import numpy as np
    if region.sum() < 20:
        return None
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=2)
    return float(d[region].mean())


def flicker(prev_in, cur_in, prev_out, cur_out, prev_lm, cur_lm, mask) -> dict | None:
    """Mean absolute change inside the covering mask (output and input) and on the input's upper
    face, raw and after warping the previous frame onto the current one (upper-face similarity)."""
    import cv2
    import numpy as np
    from stream.alignment import UPPER_FACE, fit_similarity
    cur_lm = np.asarray(cur_lm, np.float64)
    x0, y0, x1, y1 = _roi(cur_lm, cur_in.shape)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    sl = (slice(y0, y1), slice(x0, x1))
    lower = mask[sl] > 0
    upper = np.zeros(lower.shape, np.uint8)
    hull = cv2.convexHull(np.round(cur_lm[UPPER_FACE] - [x0, y0]).astype(np.int32))
    cv2.fillConvexPoly(upper, hull, 1)
    k = max(3, int(0.03 * (x1 - x0)) | 1)
    upper = (upper > 0) & (cv2.dilate(lower.astype(np.uint8), np.ones((k, k), np.uint8)) == 0)
    out = {"output_lower": _mad(cur_out[sl], prev_out[sl], lower),
           "input_lower": _mad(cur_in[sl], prev_in[sl], lower),
           "input_upper": _mad(cur_in[sl], prev_in[sl], upper)}
    # Stabilised: the previous frame warped onto the current one (ROI only).
    m = fit_similarity(np.asarray(prev_lm, np.float64)[UPPER_FACE], cur_lm[UPPER_FACE])
    m_roi = m.copy()
    m_roi[:, 2] -= [x0, y0]
    size = (x1 - x0, y1 - y0)
    w_in = cv2.warpAffine(prev_in, m_roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    w_out = cv2.warpAffine(prev_out, m_roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out.update(stab_output_lower=_mad(cur_out[sl], w_out, lower), stab_input_lower=_mad(cur_in[sl], w_in, lower),
               stab_input_upper=_mad(cur_in[sl], w_in, upper))
    return out


class VariantState:
    def __init__(self, name: str, unmasker):
        self.name = name
        self.um = unmasker
        self.prev_out = None
        self.prev_faces: dict = {}
        self.ms: list[float] = []
        self.jitter: list[dict] = []
        self.jitter_by_frame: list[float | None] = []
        self.flicker: list[dict] = []
        self.frames_with_faces = 0
        self.masked_faces = 0
        self.track_ids: set = set()
        self.source_switches = 0   # a track's landmarks came from another source than the frame before
        self.last_result = None    # the last frame's Unmasker result (benchmarks.cadence compares two)

    def step(self, index: int, ts_ms: float, image, prev_in, timed: bool) -> None:
        t = time.perf_counter()
        res = self.last_result = self.um.process(image, timestamp_ms=ts_ms)
        ms = (time.perf_counter() - t) * 1e3
        if timed:
            self.ms.append(ms)
        faces = {f.track_id: f for f in res.faces}
        self.frames_with_faces += bool(res.faces)
        self.masked_faces += sum(f.masked for f in res.faces)
        self.track_ids |= set(faces)
        frame_j = []
        for tid, f in faces.items():
            p = self.prev_faces.get(tid)
            if p is None:
                continue
            if getattr(p, "landmark_source", None) != getattr(f, "landmark_source", None):
                self.source_switches += 1
            j = landmark_jitter(p.landmarks, f.landmarks)
            if j is not None:
                self.jitter.append(j)
                frame_j.append(j["all"])
            if f.masked and p.masked and self.prev_out is not None and prev_in is not None:
                fl = flicker(prev_in, image, self.prev_out, res.image, p.landmarks, f.landmarks, f.mask)
                if fl is not None:
                    self.flicker.append(fl)
        self.jitter_by_frame.append(sum(frame_j) / len(frame_j) if frame_j else None)
        self.prev_out = res.image
        self.prev_faces = faces

    def summary(self) -> dict:
        def col(rows, k):
            return [r[k] for r in rows if r.get(k) is not None]

        fl = {k: summarize(col(self.flicker, k)) for k in ("output_lower", "input_lower", "input_upper",
                                                            "stab_output_lower", "stab_input_lower",
                                                            "stab_input_upper")}
        ms = summarize(self.ms)
        return {
            "jitter_pct_iod": {k: summarize(col(self.jitter, k)) for k in ("all", "hidden", "visible")},
            "flicker": fl,
            "flicker_ratio": ratio(fl["output_lower"]["mean"], fl["input_upper"]["mean"]),
            "flicker_ratio_stabilised": ratio(fl["stab_output_lower"]["mean"], fl["stab_input_upper"]["mean"]),
            "pairs": {"jitter": len(self.jitter), "flicker": len(self.flicker)},
            "process_ms": {"median": ms["median"], "p95": report.percentile(self.ms, 95), "mean": ms["mean"],
                           "n": ms["n"]},
            "fps": 1000.0 / ms["mean"] if ms["mean"] else None,
            "frames_with_faces": self.frames_with_faces, "masked_faces": self.masked_faces,
            "tracks": len(self.track_ids),
            "landmark_source_switches": self.source_switches,
            "jitter_by_frame": [None if v is None else round(v, 4) for v in self.jitter_by_frame],
        }


def run_method(path: str, method: str, args, frames: int | None, quiet: bool) -> dict:
    from stream import Unmasker
    from stream.sources import open_source
    kw = dict(method=method, backend=args.backend if method == "model" else "auto", device=args.device,
              max_faces=args.max_faces or args.faces or 1, threads=args.threads)
    states = [VariantState("smoothing_on", Unmasker(smoothing=True, **kw)),
              VariantState("smoothing_off", Unmasker(smoothing=False, **kw))]
    backend = states[0].um.backend
    src = open_source(path)
    prev_in = None
    n = 0
    deltas = []
    try:
        last_ts = -1.0
        while frames is None or n < frames:
            frame = src.read()
            if frame is None:
                break
            ts = frame.timestamp_s * 1000.0 if frame.timestamp_s is not None else n * 40.0
            ts = ts if ts > last_ts else last_ts + 1e-3
            last_ts = ts
            order = states if n % 2 == 0 else states[::-1]
            timed = n >= args.warmup
            for st in order:
                st.step(n, ts, frame.image, prev_in, timed)
            if timed:
                deltas.append(states[0].ms[-1] - states[1].ms[-1])
            prev_in = frame.image
            n += 1
            if not quiet and n % 25 == 0:
                log(f"  {method}: {n} frames", quiet)
    finally:
        src.close()
        for st in states:
            st.um.close()
    if n < 2:
        raise BenchError(f"{path} has {n} frame(s): at least 2 are needed", 1)
    variants = {st.name: st.summary() for st in states}
    on, off = variants["smoothing_on"], variants["smoothing_off"]
    d = summarize(deltas)
    base = off["process_ms"]["median"]
    cost = d["median"]
    ok = cost is None or base is None or cost <= max(LATENCY_TOLERANCE_MS, LATENCY_TOLERANCE_REL * base)
    return {
        "method": method, "backend": backend, "frames": n, "timed_frames": len(deltas),
        "variants": variants,
        "smoothing_effect": {
            "jitter_reduction": ratio(off["jitter_pct_iod"]["all"]["median"], on["jitter_pct_iod"]["all"]["median"]),
            "hidden_jitter_reduction": ratio(off["jitter_pct_iod"]["hidden"]["median"],
                                             on["jitter_pct_iod"]["hidden"]["median"]),
            "flicker_reduction": ratio(off["flicker"]["output_lower"]["mean"], on["flicker"]["output_lower"]["mean"]),
            "latency_cost_ms": {"median": cost, "p95": report.percentile(deltas, 95), "q1": d["q1"], "q3": d["q3"]},
            "latency_cost_ok": bool(ok),
        },
    }


# ------------------------------------------------------------------------------------- outputs

def markdown(result: dict) -> str:
    lines = [f"# Unmask temporal-stability benchmark — {result['created']}", "",
             f"Machine: {report.machine_line(result['machine'])}", "",
             f"Clip: {result['source']['label']} ({result['source'].get('width')}x{result['source'].get('height')}); "
             f"timing after {result['settings']['warmup']} warm-up frames.", ""]
    rows = []
    for m in result["methods"]:
        for v in VARIANTS:
            s = m["variants"][v]
            j = s["jitter_pct_iod"]
            rows.append([m["method"], m["backend"], v.replace("smoothing_", "smoothing "),
                         fmt(j["all"]["median"], 2), fmt(j["all"]["q3"], 2), fmt(j["hidden"]["median"], 2),
                         fmt(j["visible"]["median"], 2), fmt(s["flicker"]["output_lower"]["mean"], 2),
                         fmt(s["flicker"]["input_upper"]["mean"], 2), fmt(s["flicker_ratio"], 2),
                         fmt(s["flicker_ratio_stabilised"], 2), s["landmark_source_switches"],
                         fmt(s["process_ms"]["median"], 1),
                         fmt(s["process_ms"]["p95"], 1), fmt(s["fps"], 1)])
    lines.append(md_table(["method", "backend", "variant", "jitter % IOD", "q3", "hidden pts", "visible pts",
                           "output Δ (mask)", "input Δ (upper face)", "flicker ratio", "stabilised ratio",
                           "source switches", "ms p50", "ms p95", "FPS"], rows,
                          ["l", "l", "l"] + ["r"] * 12))
    lines += ["", "jitter: RMS landmark motion left after removing the best frame-to-frame similarity, % of the "
              "inter-ocular distance (median over frame pairs; q3 = upper quartile). output Δ: mean |change| of "
              "consecutive output frames inside the covering mask; input Δ: the same on the input's upper face "
              "(the natural change). flicker ratio = output Δ / input Δ; stabilised: after warping the previous "
              "frame onto the current one. source switches: frame pairs where a face's landmarks came from another "
              "source (mesh / detector / analyser) than in the frame before: each switch shows as a jitter spike. "
              "ms: Unmasker.process per frame; FPS = 1000 / mean ms.", ""]
    eff = []
    for m in result["methods"]:
        e = m["smoothing_effect"]
        lc = e["latency_cost_ms"]
        eff.append([m["method"], fmt(e["jitter_reduction"], 2, "×"), fmt(e["hidden_jitter_reduction"], 2, "×"),
                    fmt(e["flicker_reduction"], 2, "×"),
                    f"{fmt(lc['median'], 2)} (IQR {fmt(lc['q1'], 2)}…{fmt(lc['q3'], 2)})",
                    "yes" if e["latency_cost_ok"] else "NO"])
    lines += ["## Effect of smoothing", "",
              md_table(["method", "jitter reduction", "hidden-point jitter reduction", "flicker reduction",
                        "latency cost ms (on − off, paired per frame)", "no latency cost"], eff,
                       ["l", "r", "r", "r", "r", "l"]), ""]
    lines += report.markdown_tail(result)
    return "\n".join(lines)


def plot(result: dict, out_dir: Path) -> tuple[list[str], list[str]]:
    plt = report.pyplot()
    if plt is None:
        return [], [report.PLOTS_MISSING]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for i, m in enumerate(result["methods"]):
        for v, ls in zip(VARIANTS, ("-", ":")):
            ys = m["variants"][v]["jitter_by_frame"]
            ax.plot(range(len(ys)), [float("nan") if y is None else y for y in ys], ls, color=f"C{i}",
                    linewidth=1, label=f"{m['method']} {v.replace('_', ' ')}")
    ax.set_xlabel("frame")
    ax.set_ylabel("landmark jitter, % IOD")
    ax.set_title("Frame-to-frame landmark jitter (head motion removed)")
    ax.legend(fontsize=8)
    return [str(report.save_figure(fig, out_dir / "temporal.png"))], []


def _run(args, argv) -> int:
    quiet = args.quiet
    if args.source and (args.resolution or args.faces):
        raise BenchError("--source and --resolution/--faces exclude each other")
    report.check_out_dir(args.out, args.overwrite)   # refuse early, before any clip is generated
    from benchmarks.clips import parse_resolution
    size = None
    if args.resolution or args.faces:
        try:
            size = parse_resolution(args.resolution or "720p")
        except ValueError as exc:
            raise BenchError(str(exc)) from None
    elif args.source:
        if not Path(args.source).is_file():
            raise BenchError(f"input not found: {args.source}" if not Path(args.source).exists()
                             else f"{args.source} is not a video file")
    elif not DEFAULT_SOURCE.exists():
        raise BenchError(f"the bundled sample {DEFAULT_SOURCE} is missing: pass --source")
    report.quiet_native_logs(args.verbose)
    from stream.unmasker import models_available
    methods, notes = [], []
    for mth in args.method:
        mth = ("model" if models_available() else "classical") if mth == "auto" else mth
        if mth == "model" and not models_available():
            notes.append("the shipped models are missing from models/weights: the model method was skipped")
            continue
        if mth not in methods:
            methods.append(mth)
    if not methods:
        raise BenchError("the shipped models are missing from models/weights (analyser.onnx, "
                         "inpainter_fast.onnx); use --method classical", 1)
    frames = args.frames
    if size is not None:
        from benchmarks.clips import generated_clip, resolution_label
        frames = frames or 100
        path = str(generated_clip(size, args.faces or 1, frames, cache_dir=args.clips_dir,
                                  log=lambda m: log(m, quiet)))
        label = f"generated {resolution_label(size)} {args.faces or 1} face(s)"
    else:
        path = str(args.source or DEFAULT_SOURCE)
        label = Path(path).name
    out_dir = report.prepare_out_dir(args.out, args.overwrite)
    machine = report.machine_info()
    from stream.sources import open_source
    src = open_source(path)
    info = {"label": label, "path": path, "width": src.info.width, "height": src.info.height,
            "fps": src.info.fps, "frame_count": src.info.frame_count}
    src.close()
    log(f"{PROG}: {label}, method(s) {', '.join(methods)}; results in {out_dir}", quiet)
    results = [run_method(path, m, args, frames, quiet) for m in methods]
    for r in results:
        if not r["smoothing_effect"]["latency_cost_ok"]:
            notes.append(f"{r['method']}: smoothing cost {fmt(r['smoothing_effect']['latency_cost_ms']['median'], 2)} "
                         f"ms per frame (median, paired): more than the {LATENCY_TOLERANCE_MS:g} ms / "
                         f"{LATENCY_TOLERANCE_REL:.0%} tolerance")
        if not r["variants"]["smoothing_on"]["pairs"]["flicker"]:
            notes.append(f"{r['method']}: no consecutive frames with a masked face: no flicker measured")
    result = {
        **report.result_header("temporal", PROG, argv),
        "settings": {"frames": frames, "warmup": args.warmup, "methods": methods, "backend": args.backend,
                     "device": args.device, "threads": args.threads},
        "machine": machine, "source": info, "methods": results, "notes": notes, "files": {},
        "rows": [{"key": {"source": label, "method": r["method"], "backend": r["backend"], "variant": v},
                  "metrics": {"jitter_pct_iod": r["variants"][v]["jitter_pct_iod"]["all"]["median"],
                              "hidden_jitter_pct_iod": r["variants"][v]["jitter_pct_iod"]["hidden"]["median"],
                              "output_flicker": r["variants"][v]["flicker"]["output_lower"]["mean"],
                              "flicker_ratio": r["variants"][v]["flicker_ratio"],
                              "process_ms_p50": r["variants"][v]["process_ms"]["median"],
                              "fps": r["variants"][v]["fps"]}}
                 for r in results for v in VARIANTS],
    }
    report.write_results(result, out_dir, markdown, None if args.no_plots else plot, json_path=args.json)
    log(f"wrote {out_dir / 'temporal.json'}, {out_dir / 'temporal.md'}", quiet)
    return 0


def main(argv=None) -> int:
    return report.run_main(PROG, argv, build_parser, _run)


if __name__ == "__main__":
    sys.exit(main())
