"""Sources: files, folders, images, and the failure paths a user can hit."""
from __future__ import annotations

import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from media import AUDIO_RATE, decoded_frames, frame_image, make_clip, read_index, write_images
from stream.errors import SourceError
from stream.sources import (ImageFolderSource, ImageSource, UrlSource, VideoFileSource,
                            _LiveSource, open_source)


def one_line(error: Exception) -> str:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text
    return text


# ------------------------------------------------------------------------------ video files

def test_video_file_delivers_every_frame_with_the_files_pts(clip):
    expected = decoded_frames(clip)
    with open_source(str(clip)) as source:
        assert isinstance(source, VideoFileSource)
        info = source.info
        assert (info.width, info.height, info.fps) == (320, 240, 25.0)
        assert info.frame_count == 30
        assert info.time_base == expected[0][1] == Fraction(1, 12800)
        assert info.audio_path == str(clip)
        assert info.live is False
        frames = list(source)
        assert source.read() is None   # stays at the end
    assert len(frames) == 30
    assert [f.index for f in frames] == list(range(30))
    assert [f.pts for f in frames] == [pts for pts, _, _ in expected] == [512 * i for i in range(30)]
    assert all(f.time_base == Fraction(1, 12800) for f in frames)
    assert [read_index(f.image) for f in frames] == list(range(30))
    first = frames[0].image
    assert first.dtype == np.uint8 and first.shape == (240, 320, 3)
    assert np.abs(first.astype(int) - expected[0][2].astype(int)).max() == 0   # same BGR pixels
    assert source.stats.frames_read == 30 and source.stats.corrupt_frames == 0


def test_video_file_without_audio_has_no_audio_path(silent_clip):
    with open_source(str(silent_clip)) as source:
        assert source.info.audio_path is None


def test_corrupt_packets_are_skipped_and_counted(clip, tmp_path):
    damaged = tmp_path / "damaged.mp4"
    # Keyframes every 10 frames, so decoding recovers after the damage.
    data = bytearray(make_clip(tmp_path / "long.mp4", n_frames=60, audio=False, gop=10).read_bytes())
    for offset in range(len(data) // 3, len(data) // 3 + 4000, 50):   # mid-file, in the media data
        data[offset] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with open_source(str(damaged)) as source:
        frames = list(source)
        stats = source.stats
    assert stats.corrupt_frames >= 1
    assert 30 <= len(frames) < 60
    assert stats.frames_read == len(frames)
    assert [read_index(f.image) for f in frames[:10]] == list(range(10))   # before the damage
    assert frames[-1].pts == 59 * 512 and read_index(frames[-1].image) == 59   # carried on


def test_truncated_stream_decodes_what_it_can(tmp_path):
    full = make_clip(tmp_path / "clip.mkv", n_frames=40, audio=False)
    truncated = tmp_path / "truncated.mkv"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with open_source(str(truncated)) as source:
        indices = [read_index(f.image) for f in source]
    assert 5 <= len(indices) < 40
    assert indices == list(range(len(indices)))


def test_mp4_truncated_before_its_index_is_a_clear_error(clip, tmp_path):
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])   # moov is at the end
    with pytest.raises(SourceError) as error:
        open_source(str(truncated))
    assert "cut.mp4 is not a video file" in one_line(error.value)


def test_not_a_video_file(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(SourceError) as error:
        open_source(str(text))
    assert one_line(error.value).startswith(f"{text} is not a video file")


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=AUDIO_RATE)
        stream.layout = "mono"
        for start in range(0, AUDIO_RATE // 2, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = AUDIO_RATE, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(SourceError) as error:
        open_source(str(path))
    assert "is not a video file: it has no video stream" in one_line(error.value)


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "clip.mp4"
    with pytest.raises(SourceError) as error:
        open_source(str(missing))
    assert one_line(error.value) == f"input not found: {missing}"


def test_close_is_idempotent_and_ends_reading(clip):
    source = open_source(str(clip))
    assert source.read() is not None
    source.close()
    source.close()
    assert source.read() is None


# --------------------------------------------------------------------------- images, folders

def test_image_folder_is_read_in_natural_order(tmp_path):
    write_images(tmp_path, [10, 2, 100, 1, 20])
    (tmp_path / "notes.txt").write_text("not an image")
    with open_source(str(tmp_path)) as source:
        assert isinstance(source, ImageFolderSource)
        assert (source.info.width, source.info.height) == (64, 48)
        assert source.info.frame_count == 5 and source.info.live is False
        assert source.info.time_base == Fraction(1, 25)
        frames = list(source)
    assert [read_index(f.image) for f in frames] == [1, 2, 10, 20, 100]
    assert [f.pts for f in frames] == [0, 1, 2, 3, 4]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]


