"""Unmask's benchmarks: what users run to choose hardware and settings.

    python -m benchmarks.fps        end-to-end FPS, live latency, stage times, CPU / memory;
                                    pipelined engine vs a sequential loop, models vs classical
    python -m benchmarks.models     per network and backend: latency vs batch, throughput, memory
    python -m benchmarks.temporal   landmark jitter and output flicker with / without smoothing

Each writes JSON, Markdown (also printed) and PNG plots to a new folder under
benchmarks/results/ (git-ignored) and compares two runs with `--compare A.json B.json`.
Shared helpers live in `benchmarks.report`, generated clips in `benchmarks.clips`.
"""
