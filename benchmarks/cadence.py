"""The crowd cadence (run_stream.py --full-rate-faces): what blending half of a crowd's faces from
their last redraw costs in looks, and what it saves, on the same frames in one run.

    python -m benchmarks.cadence --source a.mp4 --source b.mp4 --grid 2x2 --tile 640x360
    python -m benchmarks.cadence --resolution 720p --faces 4            # a generated clip
    python -m benchmarks.cadence --compare old/cadence.json new/cadence.json

The frames are a mosaic of the sources (each resized to the tile, sources repeated, mirrored
on every other repeat so each tile is another face; a source that ends is held on its last frame)
or one clip. Every frame goes through two Unmaskers side by side, alternating which runs first: one
drawing every face on every frame (`full_rate_faces=None`), one with the cadence (the Unmasker's
default, or --full-rate-faces). Reported:

* speed: Unmasker.process per frame (median, mean) of each, and the cadence's speed-up (mean ratio);
* faces carried per frame, and how many faces were masked;
* how far the cadence's output is from drawing every face anew, inside the carried faces' coverings:
  PSNR (dB) per frame that carried a face (median, 5th percentile) and mean absolute difference;
* output flicker in the coverings of each (benchmarks.temporal's measure: mean absolute change
  between consecutive frames, over the input's upper-face change, stabilised).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import report
from benchmarks.report import BenchError, fmt, log, md_table, ratio, summarize
from benchmarks.temporal import VariantState

PROG = "benchmarks.cadence"
VARIANTS = ("every_frame", "cadence")


def build_parser() -> argparse.ArgumentParser:
    p = report.new_parser(PROG, __doc__)
    p.add_argument("--source", action="append", help="a video file; repeat for a mosaic of several")
    p.add_argument("--grid", default="1x1", help="tiles across x down (default 1x1: the source as it is)")
    p.add_argument("--tile", default="640x360", help="WxH of each tile of a mosaic (default 640x360)")
    p.add_argument("--resolution", help="instead of --source: a generated clip of this size (720p, WxH)")
    p.add_argument("--faces", type=report.positive_int, help="masked faces in the generated clip (default 4)")
    p.add_argument("--clips-dir", type=Path, help="cache of generated clips (default benchmarks/results/clips/)")
    p.add_argument("--frames", type=report.positive_int, default=120, help="frames to run (default 120)")
    p.add_argument("--warmup", type=report.non_negative_int, default=5, help="first frames left out of the timing")
    p.add_argument("--full-rate-faces", type=report.non_negative_int,
                   help="the cadence's setting (default: the Unmasker's own, stream.unmasker.FULL_RATE_FACES)")
    p.add_argument("--threads", type=report.positive_int, help="CPU threads per model")
    report.add_output_arguments(p, "(no plots: accepted for symmetry)")
    report.add_compare_argument(p)
    return p


def _size(text: str, what: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BenchError(f"{what} must be WxH, got {text!r}") from None
    if a < 1 or b < 1:
        raise BenchError(f"{what} must be WxH, got {text!r}")
    return a, b


class Mosaic:
    """Frames of several sources side by side (stream.sources), each resized to the tile."""

    def __init__(self, paths: list[str], grid: tuple[int, int], tile: tuple[int, int]):
        from stream.sources import open_source
        self.grid, self.tile = grid, tile
        self.sources = [open_source(p) for p in paths]
        self.last = [None] * len(paths)

    def read(self):
        import cv2
        import numpy as np
        cols, rows = self.grid
        tw, th = self.tile
        fresh = 0
        for i, src in enumerate(self.sources):
            f = src.read()
            if f is not None:
                self.last[i] = cv2.resize(f.image, (tw, th), interpolation=cv2.INTER_AREA)
                fresh += 1
        # The end once every source has ended (one that ended earlier is held on its last frame).
        if not fresh or any(f is None for f in self.last):
            return None
        out = np.zeros((rows * th, cols * tw, 3), np.uint8)
        for k in range(cols * rows):
            img = self.last[k % len(self.last)]
            if (k // len(self.last)) % 2:
                img = img[:, ::-1]
            out[(k // cols) * th:(k // cols + 1) * th, (k % cols) * tw:(k % cols + 1) * tw] = img
        return out

    def close(self):
        for s in self.sources:
            s.close()


def _hole_difference(a, b, faces) -> tuple[float, float] | None:
    """(PSNR dB, mean absolute difference) of two outputs inside the union of the faces' coverings."""
    import numpy as np
    region = np.zeros(a.shape[:2], bool)
    for f in faces:
        region |= f.mask > 0
    if region.sum() < 20:
        return None
    d = a[region].astype(np.float64) - b[region]
    mse = float((d ** 2).mean())
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-6)), float(np.abs(d).mean())