def test_image_folder_uses_requested_fps_and_every_extension(tmp_path):
    write_images(tmp_path, [1], ext="jpg")
    write_images(tmp_path, [2], ext="bmp")
    write_images(tmp_path, [3], ext="tif")
    write_images(tmp_path, [4], ext="webp")
    with open_source(str(tmp_path), fps=10) as source:
        assert source.info.time_base == Fraction(1, 10) and source.info.fps == 10
        assert [read_index(f.image) for f in source] == [1, 2, 3, 4]


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    write_images(tmp_path, [1, 3])
    (tmp_path / "frame_2.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "frame_0.jpg").write_bytes(b"")
    with open_source(str(tmp_path)) as source:
        frames = list(source)
        assert source.stats.corrupt_frames == 2
    assert [read_index(f.image) for f in frames] == [1, 3]


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_folder_without_images_is_an_error(tmp_path, content):
    if content:
        (tmp_path / content).write_text("x")
    with pytest.raises(SourceError) as error:
        open_source(str(tmp_path))
    assert f"{tmp_path} contains no images" in one_line(error.value)


def test_single_image_is_one_frame(tmp_path):
    (path,) = write_images(tmp_path, [7], size=(33, 21))
    with open_source(str(path)) as source:
        assert isinstance(source, ImageSource)
        assert (source.info.width, source.info.height, source.info.frame_count) == (33, 21, 1)
        frame = source.read()
        assert source.read() is None
    assert frame.image.shape == (21, 33, 3) and read_index(frame.image) == 7


def test_unreadable_image_file_is_an_error(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    with pytest.raises(SourceError) as error:
        open_source(str(path))
    assert one_line(error.value) == f"{path} is not a readable image"


# ---------------------------------------------------------------------------- live: failures

@pytest.mark.parametrize("spec", ["/dev/video97", "97"])
def test_missing_webcam_fails_fast(spec):
    started = time.monotonic()
    with pytest.raises(SourceError) as error:
        open_source(spec, open_timeout_s=5)
    assert time.monotonic() - started < 5   # checked before OpenCV is asked: no wait at all
    assert "/dev/video97 does not exist" in one_line(error.value)


def test_refused_url_fails_within_the_timeout_and_hides_credentials(tcp_port):
    url = f"rtsp://admin:s3cret@127.0.0.1:{tcp_port}/live"
    started = time.monotonic()
    with pytest.raises(SourceError) as error:
        open_source(url, open_timeout_s=8)
    assert time.monotonic() - started < 8   # refused at once: well inside open_timeout_s
    message = one_line(error.value)
    assert "s3cret" not in message and "admin" not in message
    assert f"rtsp://***@127.0.0.1:{tcp_port}/live" in message
    assert "refused" in message.lower()


@pytest.mark.parametrize("scheme", ["rtsp", "http", "tcp"])
def test_server_that_never_answers_times_out(silent_server, scheme):
    url = f"{scheme}://user:pa55word@127.0.0.1:{silent_server}/stream"
    started = time.monotonic()
    with pytest.raises(SourceError) as error:
        open_source(url, open_timeout_s=1, read_timeout_s=1)
    assert time.monotonic() - started < 8   # bounded by the 1 s timeouts, not hanging
    message = one_line(error.value)
    assert "pa55word" not in message and "user" not in message
    assert message.startswith(f"cannot open {scheme}://***@127.0.0.1")


def test_unsupported_url_scheme():
    with pytest.raises(SourceError) as error:
        open_source("ftp://user:pw@example.invalid/clip.mp4")
    message = one_line(error.value)
    assert "unsupported input URL" in message and "pw" not in message


# ----------------------------------------------- live: the reader thread, without a network

class FakeStream(_LiveSource):
    """A live source whose 'connections' each deliver `per_connection` frames, `interval_s`
    apart, then fail; connection attempts listed in `refuse` (0-based) are refused."""

    def __init__(self, per_connection=5, interval_s=0.01, refuse=(), sizes=((32, 24),), **options):
        super().__init__("fake://user:pw@camera", **options)
        self.per_connection, self.interval_s = per_connection, interval_s
        self.refuse, self.sizes = set(refuse), sizes
        self.attempts = 0
        self.counter = 0

    def _connect(self):
        attempt = self.attempts
        self.attempts += 1
        if attempt in self.refuse:
            raise ConnectionRefusedError("Connection refused")
        return self.sizes[min(attempt, len(self.sizes) - 1)]

    def _frames(self, size):
        for _ in range(self.per_connection):
            time.sleep(self.interval_s)
            self.counter += 1
            yield frame_image(self.counter, size), self.counter, Fraction(1, 100)
        raise ConnectionResetError("Connection reset by peer")

    def _to_bgr(self, raw):
        return raw

    def _disconnect(self, handle):
        pass


def test_reader_keeps_only_the_newest_frame():
    source = FakeStream(per_connection=10_000, interval_s=0.005)
    source.open()
    try:
        first = source.read()
        time.sleep(0.3)
        second = source.read()
        assert second.index > first.index + 10    # ~60 frames went by
        assert read_index(second.image) == second.pts == second.index + 1
        assert source.stats.dropped >= second.index - first.index - 2
        indices = [source.read().index for _ in range(5)]
        assert indices == sorted(set(indices)) and indices[0] > second.index   # never repeats
    finally:
        source.close()


def test_reader_reconnects_with_backoff_and_follows_a_size_change():
    source = FakeStream(per_connection=3, refuse={1, 2}, sizes=((32, 24), (32, 24), (32, 24), (48, 40)),
                        max_backoff_s=0.6)
    source.open()
    started = time.monotonic()
    try:
        frames = [source.read() for _ in range(5)]
    finally:
        source.close()
    elapsed = time.monotonic() - started
    assert all(f is not None for f in frames)
    assert frames[0].image.shape == (24, 32, 3) and frames[-1].image.shape == (40, 48, 3)
    assert (source.info.width, source.info.height) == (48, 40)
    assert source.stats.reconnects == 1           # two refused attempts, then one success
    assert 1.6 <= elapsed < 10   # waited 0.5, then 0.6 twice (doubling, capped at max_backoff_s)


def test_reader_gives_up_after_the_bounded_time_and_records_why():
    source = FakeStream(per_connection=2, refuse=set(range(1, 1000)), max_backoff_s=0.2,
                        give_up_after_s=0.8)
    source.open()
    started = time.monotonic()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    elapsed = time.monotonic() - started
    source.close()
    assert len(frames) >= 1
    assert 0.8 <= elapsed < 10
    assert "gave up reconnecting after 0.8 s" in source.error
    assert "Connection refused" in source.error
    assert "pw" not in source.error and "fake://***@camera" in source.error


def test_without_reconnect_an_error_ends_the_stream():
    source = FakeStream(per_connection=3, reconnect=False)
    source.open()
    frames = list(source)
    source.close()
    assert 1 <= len(frames) <= 3
    assert source.error == "fake://***@camera: Connection reset by peer"
    assert source.attempts == 1


def test_close_unblocks_a_waiting_read():
    source = FakeStream(per_connection=1, refuse=set(range(1, 1000)), max_backoff_s=5)
    source.open()
    assert source.read() is not None
    results = []
    reader = threading.Thread(target=lambda: results.append(source.read()))
    reader.start()
    time.sleep(0.2)
    assert reader.is_alive()    # blocked: no frame while it keeps reconnecting
    started = time.monotonic()
    source.close()
    reader.join(2)
    assert not reader.is_alive() and results == [None]
    assert time.monotonic() - started < 5   # at once: read() and the backoff sleep both wake
    assert source.error is None   # stopped by the user, not an error


def test_open_reports_the_first_failure():
    source = FakeStream(refuse={0})
    with pytest.raises(SourceError) as error:
        source.open()
    assert one_line(error.value) == "cannot open fake://***@camera: Connection refused"


def test_url_source_is_live_and_redacted():
    source = UrlSource("rtsp://u:p@127.0.0.1:1/x")
    assert source.info.live and source.info.description == "rtsp://***@127.0.0.1:1/x"
    assert "rtsp_transport" in source._options() and source._options()["rtsp_transport"] == "tcp"
    assert "timeout" not in UrlSource("rtmp://127.0.0.1/app/key")._options()   # would mean "listen"
