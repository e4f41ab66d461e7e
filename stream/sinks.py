"""Where processed frames go: video files, image folders, network streams, a virtual camera,
a preview window.

`open_sink(spec)` picks the kind from the spec and returns a sink that is not yet
opened; `sink.open(info)` prepares it, `write(frame, image)` adds a processed
frame, `close()` finalises. A failed run should call `abort()` (or leave the
`with` block by an exception), which discards a half-written file instead of
putting it in place. Every failure the user can act on is a `SinkError` with one
redacted line.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import socket
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .errors import SinkError, redact_url
from .frame import Frame
from .sources import IMAGE_EXTENSIONS, SourceInfo

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts")
DEFAULT_FPS = Fraction(25)
NETWORK_TIMEOUT_S = 10.0   # connecting to, and each write to, an RTSP server


class Sink:
    """Base class. Use as `with open_sink(...) as sink: sink.open(info); sink.write(...)`."""

    description = ""

    def open(self, info: SourceInfo) -> None:
        raise NotImplementedError

    def write(self, frame: Frame, image: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finalise; idempotent and safe after errors."""

    def abort(self) -> None:
        """The run failed: release everything, and keep no half-written output where possible."""
        self.close()

    def check(self) -> None:
        """Refuse early what open() would refuse (existing output, output == input)."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


def _reason(exc: BaseException) -> str:
    """A short, credential-free reason; FFmpeg errors would otherwise repeat the URL."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return redact_url(" ".join(str(reason).split()))


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:   # one of them does not exist (yet): compare the resolved names
        return os.path.realpath(a) == os.path.realpath(b)


def _fps_of(info: SourceInfo) -> Fraction:
    # limit_denominator(1001) turns 29.97002997 back into 30000/1001.
    return Fraction(info.fps).limit_denominator(1001) if info.fps else DEFAULT_FPS


