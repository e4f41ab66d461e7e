"""No secret from a URL is ever printed or stored: stream.errors.redact_url, and the real CLI's
banner, errors and stats JSON for sources and outputs."""
from __future__ import annotations

import json
import socket

import pytest

from stream.errors import redact_url

SECRETS = ("p@ss", "ss@word", "S3CRETpw", "T0KENvalue", "PHRASEvalue", "KEYvalue", "SIGvalue")


@pytest.mark.parametrize("url, expected", [
    ("rtsp://alice:secret@cam/x", "rtsp://***@cam/x"),
    # FFmpeg takes the userinfo up to the last @ of the authority.
    ("rtsp://alice:p@ss@cam/x", "rtsp://***@cam/x"),
    ("rtsp://alice:p@ss@word@cam:554/x?a=1", "rtsp://***@cam:554/x?a=1"),
    ("rtsp://cam/path@thing", "rtsp://cam/path@thing"),               # an @ in the path is not userinfo
    ("srt://host:9000?mode=caller&passphrase=PHRASEvalue&latency=20",
     "srt://host:9000?mode=caller&passphrase=***&latency=20"),
    ("https://h/s.m3u8?token=T0KENvalue", "https://h/s.m3u8?token=***"),
    ("rtmp://h/app?key=KEYvalue&x=1", "rtmp://h/app?key=***&x=1"),
    ("https://h/v?X-Amz-Signature=SIGvalue&sig=SIGvalue", "https://h/v?X-Amz-Signature=***&sig=***"),
    ("http://h/v?password=a&passwd=b&pass=c&pwd=d&access_token=e&apikey=f&api_key=g&secret=h&auth=i"
     "&credential=j&Token=k",
     "http://h/v?password=***&passwd=***&pass=***&pwd=***&access_token=***&apikey=***&api_key=***"
     "&secret=***&auth=***&credential=***&Token=***"),
    ("udp://127.0.0.1:5000?pkt_size=1316&ttl=2", "udp://127.0.0.1:5000?pkt_size=1316&ttl=2"),
    ("clip.mp4", "clip.mp4"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_redact_url_inside_a_message_and_several_urls():
    text = ("cannot open rtsp://bob:p@ss@10.0.0.1/live (401); then tried "
            "https://h/x?token=T0KENvalue#frag, now 'srt://h:1?passphrase=PHRASEvalue'")
    out = redact_url(text)
    assert out == ("cannot open rtsp://***@10.0.0.1/live (401); then tried "
                   "https://h/x?token=***#frag, now 'srt://h:1?passphrase=***'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_no_secret(*texts):
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked in {text!r}"


def test_cli_never_shows_a_source_secret_in_its_error(tmp_path):
    from test_cli import run_cli
    port = _free_port()   # nothing listens: the connection is refused at once
    url = f"rtsp://alice:p@ss@word@127.0.0.1:{port}/x?token=T0KENvalue&passphrase=PHRASEvalue"
    proc = run_cli("--source", url, "--no-display", "--stats-json", tmp_path / "s.json", timeout=120)
    assert proc.returncode != 0
    assert "error:" in proc.stderr and "127.0.0.1" in proc.stderr
    _assert_no_secret(proc.stdout, proc.stderr)


def test_cli_never_shows_or_stores_an_output_secret(tmp_path):
    from test_cli import run_cli
    from faces import make_face_clip
    clip = make_face_clip(tmp_path / "in.mp4", n=5, audio=False)
    stats = tmp_path / "stats.json"
    # FFmpeg's udp protocol ignores options it does not know; the run itself succeeds.
    url = (f"udp://127.0.0.1:{_free_port()}?pkt_size=1316&passphrase=PHRASEvalue&token=T0KENvalue"
           "&key=KEYvalue&sig=SIGvalue")
    proc = run_cli("--source", clip, "--output", url, "--no-display", "--method", "classical",
                   "--stats-json", stats)
    assert proc.returncode == 0, proc.stderr
    assert "unmask:" in proc.stderr and "passphrase=***" in proc.stderr   # the banner, redacted
    data = stats.read_text()
    assert json.loads(data)["outputs"] == [redact_url(url)]
    _assert_no_secret(proc.stdout, proc.stderr, data)


def test_cli_never_shows_a_secret_of_an_output_it_cannot_open(tmp_path):
    from test_cli import run_cli
    from faces import make_face_clip
    clip = make_face_clip(tmp_path / "in.mp4", n=3, audio=False)
    url = f"rtsp://alice:p@ss@word@127.0.0.1:{_free_port()}/x?password=S3CRETpw"
    proc = run_cli("--source", clip, "--output", url, "--no-display", "--method", "classical")
    assert proc.returncode != 0 and "error:" in proc.stderr
    _assert_no_secret(proc.stdout, proc.stderr)


def test_benchmark_reports_never_hold_a_source_secret(tmp_path):
    from test_benchmarks import run
    url = f"rtsp://alice:p@ss@word@127.0.0.1:{_free_port()}/x?token=T0KENvalue"
    out = tmp_path / "results"
    proc = run("benchmarks.fps", "--source", url, "--frames", 2, "--warmup", 0, "--repeats", 1,
               "--out", out, "--no-plots")
    assert proc.returncode != 0                  # nothing listens: every configuration failed
    written = {path.name: path.read_text() for path in out.iterdir()}
    assert set(written) == {"fps.json", "fps.md"}
    assert "rtsp://***@127.0.0.1" in written["fps.json"]
    _assert_no_secret(proc.stdout, proc.stderr, *written.values())
