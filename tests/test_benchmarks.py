"""The benchmark tools (benchmarks/): tiny real runs of each command line, checked for schema,
internal consistency and outputs. No speed thresholds: only that the numbers add up."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("decode", "track", "align", "analyse", "decide", "inpaint", "composite", "encode")
FRAMES, WARMUP = 10, 2
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(module: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, path


def assert_one_line_error(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    assert "error" in err


# ------------------------------------------------------------------------------------ fps

@pytest.fixture(scope="module")
def fps_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("fps")
    out = base / "results"
    t = time.monotonic()
    proc = run("benchmarks.fps", "--resolutions", "320x240", "--faces", "1", "--frames", FRAMES,
               "--warmup", WARMUP, "--repeats", 1, "--clips-dir", base / "clips", "--out", out, "--quiet",
               "--json", base / "perf" / "fps.json")
    assert proc.returncode == 0, proc.stderr
    return {"out": out, "proc": proc, "data": json.loads((out / "fps.json").read_text()),
            "json_copy": base / "perf" / "fps.json",
            "clips": base / "clips", "seconds": time.monotonic() - t}


def test_fps_writes_json_markdown_and_plots(fps_run):
    out = fps_run["out"]
    md = (out / "fps.md").read_text()
    assert "| source | resolution | faces | method |" in md and "320x240" in md
    assert "## Stage times" in md
    assert "| source | resolution" in fps_run["proc"].stdout          # the table is printed too
    for name in ("fps.png", "stages.png", "latency.png"):
        assert_png(out / name)
    assert not (out / ".tmp").exists()                                  # temporary encodes cleaned up
    d = fps_run["data"]
    assert d["files"]["plots"] and all(Path(p).is_file() for p in d["files"]["plots"])


def test_fps_json_schema(fps_run):
    d = fps_run["data"]
    assert d["benchmark"] == "fps" and d["schema_version"] == 1
    m = d["machine"]
    assert m["cpu"] and m["cpu_logical_cores"] >= 1 and isinstance(m["gpus"], list)
    for pkg in ("numpy", "opencv", "onnxruntime", "mediapipe", "av", "torch"):
        assert pkg in m["packages"]
    assert d["settings"]["frames"] == FRAMES and d["settings"]["warmup"] == WARMUP
    ok = [c for c in d["configs"] if c["status"] == "ok"]
    assert any(c["key"]["method"] == "classical" for c in ok)
    for c in d["configs"]:
        assert set(c["key"]) == {"source", "resolution", "faces", "method", "backend", "device"}
        if c["status"] != "ok":
            assert c["reason"]                                          # skipped / failed say why
    for c in ok:
        assert c["key"]["resolution"] == "320x240" and c["key"]["faces"] == 1
        assert set(c["engines"]) == {"floor", "pipelined", "sequential", "live"}
        # The floor (decode -> encode of the same frames, same run) and the pipeline's multiple of it.
        floor, pip = c["engines"]["floor"], c["engines"]["pipelined"]
        assert floor["mean_faces"] == 0 and floor["trials"][0]["frames"] == FRAMES
        assert math.isclose(c["x_floor"], pip["fps"]["median"] / floor["fps"]["median"], rel_tol=1e-9)
        for e in c["engines"].values():
            assert set(e["stages"]) == set(STAGES)
            for k in ("fps", "cpu_pct"):
                assert set(e[k]) >= {"median", "min", "max", "q1", "q3", "n"}
            assert len(e["trials"]) == 1
    assert d["rows"] and all({"key", "metrics"} <= set(r) for r in d["rows"])


def test_fps_numbers_add_up(fps_run):
    for c in [c for c in fps_run["data"]["configs"] if c["status"] == "ok"]:
        eng = c["engines"]
        for name in ("floor", "pipelined", "sequential"):
            t = eng[name]["trials"][0]
            assert t["frames"] == t["frames_given"] == FRAMES               # frames counted = given
            assert t["fps"] > 0 and math.isclose(t["fps"], t["frames"] / t["duration_s"], rel_tol=1e-9)
            assert t["stage_sum_ms"] <= t["frame_time_ms"] * 1.02 + 0.5    # stages fit in a frame's wall time
            lat = t["latency_ms"]
            assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"] + 1e-9
            r = t["resources"]
            assert r["cpu_pct"] > 0 and r["peak_rss_mb"] > 0
            assert t["mean_faces"] <= 1
        pst = eng["pipelined"]["trials"][0]["pipeline_stats"]
        assert pst["frames_in"] == pst["frames_out"] == FRAMES and pst["frames_dropped"] == 0
        seq = eng["sequential"]["trials"][0]
        # One thread: the loop's wall time per frame is the inverse of its throughput.
        assert seq["frame_time_ms"] <= 1000.0 / seq["fps"] * 1.02 + 0.5
        # The headline ratio.
        assert c["speedup"] == pytest.approx(eng["pipelined"]["fps"]["median"] / eng["sequential"]["fps"]["median"])
        live = eng["live"]["trials"][0]
        assert live["frames_published"] == FRAMES
        assert live["frames"] + live["frames_dropped"] == FRAMES and live["frames_dropped"] >= 0
        assert live["stage_sum_ms"] <= live["frame_time_ms"] * 1.02 + 0.5
        assert len(live["latencies_ms"]) == live["frames"]
        row = next(r for r in fps_run["data"]["rows"] if r["key"] == c["key"])
        assert row["metrics"]["speedup"] == pytest.approx(c["speedup"])


def test_generated_clip_is_cached_h264_with_the_frames_asked_for(fps_run):
    import av
    clips = list(fps_run["clips"].glob("*.mp4"))
    assert len(clips) == 1 and "320x240" in clips[0].name
    with av.open(str(clips[0])) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and (s.width, s.height) == (320, 240)
        assert sum(1 for _ in c.decode(s)) == FRAMES + WARMUP
    from benchmarks.clips import generated_clip
    mtime = clips[0].stat().st_mtime_ns
    assert generated_clip((320, 240), 1, FRAMES + WARMUP, cache_dir=fps_run["clips"]) == clips[0]
    assert clips[0].stat().st_mtime_ns == mtime                          # reused, not rewritten


def test_compare_prints_ratios_side_by_side(fps_run, tmp_path):
    d = fps_run["data"]
    faster = json.loads(json.dumps(d))
    for r in faster["rows"]:
        r["metrics"]["pipelined_fps"] *= 2
    b = tmp_path / "b.json"
    b.write_text(json.dumps(faster))
    proc = run("benchmarks.fps", "--compare", fps_run["out"] / "fps.json", b)
    assert proc.returncode == 0, proc.stderr
    assert "| configuration | metric | A | B | B/A |" in proc.stdout
    line = next(x for x in proc.stdout.splitlines() if "| pipelined_fps |" in x)
    assert line.rstrip(" |").endswith("2.00×")
    assert next(x for x in proc.stdout.splitlines() if "| speedup |" in x).rstrip(" |").endswith("1.00×")


def test_a_results_folder_is_never_reused(fps_run, tmp_path):
    proc = run("benchmarks.fps", "--source", ROOT / "assets" / "sample.mp4", "--out", fps_run["out"])
    assert_one_line_error(proc)
    assert "--overwrite" in proc.stderr
    from benchmarks.report import prepare_out_dir
    a, b = prepare_out_dir(None, root=tmp_path), prepare_out_dir(None, root=tmp_path)
    assert a != b and a.is_dir() and b.is_dir()


@pytest.mark.parametrize("args", [
    ["--source", "no/such/clip.mp4"],
    ["--frames", "0"],
    ["--repeats", "x"],
    ["--resolutions", "999p"],
    ["--resolutions", "321x240"],
    ["--faces", "1,-2"],
    ["--method", "magic"],
    ["--backend", "nope"],
    ["--device", "tpu"],
    ["--source", "assets/sample.mp4", "--faces", "2"],
    ["--compare", "no/a.json", "no/b.json"],
])
def test_fps_bad_input_is_one_clear_line(args, tmp_path):
    out = tmp_path / "never"
    proc = run("benchmarks.fps", *args, "--out", out)
    assert_one_line_error(proc)
    assert not out.exists()                                              # nothing written


def test_compare_refuses_mixed_benchmarks(fps_run, tmp_path):
    other = tmp_path / "t.json"
    other.write_text(json.dumps({"benchmark": "temporal", "rows": []}))
    proc = run("benchmarks.fps", "--compare", fps_run["out"] / "fps.json", other)
    assert_one_line_error(proc)


# ---------------------------------------------------------------------------- pacing source

class _ListSource:
    def __init__(self, n):
        from stream.sources import SourceInfo, SourceStats
        self.n, self.i = n, 0
        self.info = SourceInfo(width=8, height=8, fps=100.0, frame_count=n, time_base=Fraction(1, 100))
        self.stats = SourceStats()
        self.closed = False

    def read(self):
        from stream.frame import Frame
        if self.i >= self.n:
            return None
        f = Frame(np.full((8, 8, 3), self.i, np.uint8), self.i, time.monotonic(), pts=self.i,
                  time_base=Fraction(1, 100))
        self.i += 1
        return f

    def close(self):
        self.closed = True


def test_paced_source_behaves_like_a_camera():
    from benchmarks.clips import PacedSource
    inner = _ListSource(20)
    src = PacedSource(inner, fps=100.0)
    assert src.info.live and src.info.frame_count is None
    got, t0 = [], time.monotonic()
    while (f := src.read()) is not None:
        got.append(f.index)
        time.sleep(0.025)                     # a consumer slower than the 100 FPS "camera"
    elapsed = time.monotonic() - t0
    src.close()
    assert inner.closed
    assert src.published == 20 and elapsed >= 0.18                     # paced at ~10 ms per frame
    assert got == sorted(got) and got[-1] == 19                         # newest frames, in order
    assert len(got) + src.stats.dropped == 20 and src.stats.dropped > 0


# -------------------------------------------------------------------------------- models

def _first_model() -> str | None:
    found = sorted((ROOT / "models" / "weights").glob("*.onnx"))
    return found[0].stem if found else None


@pytest.mark.skipif(_first_model() is None, reason="no exported model in models/weights")
def test_models_benchmark(tmp_path):
    out = tmp_path / "m"
    proc = run("benchmarks.models", "--models", _first_model(), "--backends", "onnxruntime,tensorrt",
               "--batches", "1,2", "--iters", 3, "--warmup", 1, "--precisions", "fp32,fp16", "--out", out,
               "--quiet", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    d = json.loads((out / "models.json").read_text())
    assert d["benchmark"] == "models" and d["machine"]["packages"]["onnxruntime"]
    ok = [r for r in d["results"] if r["status"] == "ok"]
    assert [(r["backend"], r["precision"], r["batch"]) for r in ok] == [("onnxruntime", "fp32", 1),
                                                                       ("onnxruntime", "fp32", 2)]
    for r in ok:
        lat = r["latency_ms"]
        assert r["iters"] == 3 and 0 < lat["min"] <= lat["median"] <= lat["p95"] <= lat["max"]
        assert r["faces_per_s"] == pytest.approx(r["batch"] / lat["median"] * 1000)
        assert r["load_ms"] > 0 and r["peak_rss_mb"] > 0
    skipped = {(r["backend"], r["precision"]): r["reason"] for r in d["results"] if r["status"] != "ok"}
    assert "fp16" in skipped[("onnxruntime", "fp16")]                   # CPU ONNX Runtime runs fp32 only
    assert ("tensorrt", "fp32") in skipped and skipped[("tensorrt", "fp32")]
    assert len(d["rows"]) == 2
    md = (out / "models.md").read_text()
    assert "| model | backend |" in md and "## Not measured" in md
    assert_png(out / "models.png")


def test_models_bad_input_is_one_clear_line(tmp_path):
    assert_one_line_error(run("benchmarks.models", "--models", "no_such_model", "--out", tmp_path / "x"))
    assert_one_line_error(run("benchmarks.models", "--batches", "0"))
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ temporal

def test_temporal_benchmark(fps_run, tmp_path):
    out = tmp_path / "t"
    from stream.unmasker import models_available
    # auto = the models when shipped (else classical again, which is measured once).
    proc = run("benchmarks.temporal", "--resolution", "320x240", "--faces", 1, "--frames", FRAMES + WARMUP,
               "--warmup", WARMUP, "--method", "classical,auto", "--clips-dir", fps_run["clips"], "--out", out,
               "--quiet")
    assert proc.returncode == 0, proc.stderr
    d = json.loads((out / "temporal.json").read_text())
    assert d["benchmark"] == "temporal"
    assert [m["method"] for m in d["methods"]] == ["classical"] + (["model"] if models_available() else [])
    for m in d["methods"]:
        _check_temporal_method(m)
    assert len(d["rows"]) == 2 * len(d["methods"])
    md = (out / "temporal.md").read_text()
    assert "## Effect of smoothing" in md and "smoothing off" in md
    assert_png(out / "temporal.png")
    assert run("benchmarks.temporal", "--compare", out / "temporal.json", out / "temporal.json").returncode == 0


def _check_temporal_method(m):
    assert m["frames"] == FRAMES + WARMUP and m["timed_frames"] == FRAMES
    assert set(m["variants"]) == {"smoothing_on", "smoothing_off"}
    for v in m["variants"].values():
        assert v["process_ms"]["n"] == FRAMES and v["fps"] > 0
        assert v["process_ms"]["median"] <= v["process_ms"]["p95"]
        assert 0 < v["pairs"]["jitter"] <= FRAMES + WARMUP - 1
        for k in ("all", "hidden", "visible"):
            assert v["jitter_pct_iod"][k]["median"] >= 0
        assert v["flicker"]["output_lower"]["mean"] >= 0 and v["flicker"]["input_upper"]["mean"] > 0
        assert v["flicker_ratio"] == pytest.approx(v["flicker"]["output_lower"]["mean"]
                                                   / v["flicker"]["input_upper"]["mean"])
        assert len(v["jitter_by_frame"]) == FRAMES + WARMUP
        assert 0 <= v["landmark_source_switches"] <= v["pairs"]["jitter"]
    eff = m["smoothing_effect"]
    assert eff["jitter_reduction"] > 0 and isinstance(eff["latency_cost_ok"], bool)
    assert "median" in eff["latency_cost_ms"]


def test_temporal_bad_input_is_one_clear_line(tmp_path):
    assert_one_line_error(run("benchmarks.temporal", "--source", "missing.mp4", "--out", tmp_path / "x"))
    assert_one_line_error(run("benchmarks.temporal", "--resolution", "abc"))
    assert not (tmp_path / "x").exists()


def test_cadence_benchmark_compares_the_cadence_with_drawing_every_face(fps_run, tmp_path):
    from stream.unmasker import models_available
    if not models_available():
        assert_one_line_error(run("benchmarks.cadence", "--resolution", "640x360", "--out", tmp_path / "c"))
        return
    out = tmp_path / "c"
    proc = run("benchmarks.cadence", "--resolution", "640x360", "--faces", 4, "--frames", FRAMES + WARMUP,
               "--warmup", WARMUP, "--clips-dir", fps_run["clips"], "--out", out, "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr
    d = json.loads((out / "cadence.json").read_text())
    r = d["result"]
    assert d["benchmark"] == "cadence" and r["frames"] == FRAMES + WARMUP and r["full_rate_faces"] == 2
    assert r["process_ms"]["every_frame"]["n"] == r["process_ms"]["cadence"]["n"] == FRAMES
    assert r["speedup"] == pytest.approx(r["process_ms"]["every_frame"]["mean"] / r["process_ms"]["cadence"]["mean"])
    # Half of the (up to four) masked faces are carried once they are tracked; never more.
    carried, masked = r["carried_faces_per_frame"], r["masked_faces_per_frame"]
    assert 0 < carried["mean"] and carried["max"] <= masked["max"] // 2
    assert r["difference_in_coverings"]["psnr_db"]["n"] > 0 and r["difference_in_coverings"]["psnr_db"]["median"] > 20
    assert "Speed-up" in (out / "cadence.md").read_text()


def test_cadence_benchmark_tiles_sources_into_a_mosaic(fps_run, tmp_path):
    from benchmarks.cadence import Mosaic
    from benchmarks.clips import generated_clip
    clip = generated_clip((320, 240), 1, FRAMES + WARMUP, cache_dir=fps_run["clips"])
    mosaic = Mosaic([str(clip)], (2, 2), (160, 120))
    first = mosaic.read()
    frames = 1
    while mosaic.read() is not None:
        frames += 1
    mosaic.close()
    assert first.shape == (240, 320, 3) and frames == FRAMES + WARMUP        # the whole clip
    assert np.array_equal(first[:120, :160], first[120:, :160])             # the one source repeated ...
    assert np.array_equal(first[:120, :160], first[:120, 160:][:, ::-1])     # ... mirrored on every other tile


def test_cadence_bad_input_is_one_clear_line(tmp_path):
    assert_one_line_error(run("benchmarks.cadence", "--source", "missing.mp4", "--out", tmp_path / "x"))
    assert_one_line_error(run("benchmarks.cadence", "--source", __file__, "--grid", "2by2"))
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------- helpers

def test_statistics_and_resolutions():
    from benchmarks.clips import grid_for, parse_resolution
    from benchmarks.report import percentile, summarize
    s = summarize([3, 1, 2, 4])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.5, 1, 4, 4)
    assert s["q1"] == 1.75 and s["q3"] == 3.25
    assert summarize([])["median"] is None
    assert percentile([1, 2, 3, 4, 5], 95) == pytest.approx(4.8)
    assert parse_resolution("720p") == (1280, 720) and parse_resolution("640x360") == (640, 360)
    for bad in ("720", "13x13", "0x0"):
        with pytest.raises(ValueError):
            parse_resolution(bad)
    cols, rows = grid_for(8, 1280, 720)
    assert cols * rows >= 8


# ------------------------------------------------------------------------------ gpu_path

def test_gpu_path_benchmark_on_the_cpu(tmp_path):
    """The GPU-path benchmark's own code, run with device cpu (the torch path in fp32): every setup
    measured on the same frames, the trackers' ceilings, ratios against the CPU product path."""
    pytest.importorskip("torch")
    out = tmp_path / "g"
    proc = run("benchmarks.gpu_path", "--device", "cpu", "--resolutions", "360p", "--frames", 6, "--warmup", 2,
               "--setups", "cpu,gpu+torch", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    d = json.loads((out / "gpu_path.json").read_text())
    assert d["benchmark"] == "gpu_path" and d["frames"] == 6
    by_setup = d["results"]["360p"]
    assert set(by_setup) == {"cpu", "gpu+torch"}
    for r in by_setup.values():
        assert r["faces_found"] == 1.0 and r["fps"] > 0
        assert r["frame_ms"]["p50"] <= r["frame_ms"]["p95"] <= r["frame_ms"]["max"]
        assert sum(r["stages_ms"].values()) <= r["frame_ms"]["mean"] * 1.05
        assert "gpu_peak_mb" not in r                                   # no CUDA here
    trackers = d["trackers"]["360p"]
    assert trackers["mediapipe"]["faces_found"] == trackers["torch"]["faces_found"] == 1.0
    md = (out / "gpu_path.md").read_text()
    assert "| 360p | gpu+torch |" in md and "vs cpu" in md


def test_gpu_path_bad_input_is_one_clear_line(tmp_path):
    assert_one_line_error(run("benchmarks.gpu_path", "--source", tmp_path / "none.mp4", "--out", tmp_path / "x"))
    assert_one_line_error(run("benchmarks.gpu_path", "--setups", "warp-drive"))
    assert_one_line_error(run("benchmarks.gpu_path", "--device", "tpu"))
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------ soak

def test_soak_runs_against_the_rtsp_test_server(tmp_path):
    from test_rtsp import PROBE, SYSTEM_PYTHON, _server_environment
    probe = subprocess.run([SYSTEM_PYTHON, "-c", PROBE], capture_output=True, text=True, timeout=60,
                           env=_server_environment())
    assert probe.returncode == 0, ("the soak needs GStreamer's RTSP server: apt-get install "
                                   "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,"
                                   "good,bad} gstreamer1.0-libav")
    out = tmp_path / "soak"
    proc = run("benchmarks.soak", "--minutes", 0.15, "--method", "classical", "--clip-seconds", 4,
               "--rss-interval-s", 0.5, "--clips-dir", tmp_path / "clips", "--out", out, "--quiet",
               timeout=240)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "soak.json").read_text())
    soak = data["soak"]
    assert soak["stopped_by"] == "duration" and soak["duration_s"] == pytest.approx(9.0)
    assert soak["reconnects"] >= 1                          # the 4 s clip looped
    assert soak["frames_out"] > 50
    rss = soak["rss_mb"]
    assert len(rss["samples"]) >= 10 and rss["start"] > 0 and rss["end"] > 0
    assert rss["growth_pct"] == pytest.approx((rss["end"] - rss["start"]) / rss["start"] * 100)
    first, last = soak["latency_ms"]["first_window"], soak["latency_ms"]["last_window"]
    assert first["frames"] > 0 and last["frames"] > 0 and soak["window_s"] == pytest.approx(3.0)
    assert soak["latency_ms"]["p95_drift_ms"] == pytest.approx(last["p95_ms"] - first["p95_ms"])
    assert "RSS growth" in (out / "soak.md").read_text()


