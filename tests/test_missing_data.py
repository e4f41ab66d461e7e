"""Commands that need data outside the repository say what is missing and which command
prepares it (one line, non-zero exit) instead of printing an empty table."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run(module: str, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def one_error_line(proc) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    return lines[0]


def test_detection_without_photos_or_clips_is_an_error(tmp_path):
    proc = run("benchmarks.detection", "--photos", tmp_path / "rmfd_dev", "--clips", "--out", tmp_path / "out")
    line = one_error_line(proc)
    assert "nothing to measure" in line and str(tmp_path / "rmfd_dev") in line
    assert not (tmp_path / "out").exists()


def test_detection_names_the_prepare_command_for_its_default_photos(tmp_path, monkeypatch):
    from benchmarks import detection
    message = detection.missing_data(detection.DEFAULT_PHOTOS, [], [])
    assert "python -m training.data.prepare" in message


def test_evaluate_without_prepared_faces_names_the_prepare_command(tmp_path):
    proc = run("training.evaluate", "--cache", tmp_path / "cache", "--out", tmp_path / "out")
    line = one_error_line(proc)
    assert "python -m training.data.prepare" in line and str(tmp_path / "cache") in line
    assert not (tmp_path / "out").exists()


def test_evaluate_without_the_real_photos_names_the_realseg_command(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    np.savez(cache / "meta.npz", keys=np.array([]))
    proc = run("training.evaluate", "--cache", cache, "--out", tmp_path / "out")
    assert "python -m training.data.realseg" in one_error_line(proc)


def test_the_clip_enrolment_measure_needs_real_and_its_clip(tmp_path):
    alone = run("training.evaluate", "--clip-enrolment", "--out", tmp_path / "out")
    assert "add --real" in one_error_line(alone)
    missing = run("training.evaluate", "--real", "--clip-enrolment", tmp_path / "none.mp4", "--out", tmp_path / "out")
    assert str(tmp_path / "none.mp4") in one_error_line(missing)
    # A candidates folder runs through the stream too (stream.Unmasker's weights_dir): one without any
    # candidate network is refused before the clip is read (not measured as the shipped weights).
    candidates = run("training.evaluate", "--real", "--clip-enrolment", "--weights", tmp_path, "--out", tmp_path / "out")
    assert "not a folder of candidate .onnx files" in one_error_line(candidates)
    assert not (tmp_path / "out").exists()


def test_the_same_person_measure_needs_the_mask_templates_too(tmp_path):
    # Its probes are covered with the MaskTheFace templates that training.data.prepare extracts: without
    # them a built same-person set used to end in a StopIteration traceback.
    from training.data.same_person import missing_message
    from training.data.synth import load_templates
    people = tmp_path / "same_person"
    people.mkdir()
    assert "training.data.same_person" in missing_message(people, tmp_path / "templates")
    np.savez(people / "meta.npz", keys=np.array([]))
    line = missing_message(people, tmp_path / "templates")
    assert "python -m training.data.prepare" in line and str(tmp_path / "templates") in line
    try:
        load_templates(tmp_path / "templates")
    except FileNotFoundError as e:
        assert str(e) == line
    else:
        raise AssertionError("load_templates found templates in an empty folder")
    assert missing_message(people, ROOT / "assets" / "mask_templates") is None    # the MIT copy in the repo


def test_the_holes_measure_without_labelled_photos_is_an_error(tmp_path):
    proc = run("benchmarks.detection", "--sections", "holes", "--labelled", tmp_path / "none", "--out", tmp_path / "out")
    line = one_error_line(proc)
    assert "nothing to measure for holes" in line and str(tmp_path / "none") in line
    assert "python -m training.data.prepare" in line and not (tmp_path / "out").exists()
