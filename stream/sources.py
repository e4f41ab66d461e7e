"""Where frames come from: webcams, network streams, video files, image folders and images.

`open_source(spec)` picks the kind from the spec and returns an opened `Source`;
every failure the user can act on is a `SourceError` with one redacted line.

Live sources (webcams, URLs) decode on a reader thread that keeps only the newest
frame, so a slow pipeline always works on the latest picture instead of falling
behind; they reconnect with capped exponential backoff and give up after a
bounded time. Offline sources (files, folders, images) deliver every frame in order.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import cv2
import numpy as np

from .errors import SourceError, redact_url
from .frame import Frame

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_IMAGE_FPS = 25.0
FIRST_BACKOFF_S = 0.5
WEBCAM_TIME_BASE = Fraction(1, 1_000_000)   # webcam pts: microseconds since the source opened


@dataclass
class SourceInfo:
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frame_count: int | None = None       # None when unknown / live
    time_base: Fraction | None = None    # of the frames' pts
    audio_path: str | None = None        # a media file whose first audio stream a sink may copy
    live: bool = False                   # webcams and network URLs
    description: str = ""                # redacted, for messages


@dataclass
class SourceStats:
    frames_read: int = 0
    corrupt_frames: int = 0
    reconnects: int = 0
    dropped: int = 0   # live frames the reader thread replaced before anyone read them


class Source:
    """Base class. `read()` returns the next `Frame`, or None at the end (or once closed)."""

    def __init__(self, description: str, *, live: bool = False):
        self.info = SourceInfo(live=live, description=redact_url(description))
        self.stats = SourceStats()
        self.error: str | None = None   # why a live source ended early (None: it did not)
        self._opened = False

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Source:
        if not self._opened:
            self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.description}>"


def _reason(exc: BaseException) -> str:
    """A short, credential-free reason; FFmpeg errors would otherwise repeat the URL."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return redact_url(" ".join(str(reason).split()))


def _natural_key(name: str) -> list:
    """Sort key that puts frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _read_image(path: Path) -> np.ndarray | None:
    """BGR uint8 image, or None when unreadable; np.fromfile copes with non-ASCII paths."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


# ---------------------------------------------------------------------------- offline sources

class ImageSource(Source):
    """A single image, delivered as one frame."""

    def __init__(self, path: str | os.PathLike, *, fps: float | None = None):
        super().__init__(str(path))
        self.path = Path(path)
        self._fps = fps or DEFAULT_IMAGE_FPS
        self._image: np.ndarray | None = None
        self._done = False

    def open(self) -> None:
        image = _read_image(self.path)
        if image is None:
            raise SourceError(f"{self.path} is not a readable image")
        self._image = image
        self.info.height, self.info.width = image.shape[:2]
        self.info.fps, self.info.frame_count = self._fps, 1
        self.info.time_base = Fraction(1, 1) / Fraction(self._fps).limit_denominator(1001)
        self._opened = True

    def read(self) -> Frame | None:
        if self._done or self._image is None:
            return None
        self._done = True
        self.stats.frames_read = 1
        return Frame(self._image, 0, time.monotonic(), pts=0, time_base=self.info.time_base)

    def close(self) -> None:
        self._done = True
        self._image = None


