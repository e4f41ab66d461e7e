#!/usr/bin/env python3
"""Unmask: reconstruct faces hidden by face masks, live, in video.

Examples:
  python run_stream.py --source assets/sample.mp4 --output out.mp4 --no-display
  python run_stream.py --source 0                          # webcam, preview window
  python run_stream.py --source rtsp://user:pw@cam/stream --output udp://127.0.0.1:5000
  python run_stream.py --source photos/ --output unmasked/ # a folder of images
  python run_stream.py --source clip.mp4 --method classical --stats-json stats.json --no-display

Keys in the preview window: q or Esc quits, o toggles the overlay.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILURE = 1


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one clear line instead of usage + error."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def face_count_or_all(text):
    """--full-rate-faces: a count of faces (0 or more), or "all"."""
    if text == "all":
        return None
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of faces or 'all', got {text!r}")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number of faces (0 or more) or 'all', got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="run_stream.py", description=__doc__.split("\n\n")[0],
                      epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("--source", required=True, action="append",
                    help="webcam index (0) or /dev/videoN, rtsp:// rtmp:// http(s):// udp:// URL, "
                         "a video file, an image, or a folder of images; repeat it, or name a .streams "
                         "file (one source a line, # comments), for several streams in one process "
                         "(--output is then a folder: <n>_<name>.mp4 per stream)")
    io.add_argument("--output", action="append", default=[],
                    help="video file (.mp4 .mkv …), image folder (ending in /), rtsp:// or udp:// "
                         "URL, or 'virtualcam'; repeat for several outputs")
    io.add_argument("--overwrite", action="store_true", help="replace existing output files")
    io.add_argument("--no-display", action="store_true", help="no preview window (headless)")
    io.add_argument("--stats-json", type=Path, help="write run statistics (frames, FPS, stage times) here")
    io.add_argument("--mode", choices=["auto", "live", "offline"], default="auto",
                    help="live drops frames to keep latency low; offline processes every frame "
                         "(default: live for webcams/URLs, offline for files)")
    io.add_argument("--max-frames", type=positive_int, help="stop after N frames")
    io.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    cam = p.add_argument_group("webcam")
    cam.add_argument("--width", type=positive_int)
    cam.add_argument("--height", type=positive_int)
    cam.add_argument("--fps", type=positive_float)
    cam.add_argument("--mjpg", action="store_true", help="ask the webcam for MJPG (higher FPS at 720p+)")
    m = p.add_argument_group("models")
    m.add_argument("--method", choices=["auto", "model", "classical"], default="auto",
                   help="model: the trained networks (default when shipped); classical: the "
                        "cv2.inpaint baseline, for comparison")
    m.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt", "torch", "triton"], default="auto",
                   help="triton: the models run on a Triton server (--triton-url)")
    m.add_argument("--triton-url", metavar="grpc://HOST:PORT",
                   help="Triton server for --backend triton (python -m engines.serve, or a stock server "
                        "with the repository of python -m export.triton)")
    m.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: best available)")
    m.add_argument("--threads", type=positive_int, help="CPU threads per model (ONNX Runtime)")
    m.add_argument("--preset", choices=["fast", "hq"], default="fast", help="inpainter preset")
    m.add_argument("--weights", type=Path, metavar="DIR",
                   help="run the candidate networks in this folder (python -m training.train --export-dir) "
                        "instead of the shipped ones; what it lacks is the shipped file (one source only)")
    m.add_argument("--tracker", choices=["auto", "mediapipe", "torch"], default="auto",
                   help="face tracking: mediapipe's graphs on the CPU, or the same networks run by "
                        "torch on the GPU (auto: torch with --device cuda, else mediapipe)")
    m.add_argument("--max-faces", type=positive_int, default=16,
                   help="faces tracked per frame (default 16: crowds; each extra face costs, see benchmarks.fps)")
    # Unset: the Unmasker's own default (stream.unmasker.FULL_RATE_FACES; not imported for --help).
    m.add_argument("--full-rate-faces", type=face_count_or_all, default=argparse.SUPPRESS, metavar="N|all",
                   help="with more masked faces than this in view (default 2), each frame blends up "
                        "to half of them from their last redraw, moved with the face, instead of drawing them anew "
                        "(crowds: no face is carried twice running, the eyes stay untouched); 'all' draws every "
                        "face on every frame")
    m.add_argument("--max-wait-ms", type=float, default=4.0,
                   help="several streams: longest wait of the shared model stage for other streams' faces")
    m.add_argument("--no-smoothing", action="store_true", help="disable temporal smoothing")
    m.add_argument("--min-cutoff", type=positive_float, default=1.0, help="One Euro min cutoff (Hz)")
    m.add_argument("--beta", type=float, default=20.0, help="One Euro speed coefficient")
    own = p.add_argument_group("your own face (instead of a generated one)")
    own.add_argument("--reference", metavar="PHOTO", type=Path, action="append",
                     help="a photo of the person: their own lower face is shown on the main (largest) "
                          "masked face. Repeat it for several people: each masked face gets the photo "
                          "it looks like (a face embedding), or none. It shows THIS photo's face: use "
                          "only your own, or with consent")
    own.add_argument("--reference-px", metavar="N", type=int,
                     help="render the own face at its frame resolution up to N px (default 384: a 720p "
                          "webcam face; 512 for large 1080p faces, at about twice the cost; 128 renders in "
                          "the inpainting window)")
    own.add_argument("--enrol", choices=["off", "auto"], default="off",
                     help="auto: remember each person's sharp, frontal unmasked view (in memory only) and "
                          "show it once they are masked")
    own.add_argument("--save-enrolled", metavar="DIR", type=Path,
                     help="also write the enrolled views there as PNG (never written without this)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="show native library logging")
    return p


def _graceful_terminate(signum, frame):
    # SIGTERM (kill, systemd, docker stop) stops like Ctrl-C: outputs are finalised.
    raise KeyboardInterrupt


class _RedactingFormatter(logging.Formatter):
    """'warning: message' on one line, without URL credentials."""

    def format(self, record):
        from stream.errors import redact_url
        text = " ".join(super().format(record).split())
        return f"{record.levelname.lower()}: {redact_url(text)}"


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is at each record: a plain StreamHandler keeps the stream it was made
    with, which breaks once stderr is replaced (a closed capture in an embedding program or a test)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def configure_logging(verbose: bool) -> None:
    """Show the library's warnings (a failed engine-cache lookup, a resized frame, a source
    reconnecting); --verbose adds its INFO lines. Called again (main() run twice in one process), it
    replaces its handler instead of adding a second."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CurrentStderrHandler)]:
        root.removeHandler(old)
    handler = _CurrentStderrHandler()
    handler.setFormatter(_RedactingFormatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _graceful_terminate)
    configure_logging(args.verbose)
    if not args.verbose:
        os.environ.setdefault("GLOG_minloglevel", "2")
        from stream.logfilter import filter_native_stderr
        filter_native_stderr()
    from stream.errors import UnmaskError, redact_url
    try:
        return run(args)
    except UnmaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ValueError as exc:
        print(f"error: {redact_url(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a user gets a line, not a traceback
        print(f"error: unexpected {type(exc).__name__}: {redact_url(str(exc))} "
              f"(please report it; --verbose shows native logs)", file=sys.stderr)
        return EXIT_FAILURE


def run(args) -> int:
    from stream.errors import ModelError, SinkError, redact_url
    from stream.factory import choose_path, create_unmasker
    from stream.multistream import STREAM_LIST_SUFFIX, expand_sources
    if args.weights is not None and not args.weights.is_dir():
        raise ModelError(f"--weights {args.weights} is not a folder")
    if len(args.source) > 1 or args.source[0].endswith(STREAM_LIST_SUFFIX):
        if args.weights is not None:
            raise ModelError("--weights runs candidates on one source; several streams use the shipped weights")
        args.sources = expand_sources(args.source)
        from stream.multistream_cli import run_many
        return run_many(args)
    args.source = args.source[0]
    from stream.pipeline import Mode, Pipeline
    from stream.sinks import PreviewSink, open_sink
    from stream.sources import open_source

    if args.stats_json and args.stats_json.exists() and not args.overwrite:
        raise SinkError(f"{args.stats_json} exists; pass --overwrite to replace it")
    if args.stats_json and not args.stats_json.parent.exists():
        raise SinkError(f"cannot write {args.stats_json}: folder {args.stats_json.parent} does not exist")
    gpu_resident, method, _ = choose_path(args.method, args.backend, args.device, args.tracker,
                                          args.preset, args.weights)  # bad flags fail here
    own_face = {}
    if args.reference_px is not None:
        if not (args.reference or args.enrol != "off"):
            raise ValueError("--reference-px needs --reference or --enrol auto")
        if not 32 <= args.reference_px <= 1024:
            raise ValueError(f"--reference-px must be between 32 and 1024, got {args.reference_px}")
        own_face["reference_px"] = args.reference_px
    if args.reference or args.enrol != "off" or args.save_enrolled:
        if method != "model":
            raise ModelError("--reference / --enrol need the trained models (--method model): the "
                             "analyser places the person's own mouth and jaw")
        if args.save_enrolled and args.enrol == "off":
            raise ValueError("--save-enrolled needs --enrol auto")
        if args.save_enrolled and args.save_enrolled.exists() and any(args.save_enrolled.iterdir()) \
                and not args.overwrite:
            raise SinkError(f"{args.save_enrolled} is not empty; pass --overwrite to write into it")
        if args.reference:
            from stream.reference import ReferenceFace
            for path in args.reference:
                if not path.is_file():
                    raise ValueError(f"reference photo {path} not found")
            photos = [ReferenceFace.from_image(path) for path in args.reference]   # analysed once
            own_face["reference"] = photos[0] if len(photos) == 1 else photos
        own_face.update(enrol=args.enrol, save_enrolled=args.save_enrolled)
    if args.triton_url and args.backend != "triton":
        raise ModelError("--triton-url is for --backend triton")
    if args.backend == "triton":
        if method != "model":
            raise ModelError("--backend triton serves the trained models: drop --method classical")
        if not args.triton_url:
            raise ModelError("--backend triton needs --triton-url grpc://host:port")
        from engines.select import TRITON_URL_ENV
        os.environ[TRITON_URL_ENV] = args.triton_url   # read by engines.create_runner in the Unmasker
    outage_guards = []

    cadence = {"full_rate_faces": args.full_rate_faces} if hasattr(args, "full_rate_faces") else {}

    def make_unmasker():
        # The pipeline resolves deferred downloads (GPU path) in its output thread: frames overlap.
        um = create_unmasker(method=method, backend=args.backend, device=args.device,
                             tracker=args.tracker, preset=args.preset, max_faces=args.max_faces,
                             smoothing=not args.no_smoothing, min_cutoff=args.min_cutoff, beta=args.beta,
                             threads=args.threads, defer_download=True, mode="video",
                             weights_dir=args.weights, **cadence, **own_face)
        if args.backend == "triton":   # frames keep flowing (unreconstructed) while the server is away
            from stream.outage import PassThroughOnOutage
            um = PassThroughOnOutage(um)
            outage_guards.append(um)
        return um

    # Cheap checks first: the input, then the outputs (nothing is created yet),
    # then the models; the pipeline thread takes over the first Unmasker.
    source = open_source(args.source, width=args.width, height=args.height, fps=args.fps,
                         mjpg=args.mjpg)
    sinks = []
    try:
        for spec in args.output:
            sinks.append(open_sink(spec, overwrite=args.overwrite,
                                   source_path=args.source if Path(args.source).exists() else None))
        first = make_unmasker()
        backend = first.backend
        made = [first]

        def take_unmasker():
            return made.pop() if made else make_unmasker()

        preview = None if args.no_display else PreviewSink()
        if not sinks and preview is None and not args.stats_json:
            print("note: no --output and --no-display: frames are processed and discarded",
                  file=sys.stderr)
        mode = {"auto": None, "live": Mode.LIVE, "offline": Mode.OFFLINE}[args.mode]
        progress = not args.no_progress and not source.info.live and sys.stderr.isatty()
        pipe = Pipeline(source, sinks, take_unmasker, mode=mode, max_frames=args.max_frames,
                        duration_s=args.duration, preview=preview, progress=progress)
        if args.method == "auto" and method == "classical":
            print("note: shipped models not found; using the classical cv2.inpaint baseline",
                  file=sys.stderr)
        print(f"unmask: {redact_url(source.info.description)} -> "
              f"{', '.join(redact_url(s) for s in args.output) or 'no output'} "
              f"[{pipe.mode.value}, method={method}, backend={backend}]", file=sys.stderr)
        try:
            stats = pipe.run()
        except BaseException as exc:
            stats = getattr(exc, "pipeline_stats", None)
            if stats is not None and args.stats_json:
                _write_stats(args, stats, method, backend, outage_guards)
            raise
    finally:
        source.close()
    _write_stats(args, stats, method, backend, outage_guards)
    stages = ", ".join(f"{k} {v['mean_ms']:.1f}" for k, v in stats.stages.items())
    print(f"done: {stats.frames_out} frames in {stats.duration_s:.1f} s ({stats.fps:.1f} FPS), "
          f"{stats.mean_faces:.2f} faces/frame, {stats.frames_dropped} dropped, "
          f"{stats.corrupt_frames} corrupt skipped, {stats.reconnects} reconnects "
          f"[{stats.stopped_by}]; mean ms: {stages}", file=sys.stderr)
    if outage_guards:
        print(f"triton: {sum(g.passed_through for g in outage_guards)} frames passed through unreconstructed "
              f"during {sum(g.outages for g in outage_guards)} server outages", file=sys.stderr)
    return 0


def _write_stats(args, stats, method, backend, outage_guards=()) -> None:
    if not args.stats_json:
        return
    data = stats.as_dict()
    data.update(method=method, backend=backend, source=_redacted(args.source),
                outputs=[_redacted(spec) for spec in args.output])
    if args.backend == "triton":
        data.update(frames_passed_through=sum(g.passed_through for g in outage_guards),
                    server_outages=sum(g.outages for g in outage_guards))
    tmp = args.stats_json.with_suffix(args.stats_json.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(args.stats_json)


def _redacted(text):
    from stream.errors import redact_url
    return redact_url(text)


if __name__ == "__main__":
    sys.exit(main())
