"""The Triton path against a real server: `python -m engines.serve` (PyTriton's tritonserver, CPU) in a
subprocess, the TritonRunner / `--backend triton` as client, in-process ONNX Runtime as the reference.
No mocks: the server is killed and restarted for the fault test."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import free_port
from tests.faces import face_clip_frames, make_face_clip

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90


class Server:
    """One `python -m engines.serve` process group on fixed ports (restartable on the same ports)."""

    def __init__(self):
        self.grpc_port, self.http_port = free_port(), free_port()
        self.url = f"grpc://127.0.0.1:{self.grpc_port}"
        self.proc = None
        self.lines: list[str] = []

    def start(self, wait: bool = True):
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engines.serve", "--grpc-port", str(self.grpc_port), "--http-port",
             str(self.http_port), "--address", "127.0.0.1", "--threads", "1", "--queue-delay-us", "1000"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if wait:
            self.wait_ready()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if "ready" in line:
                self._ready.set()

    def wait_ready(self):
        if not self._ready.wait(START_TIMEOUT_S):
            self.kill()
            raise AssertionError(f"engines.serve not ready: {self.proc.stderr.read()[-2000:]}")

    def kill(self):
        """The whole server (python, tritonserver, backend stubs) dies at once, like a crashed host."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="module")
def server():
    s = Server()
    s.start()
    yield s
    s.proc.send_signal(signal.SIGTERM)                   # a clean stop: exit 0, tritonserver gone too
    try:
        rc = s.proc.wait(30)
    except subprocess.TimeoutExpired:
        s.kill()
        raise AssertionError("engines.serve did not stop on SIGTERM")
    assert rc == 0, s.proc.stderr.read()[-2000:]
    left = subprocess.run(["pgrep", "-g", str(s.proc.pid)], capture_output=True, text=True).stdout.split()
    for _ in range(100):                                  # nothing left in its process group
        if not left:
            break
        time.sleep(0.1)
        left = subprocess.run(["pgrep", "-g", str(s.proc.pid)], capture_output=True, text=True).stdout.split()
    assert not left, subprocess.run(["ps", "-o", "pid,stat,cmd", "-p", ",".join(left)], capture_output=True,
                                    text=True).stdout


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_runner_outputs_match_onnxruntime(server):
    from engines import create_runner
    rng = np.random.default_rng(0)
    for name in ("analyser", "inpainter_fast"):
        remote = create_runner(name, backend="triton", triton_url=server.url)
        local = create_runner(name, backend="onnxruntime", threads=1)
        assert remote.name == "triton" and remote.input_names == local.input_names
        assert remote.output_names == local.output_names
        for n in (1, 3):
            feed = {s.name: rng.random(s.with_batch(n), dtype=np.float32) for s in local.input_specs}
            got, want = remote.run(feed), local.run(feed)
            assert set(got) == set(want)
            for k in want:
                assert got[k].shape == want[k].shape and got[k].dtype == np.float32, (name, k)
                np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5, err_msg=f"{name}.{k}")
        assert remote.run({s.name: np.zeros(s.with_batch(0), np.float32) for s in local.input_specs}) \
            ["landmarks" if name == "analyser" else "output"].shape[0] == 0
        remote.close()
        local.close()


def test_contract_is_checked_against_the_server_metadata(server):
    import tritonclient.grpc as grpcclient
    from engines.base import ModelError
    from engines.triton_runner import TritonRunner
    runner = TritonRunner("inpainter_fast", url=server.url)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    meta = client.get_model_metadata("inpainter_fast", as_json=True)
    client.close()
    runner.check_metadata(meta)                          # the real metadata passes
    wrong_shape = json.loads(json.dumps(meta))
    wrong_shape["inputs"][0]["shape"] = ["-1", "3", "256", "256"]
    with pytest.raises(ModelError, match=r"input 'image' is FP32 \[-1, 3, 256, 256\], expected FP32 \[-1, 3, 128, 128\]"):
        runner.check_metadata(wrong_shape)
    missing = json.loads(json.dumps(meta))
    missing["inputs"] = missing["inputs"][:-1]
    with pytest.raises(ModelError, match="expected image, hole, landmark_map, gender"):
        runner.check_metadata(missing)
    runner.close()