# ------------------------------------------------------------------------------------ figures

def test_fps_json_option_writes_the_results_json_there(fps_run):
    assert json.loads(fps_run["json_copy"].read_text()) == fps_run["data"]


def test_readme_tables_are_rendered_from_the_results_json(fps_run):
    from benchmarks import figures
    data = fps_run["data"]
    generated = figures.generated_table(data)
    config = [c for c in data["configs"] if c["key"]["method"] == "model"][0]
    fps = config["engines"]["pipelined"]["fps"]["median"]
    p95 = config["engines"]["live"]["latency_ms"]["p95"]
    floor = config["engines"]["floor"]["fps"]["median"]
    assert (f"| 320×240 | {fps:.1f} FPS ({config['x_floor']:.2f}× the {floor:.0f} FPS floor) / {p95:.0f} ms"
            in generated)
    assert f"measured {data['created'][:10]}" in generated
    sample = figures.sample_table(data)
    assert f"| model | {floor:.1f} (" in sample and f"| {fps:.1f} (" in sample
    assert f"{config['speedup']:.2f}×" in sample and f"{config['x_floor']:.2f}×" in sample
    assert "| classical baseline |" in sample and "Mean ms per frame" in sample


def test_the_readme_gpu_table_is_the_committed_json():
    from benchmarks import figures
    table = figures.gpu_table(figures.load(*figures.SOURCES["gpu"]))
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(("| 720p", "| 1080p"))]
    assert len(rows) == 2 and all(row in readme for row in rows), table


