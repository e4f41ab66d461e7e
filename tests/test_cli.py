"""run_stream.py end to end: offline files with audio, and every kind of bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.faces import face_clip_frames, make_face_clip
from tests.media import decoded_frames, packets

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=180):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "run_stream.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def one_line_error(proc):
    """A failed run prints exactly one line on stderr that starts with 'error:' — no traceback."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    errors = [l for l in lines if "error:" in l]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    return make_face_clip(tmp_path_factory.mktemp("clip") / "faces.mp4", n=20)


def test_offline_file_keeps_every_frame_its_timestamps_and_the_audio(face_clip, tmp_path):
    out, stats_path = tmp_path / "out.mp4", tmp_path / "stats.json"
    proc = run_cli("--source", face_clip, "--output", out, "--no-display", "--stats-json", stats_path)
    assert proc.returncode == 0, proc.stderr
    src, dst = decoded_frames(face_clip), decoded_frames(out)
    assert len(dst) == len(src) == 20
    assert [float(p * tb) for p, tb, _ in dst] == [float(p * tb) for p, tb, _ in src]
    assert [bytes(p) for p in packets(out, "audio")] == [bytes(p) for p in packets(face_clip, "audio")]
    stats = json.loads(stats_path.read_text())
    assert stats["frames_in"] == stats["frames_out"] == 20 and stats["frames_dropped"] == 0
    assert stats["mean_faces"] == pytest.approx(1.0)
    for stage in ("decode", "track", "align", "analyse", "decide", "inpaint", "composite", "encode"):
        assert stats["stages"][stage]["mean_ms"] >= 0
        assert stats["stages"][stage]["p95_ms"] >= stats["stages"][stage]["mean_ms"] * 0.5
    assert "done: 20 frames" in proc.stderr


def test_pixels_outside_the_masks_are_bit_identical(face_clip, tmp_path):
    out = tmp_path / "frames/"
    proc = run_cli("--source", face_clip, "--output", str(out) + "/", "--no-display")
    assert proc.returncode == 0, proc.stderr
    written = sorted(Path(out).glob("*.png"))
    src = decoded_frames(face_clip)
    assert len(written) == len(src) == 20
    changed_somewhere = False
    for (pts, tb, original), path, (_, gt) in zip(src, written, face_clip_frames(20)):
        result = cv2.imread(str(path))
        assert result.shape == original.shape
        # The covering, grown generously: the only place pixels may change.
        allowed = cv2.dilate(gt, np.ones((61, 61), np.uint8)) > 0
        diff = (result != original).any(axis=2)
        assert not (diff & ~allowed).any()
        changed_somewhere |= bool((diff & (gt > 0)).any())
    assert changed_somewhere


def test_max_frames_and_classical_method(face_clip, tmp_path):
    out = tmp_path / "short.mp4"
    proc = run_cli("--source", face_clip, "--output", out, "--no-display", "--max-frames", 5,
                   "--method", "classical")
    assert proc.returncode == 0, proc.stderr
    assert len(decoded_frames(out)) == 5
    assert "method=classical" in proc.stderr


def test_an_existing_output_is_never_overwritten_without_asking(face_clip, tmp_path):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"precious")
    line = one_line_error(run_cli("--source", face_clip, "--output", out, "--no-display"))
    assert "--overwrite" in line
    assert out.read_bytes() == b"precious"
    proc = run_cli("--source", face_clip, "--output", out, "--no-display", "--overwrite", "--max-frames", 2)
    assert proc.returncode == 0 and len(decoded_frames(out)) == 2


def test_full_rate_faces_takes_a_count_or_all():
    from run_stream import build_parser
    parse = build_parser().parse_args
    assert parse(["--source", "x.mp4", "--full-rate-faces", "all"]).full_rate_faces is None
    assert parse(["--source", "x.mp4", "--full-rate-faces", "0"]).full_rate_faces == 0
    assert not hasattr(parse(["--source", "x.mp4"]), "full_rate_faces")     # unset: the Unmasker's default


