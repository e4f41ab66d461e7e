"""Test media made on the fly: clips and images whose pixels say which frame they are.

Each frame carries its index as a row of 16 black/white blocks (most significant
bit first) across a band at the top; `read_index` reads it back, even after
lossy H.264 compression and scaling, so tests can check frame order and count.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

INDEX_BITS = 16
AUDIO_RATE = 48_000


def frame_image(index: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A BGR frame of `size` (width, height) that encodes `index` in its top band."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    # A moving gradient below the band, so the encoder sees ordinary motion.
    image[..., 0] = (x * 255 // max(width - 1, 1) + 4 * index) % 256
    image[..., 1] = (y * 255 // max(height - 1, 1)) % 256
    image[..., 2] = 128
    band = max(height // 4, 2)
    for bit in range(INDEX_BITS):
        x0, x1 = bit * width // INDEX_BITS, (bit + 1) * width // INDEX_BITS
        on = (index >> (INDEX_BITS - 1 - bit)) & 1
        image[:band, x0:x1] = 255 if on else 0
    return image


def read_index(image: np.ndarray) -> int:
    """The index `frame_image` drew into `image` (any size, lightly compressed)."""
    height, width = image.shape[:2]
    band = max(height // 4, 2)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    index = 0
    for bit in range(INDEX_BITS):
        x0, x1 = bit * width // INDEX_BITS, (bit + 1) * width // INDEX_BITS
        # The block's centre only: edges blur under compression and scaling.
        cx0, cx1 = x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4
        on = gray[band // 4: band * 3 // 4, cx0:max(cx1, cx0 + 1)].mean() > 127
        index = (index << 1) | int(on)
    return index


def make_clip(path, n_frames: int = 30, size: tuple[int, int] = (320, 240), fps: int = 25,
              audio: bool = True, codec: str = "libx264", gop: int | None = None,
              audio_s: float | None = None) -> Path:
    """Write an H.264 clip (B-frames on, so pts != dts) with an optional AAC sine track.

    The audio lasts exactly as long as the video, or `audio_s` seconds. Returns the path.
    """
    path = Path(path)
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        if codec == "libx264":
            video.codec_context.options = {"preset": "veryfast", "crf": "18", "bframes": "2"}
        if gop:
            video.codec_context.gop_size = gop
        sound = None
        if audio:
            sound = container.add_stream("aac", rate=AUDIO_RATE)
            sound.layout = "mono"
        for index in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(index, size), format="bgr24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            total = round((n_frames / fps if audio_s is None else audio_s) * AUDIO_RATE)
            t = np.arange(total) / AUDIO_RATE
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, total, 1024):
                chunk = samples[start:start + 1024]
                frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                frame.sample_rate = AUDIO_RATE
                frame.pts = start
                frame.time_base = Fraction(1, AUDIO_RATE)
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    return path


def write_images(folder, indices, size: tuple[int, int] = (64, 48), ext: str = "png",
                 name: str = "frame_{}") -> list[Path]:
    """Write one `frame_image` per index as folder/name.format(index).ext."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in indices:
        path = folder / f"{name.format(index)}.{ext}"
        assert cv2.imwrite(str(path), frame_image(index, size)), path
        paths.append(path)
    return paths


def packets(path, kind: str) -> list[av.Packet]:
    """Every non-empty packet of the first `kind` ("video"/"audio") stream of a file."""
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [p for p in container.demux(stream) if p.size]


def decoded_frames(path) -> list[tuple[int | None, Fraction, np.ndarray]]:
    """(pts, time_base, BGR image) of every frame of the first video stream, independently of
    the code under test."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(f.pts, stream.time_base, f.to_ndarray(format="bgr24"))
                for f in container.decode(stream)]