def test_stage_figure_is_dated_from_its_json(fps_run, tmp_path):
    from benchmarks import figures
    out = figures.stages_figure(fps_run["data"], tmp_path / "perf_stages.png")
    assert_png(out)
    from PIL import Image
    assert fps_run["data"]["created"] in Image.open(out).info["Title"]


def test_figures_without_their_json_name_the_command(tmp_path):
    proc = run("benchmarks.figures", "tables", "--fps-sample", tmp_path / "none.json")
    assert_one_line_error(proc)
    assert "python -m benchmarks.fps --json" in proc.stderr


def test_before_after_figure_from_the_shipped_weights(tmp_path):
    proc = run("benchmarks.figures", "before-after", "--assets", tmp_path, "--frame", 3)
    assert proc.returncode == 0, proc.stderr
    assert_png(tmp_path / "before_after.png")
    from PIL import Image
    title = Image.open(tmp_path / "before_after.png").info["Title"]
    assert time.strftime("%Y-%m-%d") in title and "inpainter_fast" in title


def test_output_hashes_tell_identical_from_different_frames():
    from benchmarks.output_hashes import compare, frame_record
    from stream.unmasker import Face, Result

    img = np.zeros((4, 4, 3), np.uint8)
    face = Face((0, 0, 2, 2), np.zeros((468, 2), np.float32), 0, np.zeros((4, 4), np.uint8), True, "male", 0.75)
    a = frame_record(Result(img, [face]))
    assert a == frame_record(Result(img.copy(), [face]))
    img2 = img.copy()
    img2[0, 0, 0] = 1
    face2 = Face(**{**face.__dict__, "gender_score": 0.7500001})
    assert compare({"c": [a]}, {"c": [a]}) == []
    assert compare({"c": [a]}, {"c": [frame_record(Result(img2, [face]))]}) == ["c frame 0: image differ"]
    assert compare({"c": [a]}, {"c": [frame_record(Result(img, [face2]))]}) == ["c frame 0: faces differ"]
    assert compare({"c": [a, a]}, {"c": [a]}) == ["c: 2 frames in the reference, 1 now"]
