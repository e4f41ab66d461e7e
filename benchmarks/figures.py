"""The README's performance tables and figures, regenerated from committed results.

    python -m benchmarks.figures tables          # the Markdown tables, from benchmarks/reports/perf/
    python -m benchmarks.figures stages          # assets/perf_stages.png, from the sample's fps JSON
    python -m benchmarks.figures before-after    # assets/before_after.png, with the shipped weights
    python -m benchmarks.figures all

Every published number comes from a JSON under benchmarks/reports/ written by the benchmark
itself (`--json PATH`); each table and figure says when that run was made:

    python -m benchmarks.fps --json benchmarks/reports/perf/fps-sample.json
    python -m benchmarks.fps --resolutions 720p --faces 1,4,16 --method model --repeats 1 \\
        --frames 60 --json benchmarks/reports/perf/fps-generated.json
    python -m benchmarks.gpu_path --device cuda --json benchmarks/reports/perf/gpu_path.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "benchmarks" / "reports"
PERF = REPORTS / "perf"
SOURCES = {   # table -> (results JSON, the command that writes it)
    "sample": (PERF / "fps-sample.json",
               "python -m benchmarks.fps --json benchmarks/reports/perf/fps-sample.json"),
    "generated": (PERF / "fps-generated.json",
                  "python -m benchmarks.fps --resolutions 720p --faces 1,4,16 --method model "
                  "--repeats 1 --frames 60 --json benchmarks/reports/perf/fps-generated.json"),
    "gpu": (REPORTS / "2026-11-30-h200-gpu_path.json",
            "python -m benchmarks.gpu_path --device cuda --json benchmarks/reports/perf/gpu_path.json"),
}
STAGES = ("decode", "track", "align", "analyse", "decide", "inpaint", "composite", "encode")
GPU_SETUPS = (("cpu", "CPU path"), ("gpu+mp", "GPU, mediapipe tracking"),
              ("gpu+torch-eager", "GPU, torch tracking, eager"),
              ("gpu+torch", "GPU, torch tracking + CUDA graphs"))


class FigureError(Exception):
    """One line for the user."""


def load(path: Path, command: str) -> dict:
    if not Path(path).is_file():
        raise FigureError(f"{path} is missing: run {command}")
    try:
        return json.loads(Path(path).read_text())
    except ValueError as exc:
        raise FigureError(f"{path} is not a results JSON ({exc})") from None


def _date(result: dict) -> str:
    return str(result.get("created", "?"))[:10]


def _spread(s: dict) -> str:
    return f"{s['median']:.1f} ({s['min']:.1f}–{s['max']:.1f})"


def _ok(result: dict) -> list[dict]:
    return [c for c in result.get("configs", []) if c.get("status") == "ok"]


def _md(header: list[str], rows: list[list[str]], align: str) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def sample_table(result: dict) -> str:
    """The bundled sample, per method: pipelined / sequential FPS, ratio, live latency, drops."""
    rows = []
    for c in _ok(result):
        e = c["engines"]
        if "pipelined" not in e:
            continue
        live = e.get("live")
        rows.append([
            "classical baseline" if c["key"]["method"] == "classical" else c["key"]["method"],
            _spread(e["floor"]["fps"]) if "floor" in e else "–", _spread(e["pipelined"]["fps"]),
            f"{c['x_floor']:.2f}×" if c.get("x_floor") else "–",
            _spread(e["sequential"]["fps"]), f"{c['speedup']:.2f}×",
            (f"{live['latency_ms']['p50']:.0f} / {live['latency_ms']['p95']:.0f} / "
             f"{live['latency_ms']['p99']:.0f}") if live else "–",
            f"{live['dropped_pct']['median']:.0f} %" if live else "–"])
    s = result["settings"]
    stages = ""
    model = [c for c in _ok(result) if c["key"]["method"] == "model" and "sequential" in c["engines"]]
    if model:
        st = model[0]["engines"]["sequential"]["stages"]
        stages = ("\n\nMean ms per frame (sequential loop, the model method): "
                  + ", ".join(f"{k} {st[k]['mean_ms']:.1f}" for k in STAGES  # reports before "decide" lack it
                              if st.get(k, {}).get("mean_ms") is not None)
                  + ".")
    return (f"Bundled sample, {s['frames']} frames after warm-up, medians of {s['repeats']} repeats "
            f"(min–max); measured {_date(result)}:\n\n"
            + _md(["method", "floor FPS (decode → encode)", "pipelined FPS", "× floor", "sequential FPS",
                   "pipelined / sequential", "live latency p50 / p95 / p99 ms", "live drops"], rows, "lrrrrrrr")
            + stages)


def generated_table(result: dict) -> str:
    """Generated clips: pipelined FPS / live p95 latency per resolution (rows) and faces (columns)."""
    cells: dict[tuple[str, int], str] = {}
    methods = {c["key"]["method"] for c in _ok(result)}
    method = "model" if "model" in methods else "classical"   # the README's table is the model's
    for c in _ok(result):
        k, e = c["key"], c["engines"]
        if k["source"] != "generated" or "pipelined" not in e or k["method"] != method:
            continue
        live = e.get("live")
        text = f"{e['pipelined']['fps']['median']:.1f} FPS"
        if c.get("x_floor"):
            text += f" ({c['x_floor']:.2f}× the {e['floor']['fps']['median']:.0f} FPS floor)"
        if live:
            text += f" / {live['latency_ms']['p95']:.0f} ms"
            if live["dropped_pct"]["median"] >= 1:
                text += f" ({live['dropped_pct']['median']:.0f} % of live frames dropped)"
        cells[(k["resolution"], k["faces"])] = text
    resolutions = sorted({r for r, _ in cells}, key=lambda r: int(r.split("x")[0]) * int(r.split("x")[1]))
    faces = sorted({f for _, f in cells})
    rows = [[r.replace("x", "×")] + [cells.get((r, f), "–") for f in faces] for r in resolutions]
    header = ["resolution"] + [f"{f} face" + ("s" if f > 1 else "") for f in faces]
    return (f"Generated clips (masked faces drifting), pipelined FPS (× the same run's decode → encode floor) "
            f"/ live p95 latency; measured "
            f"{_date(result)}:\n\n" + _md(header, rows, "l" * len(header)))


def gpu_table(result: dict) -> str:
    rows = []
    for res, setups in result["results"].items():
        base = setups["cpu"]["fps"]
        row = [res]
        for name, _ in GPU_SETUPS:
            s = setups.get(name)
            if s is None:
                row.append("–")
                continue
            text = f"{s['fps']:.1f} FPS" + ("" if name == "cpu" else f" ({s['fps'] / base:.2f}×)")
            if name == "gpu+torch":
                text = (f"**{text}**, p95 {s['frame_ms']['p95']:.0f} ms, "
                        f"{s.get('gpu_peak_mb', 0):.0f} MB")
            row.append(text)
        rows.append(row)
    return (f"GPU path (`{' '.join(result['command'])}`), measured {_date(result)}:\n\n"
            + _md(["1 masked face"] + [label for _, label in GPU_SETUPS], rows, "lrrrr"))


def tables(sources: dict = SOURCES) -> str:
    parts = []
    for name, render in (("sample", sample_table), ("generated", generated_table), ("gpu", gpu_table)):
        path, command = sources[name]
        parts.append(f"<!-- {name}: {Path(path).relative_to(ROOT) if Path(path).is_relative_to(ROOT) else path} -->\n"
                     + render(load(path, command)))
    return "\n\n".join(parts) + "\n"


def _save(fig, out: Path, title: str) -> Path:
    out = Path(out)
    fig.savefig(out, dpi=110, bbox_inches="tight", metadata={"Title": title, "Software": "benchmarks.figures"})
    import matplotlib.pyplot as plt
    plt.close(fig)
    return out


def stages_figure(result: dict, out: Path) -> Path:
    """assets/perf_stages.png: mean ms per stage, per method and engine, of the sample's fps run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    bars = [(f"{c['key']['method']} · {engine}", e) for c in _ok(result)
            for engine, e in c["engines"].items() if engine in ("pipelined", "sequential")]
    if not bars:
        raise FigureError("the fps results hold no pipelined/sequential run to draw")
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(bars) + 1.8))
    y, left = np.arange(len(bars)), np.zeros(len(bars))
    for stage in STAGES:
        values = np.array([e["stages"].get(stage, {}).get("mean_ms") or 0.0 for _, e in bars])
        ax.barh(y, values, left=left, label=stage)
        left += values
    ax.set_yticks(y, [label for label, _ in bars])
    ax.invert_yaxis()
    ax.set_xlabel("mean ms per frame")
    machine = result.get("machine", {})
    title = (f"Stage breakdown, {Path(str(result['configs'][0]['key'].get('source', ''))).name} — "
             f"measured {result.get('created', '?')} on {machine.get('cpu', '?')} "
             f"({machine.get('cpus_usable', '?')} usable cores)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, out, title)


def before_after_figure(out: Path, source: Path = ROOT / "assets" / "sample.mp4", frame: int = 100,
                        method: str = "auto") -> Path:
    """assets/before_after.png: one frame of the bundled sample, before and after, captioned with
    the date and the inpainter's weights (sha256 from its sidecar)."""
    import av
    import cv2
    import numpy as np
    from stream import Unmasker
    res = img = None
    with Unmasker(method=method) as um, av.open(str(source)) as container:
        for i, f in enumerate(container.decode(video=0)):
            img = f.to_ndarray(format="bgr24")
            res = um.process(img, timestamp_ms=float(f.pts * f.time_base * 1000))
            if i == frame:
                break
        used = um.method
    if res is None or not res.faces:
        raise FigureError(f"no face in frame {frame} of {source}")
    x0, y0, x1, y1 = res.faces[0].box
    cx, cy, half = (x0 + x1) // 2, (y0 + y1) // 2, int(max(x1 - x0, y1 - y0) * 0.9)
    crop = lambda im: im[max(cy - half, 0):cy + half, max(cx - half, 0):cx + half]  # noqa: E731
    side = 360
    pair = np.hstack([cv2.resize(crop(img), (side, side)), np.full((side, 8, 3), 255, np.uint8),
                      cv2.resize(crop(res.image), (side, side))])
    for text, x in (("input", 8), (f"Unmask ({used})", side + 16)):
        cv2.putText(pair, text, (x, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    caption = f"{time.strftime('%Y-%m-%d')}  weights {weights_tag()}"
    band = np.full((26, pair.shape[1], 3), 255, np.uint8)
    cv2.putText(band, caption, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (60, 60, 60), 1, cv2.LINE_AA)
    image = np.vstack([pair, band])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(image.shape[1] / 100, image.shape[0] / 100), dpi=100)
    fig.figimage(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    out = Path(out)
    fig.savefig(out, dpi=100, metadata={"Title": f"Unmask before/after, {caption}",
                                        "Software": "benchmarks.figures"})
    plt.close(fig)
    return out


def weights_tag() -> str:
    sidecar = ROOT / "models" / "weights" / "inpainter_fast.json"
    try:
        return "inpainter_fast " + json.loads(sidecar.read_text())["sha256"][:12]
    except (OSError, ValueError, KeyError):
        return "classical (no shipped inpainter)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.figures", description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["tables", "stages", "before-after", "all"])
    ap.add_argument("--assets", type=Path, default=ROOT / "assets", help="where the PNGs go")
    ap.add_argument("--fps-sample", type=Path, default=SOURCES["sample"][0])
    ap.add_argument("--fps-generated", type=Path, default=SOURCES["generated"][0])
    ap.add_argument("--gpu-path", type=Path, default=SOURCES["gpu"][0])
    ap.add_argument("--frame", type=int, default=100, help="before-after: the sample's frame")
    args = ap.parse_args(argv)
    sources = {"sample": (args.fps_sample, SOURCES["sample"][1]),
               "generated": (args.fps_generated, SOURCES["generated"][1]),
               "gpu": (args.gpu_path, SOURCES["gpu"][1])}
    try:
        if args.what in ("before-after", "all"):
            print(f"wrote {before_after_figure(args.assets / 'before_after.png', frame=args.frame)}")
        if args.what in ("stages", "all"):
            print(f"wrote {stages_figure(load(*sources['sample']), args.assets / 'perf_stages.png')}")
        if args.what in ("tables", "all"):
            print(tables(sources))
    except FigureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
