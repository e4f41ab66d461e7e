"""The bundled demo clip assets/sample.mp4 (made by assets/make_sample.py) is present and as documented."""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "sample.mp4"

# Documented properties of the clip (see assets/LICENSES.md and make_sample.py).
WIDTH, HEIGHT, FPS, N_FRAMES = 1280, 720, 25, 150
UNMASKED_FRAMES = 25            # frames 0..24 unmasked, 25..149 masked
MASKED_PROBES = (60, 100, 140)
UNMASKED_PROBE = 10
MAX_BYTES = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def probe_frames() -> dict[int, np.ndarray]:
    """RGB frames at the probe indices, decoded with PyAV."""
    want = set(MASKED_PROBES) | {UNMASKED_PROBE}
    frames = {}
    with av.open(str(SAMPLE)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in want:
                frames[i] = f.to_ndarray(format="rgb24")
            if len(frames) == len(want):
                break
    assert set(frames) == want
    return frames


@pytest.fixture(scope="module")
def landmarks(probe_frames) -> dict[int, np.ndarray | None]:
    """468 face-mesh points (pixels) per probe frame, or None where no face is found."""
    import mediapipe as mp
    out = {}
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as fm:
        for i, rgb in probe_frames.items():
            res = fm.process(rgb)
            out[i] = (np.float64([[p.x * WIDTH, p.y * HEIGHT] for p in res.multi_face_landmarks[0].landmark])
                      if res.multi_face_landmarks else None)
    return out


def test_sample_exists_and_is_small():
    assert SAMPLE.is_file(), "run: python assets/make_sample.py"
    assert SAMPLE.stat().st_size <= MAX_BYTES


def test_sample_streams():
    with av.open(str(SAMPLE)) as c:
        assert len(c.streams.video) == 1
        v = c.streams.video[0]
        assert v.codec_context.name == "h264"
        assert (v.codec_context.width, v.codec_context.height) == (WIDTH, HEIGHT)
        assert v.average_rate == Fraction(FPS)
        assert len(c.streams.audio) == 1, "the clip must carry an audio track"
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac"
        assert a.rate == 44100
        n = 0
        for f in c.decode(video=0):
            assert (f.width, f.height) == (WIDTH, HEIGHT)
            n += 1
    assert n == N_FRAMES


def _chroma(rgb: np.ndarray, centre: np.ndarray, radius: int) -> np.ndarray:
    """Mean (a*, b*) of a square patch: lighting-independent colour."""
    x, y = np.int32(np.rint(centre))
    patch = rgb[y - radius:y + radius + 1, x - radius:x + radius + 1]
    lab = cv2.cvtColor(np.ascontiguousarray(patch), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    return lab[:, 1:].mean(0)


def _mouth_and_skin(rgb: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = max(3, int(np.linalg.norm(lm[454] - lm[234]) / 25))
    mouth = _chroma(rgb, lm[[13, 14, 0, 17]].mean(0), r)    # lips, centre of the lower face
    skin = _chroma(rgb, lm[[151, 168]].mean(0), r)          # forehead / between the eyes
    return mouth, skin


@pytest.mark.parametrize("i", MASKED_PROBES)
def test_masked_frames_show_a_face_wearing_a_mask(i, probe_frames, landmarks):
    lm = landmarks[i]
    assert lm is not None, f"mediapipe found no face in frame {i}"
    lo, hi = lm.min(0), lm.max(0)
    assert lo.min() > 0 and hi[0] < WIDTH and hi[1] < HEIGHT
    mouth, skin = _mouth_and_skin(probe_frames[i], lm)
    # The (blue) surgical mask over the mouth is far from skin colour, and bluer.
    assert np.linalg.norm(mouth - skin) > 35, (mouth, skin)
    assert mouth[1] < skin[1] - 25, (mouth, skin)


def test_first_second_is_unmasked(probe_frames, landmarks):
    lm = landmarks[UNMASKED_PROBE]
    assert lm is not None
    rgb = probe_frames[UNMASKED_PROBE]
    r = max(3, int(np.linalg.norm(lm[454] - lm[234]) / 25))
    cheeks = (_chroma(rgb, lm[205], r) + _chroma(rgb, lm[425], r)) / 2
    _, skin = _mouth_and_skin(rgb, lm)
    assert np.linalg.norm(cheeks - skin) < 20, (cheeks, skin)


def test_generator_refuses_to_overwrite(tmp_path):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"")
    p = subprocess.run([sys.executable, str(ROOT / "assets" / "make_sample.py"), "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "--overwrite" in p.stderr
    assert out.read_bytes() == b""