class ImageFolderSource(Source):
    """Every image in a folder, in natural name order; unreadable images are skipped and counted."""

    def __init__(self, folder: str | os.PathLike, *, fps: float | None = None):
        super().__init__(str(folder))
        self.folder = Path(folder)
        self._fps = fps or DEFAULT_IMAGE_FPS
        self._paths: list[Path] = []
        self._position = 0
        self._first: np.ndarray | None = None   # decoded at open for the size, delivered first
        self._closed = False

    def open(self) -> None:
        try:
            names = os.listdir(self.folder)
        except OSError as exc:
            raise SourceError(f"cannot read folder {self.folder}: {_reason(exc)}") from None
        names = [n for n in names if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
        self._paths = [self.folder / n for n in sorted(names, key=_natural_key)]
        if not self._paths:
            raise SourceError(f"{self.folder} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
        self._first = self._next_image()
        if self._first is None:
            raise SourceError(f"none of the {len(self._paths)} images in {self.folder} is readable")
        self.info.height, self.info.width = self._first.shape[:2]
        self.info.fps, self.info.frame_count = self._fps, len(self._paths)
        self.info.time_base = Fraction(1, 1) / Fraction(self._fps).limit_denominator(1001)
        self._opened = True

    def _next_image(self) -> np.ndarray | None:
        while self._position < len(self._paths):
            path = self._paths[self._position]
            self._position += 1
            image = _read_image(path)
            if image is not None:
                return image
            self.stats.corrupt_frames += 1
            log.warning("skipping unreadable image %s", path)
        return None

    def read(self) -> Frame | None:
        if self._closed:
            return None
        image, self._first = (self._first, None) if self._first is not None else (self._next_image(), None)
        if image is None:
            return None
        index = self.stats.frames_read
        self.stats.frames_read += 1
        return Frame(image, index, time.monotonic(), pts=index, time_base=self.info.time_base)

    def close(self) -> None:
        self._closed = True
        self._first = None


class VideoFileSource(Source):
    """Every frame of a video file's first video stream, in order, with the file's own pts.

    Damaged packets and frames are skipped and counted in stats.corrupt_frames;
    a truncated file yields the frames before the damage.
    """

    MAX_ERRORS_IN_A_ROW = 100   # past this many unreadable packets in a row the rest is garbage

    def __init__(self, path: str | os.PathLike):
        super().__init__(str(path))
        self.path = Path(path)
        self._container: av.container.InputContainer | None = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._lock = threading.Lock()   # close() from another thread waits for the frame being decoded

    def open(self) -> None:
        try:
            container = av.open(str(self.path), metadata_errors="ignore")
        except av.error.InvalidDataError:
            raise SourceError(f"{self.path} is not a video file (or is damaged beyond reading)") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open {self.path}: {_reason(exc)}") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.path} is not a video file: it has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"   # frame + slice threads: offline, so latency does not matter
        rate = stream.average_rate or stream.guessed_rate
        self.info.width = stream.codec_context.width or None
        self.info.height = stream.codec_context.height or None
        self.info.fps = float(rate) if rate else None
        self.info.frame_count = stream.frames or None
        self.info.time_base = stream.time_base
        self.info.audio_path = str(self.path) if container.streams.audio else None
        self._container = container
        self._frames = self._decode(container, stream)
        self._opened = True

    def _decode(self, container, stream) -> Iterator[av.VideoFrame]:
        packets = container.demux(stream)
        errors_in_a_row = 0
        while True:
            try:
                packet = next(packets)
            except (StopIteration, av.error.EOFError):
                return
            except av.error.FFmpegError as exc:
                # The demuxer can carry on from the next packet; a fresh generator resumes there.
                self.stats.corrupt_frames += 1
                errors_in_a_row += 1
                log.warning("%s: skipping an unreadable packet (%s)", self.path, _reason(exc))
                if errors_in_a_row > self.MAX_ERRORS_IN_A_ROW:
                    return
                packets = container.demux(stream)
                continue
            try:
                frames = packet.decode()
            except av.error.EOFError:
                return
            except av.error.FFmpegError as exc:
                self.stats.corrupt_frames += 1
                errors_in_a_row += 1
                log.warning("%s: skipping an undecodable packet (%s)", self.path, _reason(exc))
                if errors_in_a_row > self.MAX_ERRORS_IN_A_ROW:
                    return
                continue
            errors_in_a_row = 0
            for frame in frames:
                if frame.is_corrupt:
                    self.stats.corrupt_frames += 1
                    continue
                yield frame

    def read(self) -> Frame | None:
        with self._lock:
            if self._frames is None:
                return None
            decoded = next(self._frames, None)
            if decoded is None:
                return None
            index = self.stats.frames_read
            self.stats.frames_read += 1
            return Frame(decoded.to_ndarray(format="bgr24"), index, time.monotonic(),
                         pts=decoded.pts, time_base=self.info.time_base)

    def close(self) -> None:
        with self._lock:
            self._frames = None
            if self._container is not None:
                self._container.close()
                self._container = None


# ------------------------------------------------------------------------------- live sources

class _Stalled(Exception):
    """No frame arrived within read_timeout_s although the connection is still up."""


class _LiveSource(Source):
    """A reader thread that connects, decodes, keeps only the newest frame and reconnects.

    Subclasses provide _connect() (bounded by open_timeout_s; fills self.info),
    _frames(handle) (yields (raw frame, pts, time_base); returns at end of stream,
    raises on errors; each step bounded by read_timeout_s), _to_bgr(raw) and
    _disconnect(handle).
    """

    def __init__(self, description: str, *, open_timeout_s: float = 10.0,
                 read_timeout_s: float = 10.0, reconnect: bool = True,
                 max_backoff_s: float = 8.0, give_up_after_s: float = 60.0):
        super().__init__(description, live=True)
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.reconnect = reconnect
        self.max_backoff_s = max_backoff_s
        self.give_up_after_s = give_up_after_s
        self._stopping = threading.Event()
        self._connected = threading.Event()   # the first connection succeeded
        self._cond = threading.Condition()
        self._latest: tuple[Any, int | None, Fraction | None, float] | None = None
        self._latest_seq = 0     # how many frames the thread has decoded
        self._returned_seq = 0   # the seq of the last frame read() returned
        self._finished = False   # the thread has ended (end of stream, gave up, or stopped)
        self._thread: threading.Thread | None = None

    # -- subclass hooks
    def _connect(self) -> Any:
        raise NotImplementedError

    def _frames(self, handle: Any) -> Iterator[tuple[Any, int | None, Fraction | None]]:
        raise NotImplementedError

    def _to_bgr(self, raw: Any) -> np.ndarray:
        raise NotImplementedError

    def _disconnect(self, handle: Any) -> None:
        raise NotImplementedError

    # -- public API
    def open(self) -> None:
        name = f"source-{self.info.description}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        # The thread's connect is bounded by open_timeout_s; the slack covers what FFmpeg's
        # timeout cannot interrupt (a slow DNS lookup, say), so open() itself stays bounded.
        deadline = time.monotonic() + self.open_timeout_s + 1.0
        while not self._connected.is_set() and not self._finished:
            if time.monotonic() > deadline:
                self._stopping.set()
                raise SourceError(f"cannot open {self.info.description}: "
                                  f"no answer within {self.open_timeout_s:g} s")
            self._connected.wait(0.05)
        if not self._connected.is_set():
            raise SourceError(self.error or f"cannot open {self.info.description}")
        self._opened = True

    def read(self) -> Frame | None:
        # Last resort in case a driver call never returns: the thread normally ends by itself.
        limit = self.read_timeout_s + self.open_timeout_s + (self.give_up_after_s if self.reconnect else 0) + 5
        last_progress = time.monotonic()
        with self._cond:
            while self._latest_seq <= self._returned_seq:
                if self._finished or self._stopping.is_set():
                    return None
                if not self._cond.wait(timeout=0.5) and time.monotonic() - last_progress > limit:
                    self.error = f"{self.info.description}: no frame for {limit:g} s"
                    self._stopping.set()
                    return None
            raw, pts, time_base, capture_time = self._latest
            self._latest = None   # the thread's reference only: lets a dropped frame's buffer go
            index = self._latest_seq - 1
            self._returned_seq = self._latest_seq
        image = self._to_bgr(raw)   # converted only when read: dropped frames cost no conversion
        self.info.height, self.info.width = image.shape[:2]   # follows a size change on reconnect
        self.stats.frames_read += 1
        return Frame(image, index, capture_time, pts=pts, time_base=time_base)

    def close(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()   # wakes a read() blocked in another thread: it returns None
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # The thread checks _stopping after every packet; a read stuck on a silent network
            # ends by itself within read_timeout_s (it is a daemon, so it never blocks exit).
            thread.join(timeout=1.0)
            if thread.is_alive():
                log.debug("%s: reader thread still finishing a blocked read", self.info.description)

    # -- the reader thread
    def _publish(self, raw: Any, pts: int | None, time_base: Fraction | None) -> None:
        with self._cond:
            if self._latest is not None:
                self.stats.dropped += 1
            self._latest = (raw, pts, time_base, time.monotonic())
            self._latest_seq += 1
            self._cond.notify_all()

    def _end(self, error: str | None = None) -> None:
        with self._cond:
            if error and not self._stopping.is_set():
                self.error = redact_url(error)
                if self._connected.is_set():   # a failed first open is reported by open() instead
                    log.error("%s", self.error)
            self._finished = True
            self._cond.notify_all()

    def _run(self) -> None:
        backoff = FIRST_BACKOFF_S
        outage_since: float | None = None   # when frames stopped coming (None: they are coming)
        connected_before = False
        while not self._stopping.is_set():
            handle = None
            problem = None   # None: the stream ended normally
            try:
                handle = self._connect()
                if connected_before:
                    self.stats.reconnects += 1
                    log.info("%s: reconnected", self.info.description)
                connected_before = True
                self._connected.set()
                for raw, pts, time_base in self._frames(handle):
                    self._publish(raw, pts, time_base)
                    backoff, outage_since = FIRST_BACKOFF_S, None
                    if self._stopping.is_set():
                        break
            except Exception as exc:   # any failure of a live stream is handled by reconnecting
                problem = _reason(exc)
            finally:
                if handle is not None:
                    try:
                        self._disconnect(handle)
                    except Exception as exc:
                        log.debug("%s: error while disconnecting: %s", self.info.description, _reason(exc))
            if self._stopping.is_set():
                break
            if not connected_before:
                self._end(f"cannot open {self.info.description}: {problem}")
                return
            if not self.reconnect:
                self._end(problem and f"{self.info.description}: {problem}")
                return
            problem = problem or "the stream ended"
            now = time.monotonic()
            outage_since = outage_since or now
            if now - outage_since > self.give_up_after_s:
                self._end(f"lost {self.info.description}: {problem}; "
                          f"gave up reconnecting after {self.give_up_after_s:g} s")
                return
            log.warning("%s: %s; reconnecting in %.1f s", self.info.description, problem, backoff)
            if self._stopping.wait(backoff):
                break
            backoff = min(backoff * 2, self.max_backoff_s)
        self._end()


class UrlSource(_LiveSource):
    """A network stream (RTSP over TCP, RTMP, HTTP, UDP, TCP, SRT) decoded with PyAV."""

    def __init__(self, url: str, **live_options):
        super().__init__(url, **live_options)
        self.url = url
        self.scheme = url.split("://", 1)[0].lower()

    def _options(self) -> dict[str, str]:
        microseconds = str(int(self.read_timeout_s * 1_000_000))
        # No fflags=nobuffer: it throws away the packets read while probing the stream, first
        # keyframe included, so nothing decodes until the next keyframe (seconds on many
        # cameras). The reader thread's newest-frame-only hand-over already bounds the latency.
        options = {"flags": "low_delay", "rw_timeout": microseconds}
        if self.scheme in ("rtsp", "rtsps"):
            options.update(rtsp_transport="tcp", timeout=microseconds)
        elif self.scheme != "rtmp":   # for rtmp, "timeout" means "listen for a publisher"
            options["timeout"] = microseconds
        if self.scheme == "udp":
            options["overrun_nonfatal"] = "1"   # a late reader loses packets instead of failing
        return options

    def _connect(self) -> av.container.InputContainer:
        started = time.monotonic()
        try:
            container = av.open(self.url, options=self._options(), metadata_errors="ignore",
                                timeout=(self.open_timeout_s, self.read_timeout_s))
        except av.error.FFmpegError as exc:
            # A socket timeout surfaces as whatever the protocol makes of it ("Invalid data…"
            # for RTSP, "Immediate exit requested" for our interrupt): name it for what it is.
            socket_timeout_s = min(self.open_timeout_s, self.read_timeout_s)
            if isinstance(exc, av.error.ExitError):
                raise TimeoutError(f"no answer within {self.open_timeout_s:g} s") from None
            if time.monotonic() - started >= socket_timeout_s:
                raise TimeoutError(f"no answer within {socket_timeout_s:g} s") from None
            raise
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.info.description} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        self.info.width = stream.codec_context.width or None
        self.info.height = stream.codec_context.height or None
        self.info.fps = float(rate) if rate else None
        self.info.time_base = stream.time_base
        return container

    def _frames(self, container) -> Iterator[tuple[av.VideoFrame, int | None, Fraction]]:
        video = container.streams.video[0]
        last_frame = time.monotonic()
        try:
            for packet in container.demux():   # every stream, so the watchdog runs on each packet
                if packet.stream.index == video.index and packet.size:
                    try:
                        frames = packet.decode()
                    except av.error.FFmpegError:
                        self.stats.corrupt_frames += 1
                        frames = []
                    for frame in frames:
                        last_frame = time.monotonic()
                        yield frame, frame.pts, video.time_base
                if self._stopping.is_set():
                    return
                if time.monotonic() - last_frame > self.read_timeout_s:
                    raise _Stalled(f"no frame for {self.read_timeout_s:g} s")
        except av.error.ExitError:
            raise TimeoutError(f"no data for {self.read_timeout_s:g} s") from None

    def _to_bgr(self, raw: av.VideoFrame) -> np.ndarray:
        return raw.to_ndarray(format="bgr24")

    def _disconnect(self, container) -> None:
        container.close()


class WebcamSource(_LiveSource):
    """A local camera through OpenCV (V4L2 on Linux). pts: microseconds since open."""

    def __init__(self, device: int | str, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, mjpg: bool = False, **live_options):
        name = device if isinstance(device, str) else f"webcam {device}"
        super().__init__(name, **live_options)
        self.device = device
        self.requested = (width, height, fps, mjpg)
        self._start = time.monotonic()

    def _device_path(self) -> str | None:
        if not sys.platform.startswith("linux"):
            return None
        return self.device if isinstance(self.device, str) else f"/dev/video{self.device}"

    def _connect(self) -> cv2.VideoCapture:
        path = self._device_path()
        if path is not None and not os.path.exists(path):
            # Checked first: asking OpenCV about a missing device is slow and noisy.
            raise FileNotFoundError(f"{path} does not exist (is the camera plugged in?)")
        capture = cv2.VideoCapture(path, cv2.CAP_V4L2) if path else cv2.VideoCapture(int(self.device))
        if not capture.isOpened():
            capture.release()
            raise OSError("the camera cannot be opened (busy, not a camera, or not permitted)")
        width, height, fps, mjpg = self.requested
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)   # the driver's queue adds latency: keep one frame
        if mjpg:   # most USB cameras reach full resolution at full rate only in MJPG
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        if width:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            capture.set(cv2.CAP_PROP_FPS, fps)
        capture.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.read_timeout_s * 1000)
        self.info.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) or None
        self.info.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) or None
        self.info.fps = capture.get(cv2.CAP_PROP_FPS) or None
        self.info.time_base = WEBCAM_TIME_BASE
        return capture

    def _frames(self, capture) -> Iterator[tuple[np.ndarray, int, Fraction]]:
        while not self._stopping.is_set():
            ok, image = capture.read()
            if not ok:
                raise _Stalled("the camera delivered no frame")
            pts = round((time.monotonic() - self._start) / WEBCAM_TIME_BASE)
            yield image, pts, WEBCAM_TIME_BASE

    def _to_bgr(self, raw: np.ndarray) -> np.ndarray:
        return raw

    def _disconnect(self, capture) -> None:
        capture.release()