def _encoder_options(codec: str, crf: int, preset: str, live: bool) -> dict[str, str]:
    if codec in ("libx264", "libx265"):
        options = {"crf": str(crf), "preset": preset}
        if live:
            options["tune"] = "zerolatency"   # no B-frames, no lookahead: frames leave at once
        return options
    if codec.startswith("libvpx"):
        # b=0 makes crf the quality target; realtime + cpu-used 8 keep up with live video.
        return {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8"}
    return {}


class _EncodingSink(Sink):
    """Encodes frames into a PyAV output container; subclasses say which container."""

    live = False
    action = "write"   # for messages: "cannot write out.mp4", "cannot publish to rtsp://…"

    def __init__(self, *, codec: str, crf: int, preset: str):
        self.codec, self.crf, self.preset = codec, crf, preset
        self._info = SourceInfo()
        self._container: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._size: tuple[int, int] | None = None   # (width, height) the encoder was opened with
        self._fps = DEFAULT_FPS
        self._time_base = 1 / DEFAULT_FPS
        self._step = 1            # one frame's duration in _time_base units
        self._last_pts: int | None = None
        self._pts_offset = 0
        self._frames_written = 0
        self._failed = False
        self._closed = False
        self._warned_resize = False

    # -- subclass hooks
    def _open_container(self) -> av.container.OutputContainer:
        raise NotImplementedError

    def _add_other_streams(self, container: av.container.OutputContainer) -> None:
        pass

    def _after_video_packet(self, packet: av.Packet) -> None:
        pass

    def _finish(self, committed: bool) -> None:
        """After the container closed; `committed` says whether the output is complete."""

    # -- Sink API
    def open(self, info: SourceInfo) -> None:
        self.check()
        self._info = info
        self._fps = _fps_of(info)
        self._time_base = info.time_base or 1 / self._fps
        self._step = max(1, round(1 / self._fps / self._time_base))
        if info.width and info.height:
            self._start(info.width, info.height)
        # else: the encoder starts at the first write, sized like that frame

    def _start(self, width: int, height: int) -> None:
        container = self._open_container()
        try:
            self._video = self._add_video_stream(container, width, height)
            self._add_other_streams(container)
            container.start_encoding()   # writes the header: a refused connection fails here
        except SinkError:
            self._abandon(container)
            raise
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._abandon(container)
            raise SinkError(f"cannot {self.action} {self.description}: {_reason(exc)}") from None
        self._container, self._size = container, (width, height)

    def _abandon(self, container) -> None:
        self._failed = True
        try:
            container.close()
        except (av.error.FFmpegError, OSError):
            pass
        self._finish(committed=False)
        self._closed = True

    def _add_video_stream(self, container, width: int, height: int) -> av.VideoStream:
        try:
            formats = {f.name for f in av.Codec(self.codec, "w").video_formats or ()}
        except av.codec.codec.UnknownCodecError:
            raise SinkError(f"unknown video codec {self.codec}") from None
        # 4:2:0 needs even sizes; for odd ones 4:4:4 keeps the exact size (at the cost of
        # players, such as browsers, that only play 4:2:0 H.264).
        even = width % 2 == 0 and height % 2 == 0
        pix_fmt = "yuv420p" if even else "yuv444p"
        if pix_fmt not in formats:
            raise SinkError(f"codec {self.codec} cannot encode a {width}x{height} frame ({pix_fmt} "
                            "needed for this size); use libx264 or libvpx-vp9")
        stream = container.add_stream(self.codec, rate=self._fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = self._time_base
        stream.codec_context.time_base = self._time_base
        stream.codec_context.options = _encoder_options(self.codec, self.crf, self.preset, self.live)
        if self.live:   # a keyframe every second: a viewer that joins waits at most that long
            stream.codec_context.gop_size = max(1, round(self._fps))
        return stream

    def write(self, frame: Frame, image: np.ndarray) -> None:
        if self._closed:
            raise SinkError(f"{self.description} is already closed")
        if self._container is None:
            self._start(image.shape[1], image.shape[0])
        width, height = self._size
        if image.shape[1] != width or image.shape[0] != height:
            # An encoder's size is fixed; a live source may change size after a reconnect.
            if not self._warned_resize:
                log.warning("%s: frames changed size to %dx%d; scaling them to %dx%d",
                            self.description, image.shape[1], image.shape[0], width, height)
                self._warned_resize = True
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        video_frame.pts = self._pts_for(frame)
        video_frame.time_base = self._time_base
        try:
            for packet in self._video.encode(video_frame):
                self._container.mux(packet)
                self._after_video_packet(packet)
        except (av.error.FFmpegError, OSError) as exc:
            self._failed = True
            raise SinkError(f"cannot {self.action} {self.description}: {_reason(exc)}") from None
        self._frames_written += 1

    def _pts_for(self, frame: Frame) -> int:
        """The frame's own pts in the output time base; index / fps when it has none."""
        if frame.pts is not None and frame.time_base is not None:
            pts = round(frame.pts * frame.time_base / self._time_base)
        else:
            pts = round(frame.index / self._fps / self._time_base)
        pts += self._pts_offset
        if self._last_pts is not None and pts <= self._last_pts:
            # Timestamps went back (a live stream restarted its clock on reconnect): carry on
            # one frame after the last one, and keep the shift for the frames that follow.
            shift = self._last_pts + self._step - pts
            self._pts_offset += shift
            pts += shift
        self._last_pts = pts
        return pts

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        container = self._container
        if container is None:
            self._finish(committed=False)
            return
        committed = False
        try:
            if not self._failed:
                for packet in self._video.encode(None):   # flush the encoder's delayed frames
                    container.mux(packet)
                    self._after_video_packet(packet)
                self._before_trailer()
                container.close()
                committed = True
        except (av.error.FFmpegError, OSError) as exc:
            self._failed = True
            raise SinkError(f"cannot finish {self.description}: {_reason(exc)}") from None
        finally:
            self._container = None
            if not committed:
                try:
                    container.close()
                except (av.error.FFmpegError, OSError):
                    pass
            self._finish(committed)

    def _before_trailer(self) -> None:
        pass

    def abort(self) -> None:
        self._failed = True
        try:
            self.close()
        except SinkError:
            pass


class VideoFileSink(_EncodingSink):
    """A video file with the input's timestamps and, when the input has one, its audio copied
    packet for packet. Written to a hidden temporary file beside the target and renamed into
    place by close(), so a failed run never leaves a half file under the user's name."""

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False, codec: str = "libx264",
                 crf: int = 20, preset: str = "veryfast", source_path: str | None = None):
        path = Path(path)
        if path.suffix.lower() == ".webm" and codec == "libx264":
            codec = "libvpx-vp9"   # WebM holds VP8/VP9/AV1 only
        super().__init__(codec=codec, crf=crf, preset=preset)
        self.path, self.overwrite, self.source_path = path, overwrite, source_path
        self.description = str(path)
        self._temp_path: Path | None = None
        self._audio_in: av.container.InputContainer | None = None
        self._audio_out: av.AudioStream | None = None
        self._audio_packets = None
        self._held_audio: av.Packet | None = None   # read ahead, not yet due
        self._audio_until_video_end = False          # set by end_audio_with_video()

    def check(self) -> None:
        path = self.path
        if self.source_path and os.path.exists(self.source_path) and _same_file(path, self.source_path):
            raise SinkError(f"output {path} is the input file: choose another output path")
        if path.is_dir():
            raise SinkError(f"output {path} is a folder, not a video file")
        if path.exists() and not self.overwrite:
            raise SinkError(f"output {path} already exists (use --overwrite to replace it)")
        if not path.parent.is_dir():
            raise SinkError(f"output folder {path.parent} does not exist")

    def _open_container(self):
        temp = self.path.with_name(f".{self.path.stem}.{secrets.token_hex(4)}.partial{self.path.suffix}")
        try:
            # Created here, not by FFmpeg, so an unwritable folder fails now with a clear message;
            # mode 0o666 lets the umask apply as for any new file (mkstemp would make it 0600).
            os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except OSError as exc:
            raise SinkError(f"cannot write to folder {self.path.parent}: {_reason(exc)}") from None
        self._temp_path = temp
        options = {"movflags": "+faststart"} if self.path.suffix.lower() in (".mp4", ".mov") else {}
        try:
            return av.open(str(temp), "w", options=options)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._finish(committed=False)
            raise SinkError(f"cannot write {self.path}: {_reason(exc)}") from None

    def _add_other_streams(self, container) -> None:
        audio_path = self._info.audio_path
        if not audio_path:
            return
        try:
            audio_in = av.open(audio_path, metadata_errors="ignore")
        except (av.error.FFmpegError, OSError) as exc:
            log.warning("%s: cannot read the input's audio (%s); writing video only", self.path, _reason(exc))
            return
        if not audio_in.streams.audio:
            audio_in.close()
            return
        template = audio_in.streams.audio[0]
        codec_name = template.codec_context.name if template.codec_context else None
        # mpegts answers "unknown" to FFmpeg's codec query, yet carries every common audio codec.
        if self.path.suffix.lower() != ".ts" and codec_name not in container.supported_codecs:
            log.warning("%s cannot hold the input's %s audio; writing video only", self.path, codec_name)
            audio_in.close()
            return
        self._audio_out = container.add_stream_from_template(template)
        self._audio_in = audio_in
        self._audio_packets = audio_in.demux(template)

    def _copy_audio(self, until_s: Fraction | None, *, inclusive: bool) -> None:
        """Mux the input's audio packets that start before `until_s` (or at it, if inclusive);
        all that are left when `until_s` is None."""
        while self._audio_packets is not None:
            packet = self._held_audio
            if packet is None:
                try:
                    packet = next(self._audio_packets)
                except (StopIteration, av.error.FFmpegError):
                    self._audio_packets = None
                    return
            if not packet.size or packet.pts is None:
                self._held_audio = None   # demux's empty flush packet
                continue
            start = packet.pts * packet.time_base
            if until_s is not None and (start > until_s if inclusive else start >= until_s):
                self._held_audio = packet
                return
            self._held_audio = None
            packet.stream = self._audio_out
            self._container.mux(packet)

    def _after_video_packet(self, packet) -> None:
        # Keep the audio level with the video, so the muxer's interleaving queue stays short.
        timestamp = packet.dts if packet.dts is not None else packet.pts
        if self._audio_packets is not None and timestamp is not None:
            self._copy_audio(timestamp * packet.time_base, inclusive=True)

    def end_audio_with_video(self) -> None:
        """The input was cut short (max frames, duration, a stop): end the audio where the video
        ends instead of copying the rest of the input's audio."""
        self._audio_until_video_end = True

    def _before_trailer(self) -> None:
        if self._audio_packets is None:
            return
        if not self._audio_until_video_end:
            # The whole input was written: every remaining audio packet goes in, also when the
            # audio outlasts the video (AAC padding, a longer soundtrack).
            self._copy_audio(None, inclusive=True)
        elif self._last_pts is not None:
            self._copy_audio((self._last_pts + self._step) * self._time_base, inclusive=False)

    def _finish(self, committed: bool) -> None:
        if self._audio_in is not None:
            self._audio_in.close()
            self._audio_in, self._audio_packets = None, None
        temp, self._temp_path = self._temp_path, None
        if temp is None:
            return
        if committed and self._frames_written:
            try:
                os.replace(temp, self.path)
                return
            except OSError as exc:
                temp.unlink(missing_ok=True)
                raise SinkError(f"cannot move the finished video to {self.path}: {_reason(exc)}") from None
        if committed:
            log.warning("no frame was written: %s not created", self.path)
        temp.unlink(missing_ok=True)


class NetworkSink(_EncodingSink):
    """H.264 published to an RTSP server (over TCP) or sent as MPEG-TS over UDP, low latency."""

    live = True
    action = "publish to"

    def __init__(self, url: str, *, codec: str = "libx264", crf: int = 20, preset: str = "veryfast",
                 timeout_s: float = NETWORK_TIMEOUT_S):
        super().__init__(codec=codec, crf=crf, preset=preset)
        self.url = url
        self.scheme = url.split("://", 1)[0].lower()
        self.description = redact_url(url)
        self.timeout_s = timeout_s

    def _open_container(self):
        url, options = self.url, {}
        if self.scheme in ("rtsp", "rtsps"):
            output_format = "rtsp"
            # PyAV bounds only reads with its timeouts; FFmpeg's own socket timeout bounds the
            # handshake and every write to a server that stopped reading.
            options.update(rtsp_transport="tcp", timeout=str(int(self.timeout_s * 1_000_000)))
        else:
            output_format = "mpegts"
            if "pkt_size=" not in url:   # 7 TS packets of 188 bytes fill one UDP datagram
                url += ("&" if "?" in url else "?") + "pkt_size=1316"
        try:
            return av.open(url, "w", format=output_format, options=options)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise SinkError(f"cannot publish to {self.description}: {_reason(exc)}") from None



    def _start(self, width: int, height: int) -> None:
        started = time.monotonic()
        try:
            super()._start(width, height)
        except SinkError:
            # FFmpeg reports a socket timeout in the handshake as "Invalid data…": say what it is.
            if time.monotonic() - started >= self.timeout_s:
                raise SinkError(f"cannot publish to {self.description}: "
                                f"no answer within {self.timeout_s:g} s") from None
            raise


class ImageFolderSink(Sink):
    """One PNG per frame, named by the frame's index: frame_000000.png, frame_000001.png, …"""

    def __init__(self, folder: str | os.PathLike, *, overwrite: bool = False,
                 source_path: str | None = None):
        self.folder, self.overwrite, self.source_path = Path(folder), overwrite, source_path
        self.description = str(self.folder)

    def check(self) -> None:
        folder = self.folder
        if self.source_path and os.path.exists(self.source_path) and _same_file(folder, self.source_path):
            raise SinkError(f"output folder {folder} is the input folder: choose another one")
        if folder.exists() and not folder.is_dir():
            raise SinkError(f"output {folder} exists and is not a folder")
        if folder.is_dir() and any(folder.iterdir()) and not self.overwrite:
            raise SinkError(f"output folder {folder} is not empty (use --overwrite to write into it)")

    def open(self, info: SourceInfo) -> None:
        self.check()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.folder):   # proves the folder is writable
                pass
        except OSError as exc:
            raise SinkError(f"cannot write to folder {self.folder}: {_reason(exc)}") from None

    def write(self, frame: Frame, image: np.ndarray) -> None:
        path = self.folder / f"frame_{frame.index:06d}.png"
        ok, encoded = cv2.imencode(".png", image)
        try:
            if not ok:
                raise OSError("PNG encoding failed")
            encoded.tofile(str(path))   # tofile, unlike cv2.imwrite, copes with non-ASCII paths
        except OSError as exc:
            raise SinkError(f"cannot write {path}: {_reason(exc)}") from None