def test_stats_json_is_not_overwritten_without_asking(face_clip, tmp_path):
    stats = tmp_path / "s.json"
    stats.write_text("{}")
    one_line_error(run_cli("--source", face_clip, "--no-display", "--stats-json", stats))
    assert stats.read_text() == "{}"


@pytest.mark.parametrize("case", ["missing", "not_a_video", "truncated", "empty_folder", "bad_flag",
                                  "bad_choice", "unwritable", "output_is_input", "webcam", "refused_url",
                                  "no_cuda", "weights_not_a_folder", "weights_without_networks",
                                  "bad_full_rate_faces"])
def test_bad_input_gives_one_clear_line(case, face_clip, tmp_path):
    args = ["--no-display"]
    if case == "missing":
        args += ["--source", tmp_path / "nope.mp4"]
    elif case == "not_a_video":
        p = tmp_path / "notes.mp4"
        p.write_text("this is not a video\n" * 100)
        args += ["--source", p]
    elif case == "truncated":
        p = tmp_path / "cut.mp4"
        p.write_bytes(face_clip.read_bytes()[:2000])
        args += ["--source", p]
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        args += ["--source", tmp_path / "empty"]
    elif case == "bad_flag":
        args += ["--source", face_clip, "--max-faces", "zero"]
    elif case == "bad_full_rate_faces":
        args += ["--source", face_clip, "--full-rate-faces", "-1"]
    elif case == "bad_choice":
        args += ["--source", face_clip, "--backend", "cuda-magic"]
    elif case == "unwritable":
        args += ["--source", face_clip, "--output", tmp_path / "no" / "such" / "dir" / "o.mp4"]
    elif case == "output_is_input":
        args += ["--source", face_clip, "--output", face_clip, "--overwrite"]
    elif case == "webcam":
        args += ["--source", "/dev/video63"]
    elif case == "refused_url":
        args += ["--source", "rtsp://alice:s3cret@127.0.0.1:9/stream"]
    elif case == "no_cuda":
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA: --device cuda is valid here")
        args += ["--source", face_clip, "--device", "cuda"]
    elif case == "weights_not_a_folder":
        args += ["--source", face_clip, "--weights", tmp_path / "no_such_folder"]
    elif case == "weights_without_networks":
        (tmp_path / "candidates").mkdir()
        args += ["--source", face_clip, "--weights", tmp_path / "candidates"]
    proc = run_cli(*args, timeout=60)
    line = one_line_error(proc)
    if case.startswith("weights_"):
        assert "no_such_folder is not a folder" in line if case == "weights_not_a_folder" else \
            "holds neither analyser.onnx nor inpainter_fast.onnx" in line
    assert "s3cret" not in proc.stderr and "alice" not in proc.stderr
    if case == "refused_url":
        assert "***@127.0.0.1" in line
    if case == "output_is_input":
        assert face_clip.stat().st_size > 2000     # the input is untouched


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_stops_cleanly_and_leaves_a_playable_file(tmp_path, signame):
    import signal
    import time
    clip = make_face_clip(tmp_path / "long.mp4", n=400, audio=True)
    out = tmp_path / "partial.mp4"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # A shell running us in the background may have set SIGINT to "ignore", which a
    # child inherits; a terminal's Ctrl-C reaches a process whose SIGINT is default.
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_stream.py"), "--source", str(clip),
                             "--output", str(out), "--no-display"],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Wait until the run has really started (the banner line), then press Ctrl-C.
    deadline = time.monotonic() + 60
    seen = ""
    while "unmask:" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    time.sleep(1.0)
    proc.send_signal(getattr(signal, signame))
    _, rest = proc.communicate(timeout=60)
    stderr = seen + rest
    assert "Traceback" not in stderr
    assert proc.returncode in (0, 130), stderr
    frames = decoded_frames(out)
    assert 0 < len(frames) < 400                   # stopped early, and the file is finalised
    assert "[interrupted]" in stderr


def test_torch_tracker_needs_the_gpu_pipeline(face_clip, tmp_path):
    out = tmp_path / "out.mp4"
    line = one_line_error(run_cli("--source", face_clip, "--output", out, "--no-display", "--tracker", "torch"))
    assert "--tracker torch" in line and "--device cuda" in line
    assert not out.exists()