def run(frames_source, args, quiet: bool) -> dict:
    from stream.unmasker import FULL_RATE_FACES, Unmasker
    cadence = FULL_RATE_FACES if args.full_rate_faces is None else args.full_rate_faces
    kw = dict(method="model", max_faces=16, threads=args.threads)
    states = {"every_frame": VariantState("every_frame", Unmasker(full_rate_faces=None, **kw)),
              "cadence": VariantState("cadence", Unmasker(full_rate_faces=cadence, **kw))}
    carried, masked, psnr, mad = [], [], [], []
    prev_in = None
    n = 0
    try:
        while n < args.frames:
            image = frames_source()
            if image is None:
                break
            order = VARIANTS if n % 2 == 0 else VARIANTS[::-1]
            timed = n >= args.warmup
            results = {}
            for v in order:
                # Timed around Unmasker.process alone (step's flicker measure is left out).
                states[v].step(n, n * 40.0, image, prev_in, timed)
                results[v] = states[v].last_result
            crowd = results["cadence"]
            carried.append(sum(f.carried for f in crowd.faces))
            masked.append(sum(f.masked for f in crowd.faces))
            # Over the carried faces' coverings only (the others are drawn alike by both).
            diff = _hole_difference(results["every_frame"].image, crowd.image, [f for f in crowd.faces if f.carried])
            if diff is not None:
                psnr.append(diff[0])
                mad.append(diff[1])
            prev_in = image
            n += 1
            if not quiet and n % 25 == 0:
                log(f"  {n} frames", quiet)
    finally:
        for st in states.values():
            st.um.close()
    if n < 2:
        raise BenchError(f"the source has {n} frame(s): at least 2 are needed", 1)
    variants = {v: states[v].summary() for v in VARIANTS}
    speed = {v: summarize(states[v].ms) for v in VARIANTS}
    return {
        "frames": n, "full_rate_faces": cadence,
        "masked_faces_per_frame": summarize(masked), "carried_faces_per_frame": summarize(carried),
        "process_ms": speed,
        "speedup": ratio(speed["every_frame"]["mean"], speed["cadence"]["mean"]),
        "difference_in_coverings": {"psnr_db": {**summarize(psnr), "p5": report.percentile(psnr, 5)},
                                    "mean_abs": summarize(mad)},
        "flicker_ratio_stabilised": {v: variants[v]["flicker_ratio_stabilised"] for v in VARIANTS},
        "output_flicker": {v: variants[v]["flicker"]["stab_output_lower"]["mean"] for v in VARIANTS},
    }