class ImageFileSink(Sink):
    """A single image file, for single-image inputs."""

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False,
                 source_path: str | None = None):
        self.path, self.overwrite, self.source_path = Path(path), overwrite, source_path
        self.description = str(self.path)
        self._written = False

    def check(self) -> None:
        if self.source_path and os.path.exists(self.source_path) and _same_file(self.path, self.source_path):
            raise SinkError(f"output {self.path} is the input file: choose another output path")
        if self.path.exists() and not self.overwrite:
            raise SinkError(f"output {self.path} already exists (use --overwrite to replace it)")
        if not self.path.parent.is_dir():
            raise SinkError(f"output folder {self.path.parent} does not exist")

    def open(self, info: SourceInfo) -> None:
        self.check()

    def write(self, frame: Frame, image: np.ndarray) -> None:
        if self._written:
            raise SinkError(f"{self.path} holds one image but the input has more frames: "
                            "write to a folder (name/) or a video file instead")
        ok, encoded = cv2.imencode(self.path.suffix.lower(), image)
        try:
            if not ok:
                raise OSError(f"cannot encode {self.path.suffix} images")
            encoded.tofile(str(self.path))
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {_reason(exc)}") from None
        self._written = True


class VirtualCameraSink(Sink):
    """A virtual webcam (v4l2loopback on Linux) through the optional pyvirtualcam package."""

    INSTALL_HINT = "pip install pyvirtualcam (or install Unmask with the [virtualcam] extra)"

    def __init__(self, device: str | None = None):
        self.device = device
        self.description = f"virtual camera {device}" if device else "virtual camera"
        self._camera = None

    def check(self) -> None:
        if importlib.util.find_spec("pyvirtualcam") is None:
            raise SinkError(f"virtual camera output needs pyvirtualcam: {self.INSTALL_HINT}")

    def open(self, info: SourceInfo) -> None:
        self.check()
        import pyvirtualcam   # optional dependency

        width, height = info.width or 1280, info.height or 720
        try:
            self._camera = pyvirtualcam.Camera(width, height, float(_fps_of(info)),
                                               fmt=pyvirtualcam.PixelFormat.BGR, device=self.device)
        except Exception as exc:   # pyvirtualcam raises plain RuntimeError/ValueError per backend
            raise SinkError(f"cannot open the {self.description}: {_reason(exc)}") from None

    def write(self, frame: Frame, image: np.ndarray) -> None:
        camera = self._camera
        if camera is None:
            raise SinkError(f"{self.description} is not open")
        if (image.shape[1], image.shape[0]) != (camera.width, camera.height):
            image = cv2.resize(image, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
        camera.send(np.ascontiguousarray(image))

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.close()


def _x_display_reachable(display: str) -> bool:
    """Whether an X server answers at `display` (":0", "localhost:10.0"). Checked before OpenCV's
    Qt touches it, because Qt aborts the whole process when it cannot connect."""
    host, _, screen = display.rpartition(":")
    number = screen.split(".")[0]
    if not number.isdigit():
        return True   # a form we do not know: let Qt try
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        addresses = [(socket.AF_UNIX, path), (socket.AF_UNIX, "\0" + path)]
    else:
        addresses = [(socket.AF_INET, (host, 6000 + int(number)))]
    for family, address in addresses:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                probe.connect(address)
                return True
        except OSError:
            continue
    return False


def draw_overlay(image: np.ndarray, stats: dict) -> np.ndarray:
    """Draw one "key: value" line per stat in a dark box at the top left of `image` (in place)."""
    lines = [f"{key}: {value:.1f}" if isinstance(value, float) else f"{key}: {value}"
             for key, value in stats.items()]
    if not lines:
        return image
    scale = max(0.4, image.shape[0] / 1000)
    line_height = int(28 * scale) + 4
    width = max(cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for line in lines) + 12
    box = image[:line_height * len(lines) + 8, :width]
    box[:] = (box * 0.4).astype(np.uint8)   # darken, so the text stays readable on any picture
    for number, line in enumerate(lines):
        cv2.putText(image, line, (6, line_height * (number + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return image


class PreviewSink(Sink):
    """A window showing the processed frames. Keys: o toggles the stats overlay; q or Esc stops
    (sets stop_requested, which the pipeline checks), as does closing the window."""

    def __init__(self, title: str = "Unmask", overlay: bool = True):
        self.title, self.overlay = title, overlay
        self.description = f"preview window {title!r}"
        self.stop_requested = False
        self._window_open = False

    def open(self, info: SourceInfo | None = None) -> None:
        if sys.platform.startswith("linux"):
            display = os.environ.get("DISPLAY")
            if not display:
                raise SinkError("no display for the preview window (DISPLAY is not set): "
                                "pass --no-display")
            if not _x_display_reachable(display):
                raise SinkError(f"cannot reach the display {display} for the preview window: "
                                "pass --no-display")
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise SinkError(f"cannot open a preview window ({_reason(exc)}): pass --no-display") from None
        self._window_open = True

    def write(self, frame: Frame, image: np.ndarray, stats: dict | None = None) -> None:
        if self.overlay and stats:
            image = draw_overlay(image.copy(), stats)
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        if key == ord("o"):
            self.overlay = not self.overlay
        elif key in (ord("q"), 27):
            self.stop_requested = True
        if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.stop_requested = True   # the user closed the window

    def close(self) -> None:
        if self._window_open:
            self._window_open = False
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)   # lets the GUI loop actually remove the window


def open_sink(spec: str, *, overwrite: bool = False, codec: str = "libx264", crf: int = 20,
              preset: str = "veryfast", source_path: str | None = None) -> Sink:
    """The sink for `spec` — a video file, a folder (no extension or a trailing /), an image
    file, rtsp:// or udp://, or virtualcam[:/dev/videoN] — checked but not yet opened.
    Raises SinkError."""
    spec = str(spec)
    if not spec.strip():
        raise SinkError("no output given")
    sink: Sink
    if spec == "virtualcam" or spec.startswith("virtualcam:"):
        sink = VirtualCameraSink(spec.partition(":")[2] or None)
    elif "://" in spec:
        scheme = spec.split("://", 1)[0].lower()
        if scheme not in ("rtsp", "rtsps", "udp"):
            raise SinkError(f"unsupported output URL {spec}: use rtsp:// or udp://")
        sink = NetworkSink(spec, codec=codec, crf=crf, preset=preset)
    else:
        path = Path(spec)
        suffix = path.suffix.lower()
        if spec.endswith(("/", os.sep)) or path.is_dir() or not suffix:
            sink = ImageFolderSink(path, overwrite=overwrite, source_path=source_path)
        elif suffix in VIDEO_EXTENSIONS:
            sink = VideoFileSink(path, overwrite=overwrite, codec=codec, crf=crf, preset=preset,
                                 source_path=source_path)
        elif suffix in IMAGE_EXTENSIONS:
            sink = ImageFileSink(path, overwrite=overwrite, source_path=source_path)
        else:
            raise SinkError(f"unsupported output {spec}: use a video file "
                            f"({' '.join(VIDEO_EXTENSIONS)}), a folder (name/), an image, "
                            "rtsp://, udp:// or virtualcam")
    sink.check()
    return sink