def test_unreachable_server_is_one_line_at_start(tmp_path, server):
    from engines.base import BackendUnavailable, ModelError
    from engines.triton_runner import TritonRunner
    dead = f"grpc://127.0.0.1:{free_port()}"
    t = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"Triton server grpc://127\.0\.0\.1:\d+ is unreachable"):
        TritonRunner("analyser", url=dead, timeout_s=1.0)
    assert time.monotonic() - t < 10
    for bad in ("http://127.0.0.1:8000", "grpc://127.0.0.1", ""):
        with pytest.raises(ModelError, match="grpc://host:port"):
            TritonRunner("analyser", url=bad)
    for args in (["--grpc-port", "99999"], ["--grpc-port", str(server.grpc_port), "--http-port", str(free_port())],
                 ["--grpc-port", "8123", "--http-port", "8123"]):
        r = subprocess.run([sys.executable, "-m", "engines.serve", *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert r.stderr.startswith("error: --") and "Traceback" not in r.stderr, r.stderr
    clip = make_face_clip(tmp_path / "faces.mp4", n=3, audio=False)
    for extra in (["--backend", "triton", "--triton-url", "grpc://user:secret@127.0.0.1:" + dead.rsplit(":", 1)[1]],
                  ["--backend", "triton"], ["--triton-url", server.url]):
        r = subprocess.run([sys.executable, "run_stream.py", "--source", str(clip), "--no-display",
                            "--output", str(tmp_path / "out.mp4"), *extra], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 1, (extra, r.stderr)
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and "secret" not in r.stderr, (extra, r.stderr)
        assert not (tmp_path / "out.mp4").exists()


def test_stream_through_triton_matches_in_process_and_cli_reports(server, tmp_path):
    from stream.unmasker import Unmasker
    frames = [f for f, _ in face_clip_frames(8)]
    os.environ["UNMASK_TRITON_URL"] = server.url
    try:
        remote = Unmasker(backend="triton")
    finally:
        del os.environ["UNMASK_TRITON_URL"]
    local = Unmasker(backend="onnxruntime", threads=1)
    assert remote.backend == "triton"
    masked = 0
    for i, frame in enumerate(frames):
        a, b = remote.process(frame, timestamp_ms=40.0 * i), local.process(frame, timestamp_ms=40.0 * i)
        assert [f.masked for f in a.faces] == [f.masked for f in b.faces]
        masked += sum(f.masked for f in a.faces)
        assert psnr(a.image, b.image) >= 40.0, i
    assert masked >= len(frames) - 2           # the astronaut is found masked and redrawn
    assert psnr(a.image, frame) < 40           # ... so the picture really changed
    remote.close()
    local.close()

    clip = make_face_clip(tmp_path / "faces.mp4", n=6)
    stats = tmp_path / "stats.json"
    r = subprocess.run([sys.executable, "run_stream.py", "--source", str(clip), "--no-display", "--output",
                        str(tmp_path / "out.mp4"), "--backend", "triton", "--triton-url", server.url,
                        "--stats-json", str(stats)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(stats.read_text())
    assert data["backend"] == "triton" and data["frames_out"] == 6
    assert data["frames_passed_through"] == 0 and data["server_outages"] == 0 and data["masked_faces"] >= 4


def test_shared_batcher_over_triton_matches_in_process(server):
    """Several streams batched by the shared stage, the batches run on the Triton server."""
    from stream.multistream import SharedBatcher, StreamUnmasker, make_runners
    frames = [f for f, _ in face_clip_frames(4)]
    batcher = SharedBatcher(lambda: make_runners("triton", triton_url=server.url), max_wait_ms=100).start()
    assert batcher.runners["analyser"].name == "triton"
    streams = [StreamUnmasker(batcher), StreamUnmasker(batcher)]
    local = [in_process_unmasker(), in_process_unmasker()]
    out = [[None] * len(frames) for _ in streams]

    def play(k):
        for i, f in enumerate(frames):
            img = f if k == 0 else f[:, ::-1].copy()          # the second stream is mirrored
            out[k][i] = (img, streams[k].process(img, timestamp_ms=40.0 * i).image)

    threads = [threading.Thread(target=play, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for k in range(2):
        for i, (img, got) in enumerate(out[k]):
            want = local[k].process(img, timestamp_ms=40.0 * i).image
            assert psnr(got, want) >= 40.0, (k, i)
        streams[k].close()
        local[k].close()
    assert batcher.summary()["analyser"]["faces"] == 2 * len(frames)
    batcher.close()


def in_process_unmasker():
    from stream.unmasker import Unmasker
    return Unmasker(backend="onnxruntime", threads=1)


def test_server_killed_and_restarted_mid_stream(server):
    """Frames keep flowing unreconstructed while the server is gone; reconstruction resumes after it
    restarts on the same port; nothing crashes or hangs."""
    from stream.outage import PassThroughOnOutage
    from stream.unmasker import Unmasker
    from engines.triton_runner import TritonRunner
    frames = [f for f, _ in face_clip_frames(6)]
    os.environ["UNMASK_TRITON_URL"] = server.url
    try:
        um = PassThroughOnOutage(Unmasker(backend="triton"))
    finally:
        del os.environ["UNMASK_TRITON_URL"]
    clock = iter(range(10 ** 6))

    def step(frame):
        t = time.monotonic()
        res = um.process(frame, timestamp_ms=40.0 * next(clock))
        return res, time.monotonic() - t

    for f in frames[:3]:
        res, _ = step(f)
    assert any(f.masked for f in res.faces) and psnr(res.image, frames[2]) < 40

    server.kill()
    slowest = 0.0
    for f in frames * 2:                                  # server gone: every frame passes through
        res, dt = step(f)
        slowest = max(slowest, dt)
        assert res.faces == [] and np.array_equal(res.image, f)
    assert um.passed_through == 12 and um.outages == 1
    assert slowest < 5.0                                  # bounded by the runner's timeout, never a hang

    server.start(wait=False)
    deadline = time.monotonic() + START_TIMEOUT_S
    resumed = None
    while time.monotonic() < deadline:                    # the stream goes on while the server starts
        f = frames[next(clock) % len(frames)]
        res, dt = step(f)
        slowest = max(slowest, dt)
        if res.faces:
            resumed = res
            break
        time.sleep(0.05)
    assert resumed is not None, "reconstruction never resumed after the restart"
    assert any(f.masked for f in resumed.faces) and psnr(resumed.image, f) < 40
    runners = [um.unmasker.analyser.runner, um.unmasker.compositor.reconstructor.runner]
    assert all(isinstance(r, TritonRunner) for r in runners) and runners[0].reconnects >= 1
    assert um.outages == 1 and slowest < 5.0
    server.wait_ready()
    um.close()
