"""Shared fixtures: generated clips, free loopback ports, a server that never answers."""
from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
for folder in (TESTS.parent, TESTS):   # `import stream` and `import media` however pytest is run
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))



def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on at 127.0.0.1 right now (TCP by default, or SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def tcp_port() -> int:
    return free_port(socket.SOCK_STREAM)


@pytest.fixture
def udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """30 frames, 320x240 at 25 fps, H.264 with B-frames, AAC audio. Do not modify it."""
    from media import make_clip          # PyAV: imported here so GPU-only runs collect without it
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", n_frames=30)


@pytest.fixture(scope="session")
def silent_clip(tmp_path_factory) -> Path:
    """Like `clip` but without an audio stream."""
    from media import make_clip
    return make_clip(tmp_path_factory.mktemp("silent") / "silent.mp4", n_frames=30, audio=False)


@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    for connection in accepted:
        connection.close()
    listener.close()


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one CPU thread while a module runs: the 2-core CI machine has other work."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