def markdown(result: dict) -> str:
    r = result["result"]
    sp, d = r["process_ms"], r["difference_in_coverings"]
    lines = [f"# Unmask crowd-cadence benchmark — {result['created']}", "",
             f"Source: {result['source']['label']}, {r['frames']} frames; {fmt(r['masked_faces_per_frame']['mean'], 2)} "
             f"masked faces a frame, {fmt(r['carried_faces_per_frame']['mean'], 2)} carried (full-rate faces "
             f"{r['full_rate_faces']}).", "",
             md_table(["", "every face every frame", "cadence"],
                      [["process ms (median)", fmt(sp["every_frame"]["median"], 1), fmt(sp["cadence"]["median"], 1)],
                       ["process ms (mean)", fmt(sp["every_frame"]["mean"], 1), fmt(sp["cadence"]["mean"], 1)],
                       ["flicker ratio (stabilised)", fmt(r["flicker_ratio_stabilised"]["every_frame"], 2),
                        fmt(r["flicker_ratio_stabilised"]["cadence"], 2)]]), "",
             f"Speed-up {fmt(r['speedup'], 2)}x. Inside the carried faces' coverings the cadence's output is "
             f"{fmt(d['psnr_db']['median'], 1)} dB (median; 5th percentile {fmt(d['psnr_db']['p5'], 1)} dB) from "
             f"drawing every face anew, {fmt(d['mean_abs']['mean'], 2)} levels mean absolute difference.", ""]
    return "\n".join(lines + report.markdown_tail(result))


def _run(args, argv) -> int:
    quiet = args.quiet
    if args.source and (args.resolution or args.faces):
        raise BenchError("--source and --resolution/--faces exclude each other")
    report.check_out_dir(args.out, args.overwrite)
    report.quiet_native_logs(args.verbose)
    from stream.unmasker import models_available
    if not models_available():
        raise BenchError("the shipped models are missing from models/weights: the cadence runs the model method", 1)
    if args.source:
        for s in args.source:
            if not Path(s).is_file():
                raise BenchError(f"input not found: {s}")
        grid, tile = _size(args.grid, "--grid"), _size(args.tile, "--tile")
        if grid == (1, 1) and len(args.source) == 1:
            from stream.sources import open_source
            src = open_source(args.source[0])
            read, close = (lambda: (lambda f: None if f is None else f.image)(src.read())), src.close
        else:
            mosaic = Mosaic(args.source, grid, tile)
            read, close = mosaic.read, mosaic.close
        label = " + ".join(Path(s).name for s in args.source) + (f" as a {args.grid} mosaic" if grid != (1, 1) else "")
    else:
        from benchmarks.clips import generated_clip, parse_resolution, resolution_label
        from stream.sources import open_source
        try:
            size = parse_resolution(args.resolution or "720p")
        except ValueError as exc:
            raise BenchError(str(exc)) from None
        path = generated_clip(size, args.faces or 4, args.frames, cache_dir=args.clips_dir, log=lambda m: log(m, quiet))
        src = open_source(str(path))
        read, close = (lambda: (lambda f: None if f is None else f.image)(src.read())), src.close
        label = f"generated {resolution_label(size)} {args.faces or 4} face(s)"
    out_dir = report.prepare_out_dir(args.out, args.overwrite)
    log(f"{PROG}: {label}; results in {out_dir}", quiet)
    try:
        res = run(read, args, quiet)
    finally:
        close()
    result = {**report.result_header("cadence", PROG, argv), "settings": {"frames": args.frames, "warmup": args.warmup,
                                                                           "threads": args.threads},
              "machine": report.machine_info(), "source": {"label": label}, "result": res, "notes": [], "files": {},
              "rows": [{"key": {"source": label},
                        "metrics": {"speedup": res["speedup"],
                                    "carried_per_frame": res["carried_faces_per_frame"]["mean"],
                                    "psnr_db_median": res["difference_in_coverings"]["psnr_db"]["median"],
                                    "psnr_db_p5": res["difference_in_coverings"]["psnr_db"]["p5"],
                                    "flicker_ratio_every_frame": res["flicker_ratio_stabilised"]["every_frame"],
                                    "flicker_ratio_cadence": res["flicker_ratio_stabilised"]["cadence"]}}]}
    report.write_results(result, out_dir, markdown, None, json_path=args.json)
    log(f"wrote {out_dir / 'cadence.json'}, {out_dir / 'cadence.md'}", quiet)
    return 0


def main(argv=None) -> int:
    return report.run_main(PROG, argv, build_parser, _run)


if __name__ == "__main__":
    sys.exit(main())
