"""Shared fixtures: generated clips and free loopback ports."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
for folder in (TESTS.parent, TESTS):   # `import stream` and `import media` however pytest is run
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from media import make_clip  # noqa: E402


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
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", n_frames=30)


@pytest.fixture(scope="session")
def silent_clip(tmp_path_factory) -> Path:
    """Like `clip` but without an audio stream."""
    return make_clip(tmp_path_factory.mktemp("silent") / "silent.mp4", n_frames=30, audio=False)