# ----------------------------------------------------------------------------------- factory

def open_source(spec: str, *, width: int | None = None, height: int | None = None,
                fps: float | None = None, mjpg: bool = False, open_timeout_s: float = 10.0,
                read_timeout_s: float = 10.0, reconnect: bool = True, max_backoff_s: float = 8.0,
                give_up_after_s: float = 60.0) -> Source:
    """Open `spec` — a webcam ("0", "/dev/video2"), a URL, a folder of images, an image or a
    video file — and return the opened source. Raises SourceError."""
    spec = str(spec)
    if not spec.strip():
        raise SourceError("no input given")
    live_options = dict(open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s,
                        reconnect=reconnect, max_backoff_s=max_backoff_s,
                        give_up_after_s=give_up_after_s)
    source: Source
    if re.fullmatch(r"\d+", spec) or re.fullmatch(r"/dev/video\d+", spec):
        device: int | str = int(spec) if spec.isdigit() else spec
        source = WebcamSource(device, width=width, height=height, fps=fps, mjpg=mjpg, **live_options)
    elif "://" in spec:
        scheme = spec.split("://", 1)[0].lower()
        if scheme not in URL_SCHEMES:
            raise SourceError(f"unsupported input URL {spec}: use one of "
                              + ", ".join(f"{s}://" for s in URL_SCHEMES))
        source = UrlSource(spec, **live_options)
    else:
        path = Path(spec)
        if path.is_dir():
            source = ImageFolderSource(path, fps=fps)
        elif path.is_file():
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                source = ImageSource(path, fps=fps)
            else:
                source = VideoFileSource(path)
        elif path.exists():
            raise SourceError(f"{spec} is neither a file nor a folder")
        else:
            raise SourceError(f"input not found: {spec}")
    source.open()
    return source
