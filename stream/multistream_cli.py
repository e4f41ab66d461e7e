"""`run_stream.py` with several `--source`s (or a `.streams` file): the command-line half of
stream.multistream. Called by run_stream.run with the parsed arguments (`args.sources` expanded)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from stream.errors import ModelError, SinkError, redact_url
from stream.multistream import (MultiStream, SharedBatcher, StreamUnmasker, make_runners, output_paths)
from stream.pipeline import Mode


def _output_folder(args) -> Path | None:
    if not args.output:
        return None
    if len(args.output) > 1:
        raise SinkError("with several streams, --output is one folder (each stream writes <n>_<name>.mp4 there)")
    folder = Path(args.output[0])
    if "://" in args.output[0] or args.output[0].startswith("virtualcam") or \
            (folder.suffix and not folder.is_dir()) or (folder.exists() and not folder.is_dir()):
        raise SinkError(f"with several streams, --output must be a folder, got {redact_url(args.output[0])}")
    if not folder.parent.exists():
        raise SinkError(f"cannot write {folder}: folder {folder.parent} does not exist")
    return folder


def run_many(args) -> int:
    from stream.sinks import open_sink
    from stream.sources import open_source
    from stream.unmasker import Unmasker, models_available

    specs = args.sources
    if args.stats_json and args.stats_json.exists() and not args.overwrite:
        raise SinkError(f"{args.stats_json} exists; pass --overwrite to replace it")
    if args.stats_json and not args.stats_json.parent.exists():
        raise SinkError(f"cannot write {args.stats_json}: folder {args.stats_json.parent} does not exist")
    if args.max_wait_ms < 0:
        raise ModelError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    method = args.method
    if method == "auto":
        method = "model" if models_available(args.preset) else "classical"
    if (args.device or "").startswith("cuda") and args.backend in ("auto", "torch") or args.tracker == "torch":
        raise ModelError("several streams run the engines path: use --backend onnxruntime, tensorrt or triton "
                         "(the GPU-resident pipeline serves one stream)")
    if args.triton_url and args.backend != "triton":
        raise ModelError("--triton-url is for --backend triton")
    if args.backend == "triton" and not args.triton_url:
        raise ModelError("--backend triton needs --triton-url grpc://host:port")
    if args.backend == "triton" and method != "model":
        raise ModelError("--backend triton serves the trained models: drop --method classical")
    folder = _output_folder(args)
    paths = output_paths(folder, specs) if folder is not None else [None] * len(specs)
    if folder is not None and not args.overwrite:
        existing = [str(p) for p in paths if p.exists()]
        if existing:
            raise SinkError(f"{existing[0]} exists; pass --overwrite to replace it")

    sources, batcher, guards = [], None, []
    try:
        for spec in specs:
            sources.append(open_source(spec, width=args.width, height=args.height, fps=args.fps, mjpg=args.mjpg))
        if folder is not None:
            folder.mkdir(exist_ok=True)
        sinks = [[open_sink(str(p), overwrite=args.overwrite, source_path=spec if Path(spec).exists() else None)]
                 if p is not None else [] for spec, p in zip(specs, paths)]
        common = dict(max_faces=args.max_faces, preset=args.preset, smoothing=not args.no_smoothing,
                      min_cutoff=args.min_cutoff, beta=args.beta)
        if hasattr(args, "full_rate_faces"):          # unset: the Unmasker's default
            common["full_rate_faces"] = args.full_rate_faces
        if method == "model":
            batcher = SharedBatcher(lambda: make_runners(args.backend, args.device, args.threads, args.preset,
                                                         args.triton_url),
                                    max_wait_ms=args.max_wait_ms).start()
            backend = batcher.runners["analyser"].name
        else:
            backend = "opencv"

        def make_unmasker():
            if batcher is None:
                return Unmasker(method="classical", **common)
            um = StreamUnmasker(batcher, **common)
            if args.backend == "triton":
                from stream.outage import PassThroughOnOutage
                um = PassThroughOnOutage(um)
                guards.append(um)
            return um

        if not args.no_display:
            print("note: several streams run without a preview window", file=sys.stderr)
        mode = {"auto": None, "live": Mode.LIVE, "offline": Mode.OFFLINE}[args.mode]
        multi = MultiStream([(src, snk, make_unmasker, [str(p)] if p is not None else [])
                             for src, snk, p in zip(sources, sinks, paths)],
                            mode=mode, max_frames=args.max_frames, duration_s=args.duration)
        print(f"unmask: {len(specs)} streams -> {folder or 'no output'} [method={method}, backend={backend}, "
              f"shared batching, max wait {args.max_wait_ms:g} ms]", file=sys.stderr)
        try:
            results = multi.run()
        finally:
            if batcher is not None:
                batcher.close()
            data = multi.stats_dict(batcher)
            data.update(method=method, backend=backend)
            if guards:
                data["aggregate"].update(frames_passed_through=sum(g.passed_through for g in guards),
                                         server_outages=sum(g.outages for g in guards))
            if args.stats_json:
                tmp = args.stats_json.with_suffix(args.stats_json.suffix + ".tmp")
                tmp.write_text(json.dumps(data, indent=2) + "\n")
                os.replace(tmp, args.stats_json)
    finally:
        for s in sources:
            s.close()
    failed = 0
    for n, r in enumerate(results):
        st = r.stats
        if r.error is not None:
            failed += 1
            print(f"error: stream {n} ({r.source}): {r.error}", file=sys.stderr)
        elif st is not None:
            print(f"stream {n} ({r.source}): {st.frames_out} frames ({st.fps:.1f} FPS), {st.frames_dropped} dropped, "
                  f"{st.reconnects} reconnects [{st.stopped_by}]", file=sys.stderr)
    agg = data["aggregate"]
    print(f"done: {agg['frames_out']} frames from {len(results)} streams in {agg['duration_s']:.1f} s "
          f"({agg['fps']:.1f} FPS in all), {failed} failed", file=sys.stderr)
    return 1 if failed else 0
