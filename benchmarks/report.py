"""Shared helpers of the benchmarks: results folders, statistics, machine info, resource
monitoring, JSON / Markdown writing, plots and `--compare`.

Nothing here imports the stream or the models, so the command lines can check
their arguments (and fail with one line) before anything heavy is loaded.
matplotlib and psutil are optional (the `[bench]` extra): without matplotlib no
plots are drawn (a note says so); without psutil CPU time comes from
`os.times()` and peak memory from `getrusage` (the process's lifetime peak).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
SCHEMA_VERSION = 1

EXIT_FAILURE = 1
EXIT_USAGE = 2

# Distributions of the packages the numbers depend on (first installed name wins).
PACKAGES = {
    "numpy": ("numpy",),
    "opencv": ("opencv-contrib-python", "opencv-python", "opencv-contrib-python-headless",
               "opencv-python-headless"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "mediapipe": ("mediapipe",),
    "av": ("av",),
    "torch": ("torch",),
    "tensorrt": ("tensorrt",),
    "psutil": ("psutil",),
    "matplotlib": ("matplotlib",),
}


class BenchError(Exception):
    """A problem the user can act on; the command line prints it as one line."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code


# ------------------------------------------------------------------------------- command lines

class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (and exit 2) instead of usage + error."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def new_parser(prog: str, doc: str) -> OneLineParser:
    """A benchmark's parser: the first paragraph of its module docstring is the description,
    the rest (usage examples, what is measured) the --help epilog, laid out as written."""
    return OneLineParser(prog=f"python -m {prog}", description=doc.split("\n\n")[0],
                         epilog=doc.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)


def _number(text: str, convert, acceptable, expected: str):
    """`convert(text)` when `acceptable`, else the argparse error "expected <expected>, got ..."."""
    try:
        v = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not acceptable(v):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return v


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: v > 0 and math.isfinite(v), "a positive number")


def int_list(text: str) -> list[int]:
    """"1,2,4,8" -> [1, 2, 4, 8] (positive, duplicates removed, order kept)."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
        if v not in out:
            out.append(v)
    if not out:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return out


def name_list(choices: Iterable[str] | None = None):
    """An argparse type for "a,b,c" whose items must be in `choices` (when given)."""
    allowed = list(choices) if choices is not None else None

    def parse(text: str) -> list[str]:
        items = []
        for part in str(text).split(","):
            part = part.strip()
            if part and part not in items:
                items.append(part)
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        if allowed is not None:
            bad = [i for i in items if i not in allowed]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {', '.join(map(repr, bad))}: choose from "
                                                 f"{', '.join(allowed)}")
        return items

    return parse


def quiet_native_logs(verbose: bool) -> None:
    """Keep mediapipe / TFLite chatter off the terminal (as run_stream.py does)."""
    if verbose:
        return
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from stream.logfilter import filter_native_stderr
        filter_native_stderr()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def run_cli(prog: str, body, argv=None) -> int:
    """Run `body(argv)` and turn every failure into one line on stderr and an exit code."""
    try:
        return int(body(argv) or 0)
    except BenchError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a user gets one line, not a traceback
        try:
            from stream.errors import UnmaskError, redact_url
        except Exception:  # noqa: BLE001
            UnmaskError, redact_url = (), str   # noqa: N806
        text = redact_url(" ".join(str(exc).split())) or type(exc).__name__
        if UnmaskError and isinstance(exc, UnmaskError):
            print(f"{prog}: error: {text}", file=sys.stderr)
            return EXIT_FAILURE
        if os.environ.get("UNMASK_BENCH_DEBUG"):
            raise
        print(f"{prog}: error: unexpected {type(exc).__name__}: {text} "
              f"(set UNMASK_BENCH_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


def run_main(prog: str, argv, build_parser, run) -> int:
    """A benchmark's command line: parse `argv`, print the --compare table when asked, else
    `run(args, argv)`; every failure becomes one line on stderr and an exit code."""
    def parse_and_run(argv) -> int:
        args = build_parser().parse_args(argv)
        if args.compare:
            print(compare(*args.compare))
            return 0
        return run(args, argv)

    return run_cli(prog, parse_and_run, argv)


def check_device(device: str | None) -> None:
    """Refuse a --device no backend understands before anything heavy is loaded."""
    if device is not None and not (device in ("cpu", "cuda") or
                                   (device.startswith("cuda:") and device[5:].isdigit())):
        raise BenchError(f"unknown device {device!r}: use cpu, cuda or cuda:N")


def redact(text: str) -> str:
    """`text` without the credentials of any URL in it (stream.errors.redact_url)."""
    from stream.errors import redact_url
    return redact_url(text)


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(redact(msg), file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- results folders

def prepare_out_dir(out: str | os.PathLike | None, overwrite: bool = False,
                    root: Path = RESULTS_DIR) -> Path:
    """The folder for one run's results; never silently reuses a previous run's folder.

    Without `out`: root/<YYYYmmdd-HHMMSS>/ (with -2, -3 ... when that exists).
    With `out`: used when missing or empty; an existing non-empty folder only with `overwrite`.
    """
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path(root) / stamp
        n = 2
        while path.exists():
            path = Path(root) / f"{stamp}-{n}"
            n += 1
    else:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise BenchError(f"--out {path} is a file, not a folder")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise BenchError(f"--out {path} already holds results (use --overwrite to replace them, "
                             f"or choose another folder)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create results folder {path}: {exc.strerror or exc}") from None
    return path


def check_out_dir(out: str | os.PathLike | None, overwrite: bool) -> None:
    """Fail now, with prepare_out_dir's message, when --out cannot be used, but create nothing:
    the folder is made only once the input has been checked, so a refused run leaves none behind."""
    if out is None:
        return
    path = Path(out)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not overwrite)):
        prepare_out_dir(path, overwrite)


def result_header(benchmark: str, prog: str, argv) -> dict:
    """The fields every results JSON starts with: what made it, when, and with which command."""
    return {"benchmark": benchmark, "schema_version": SCHEMA_VERSION,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"), "command": [prog] + list(argv or sys.argv[1:])}


def write_results(result: dict, out_dir: Path, markdown, plot=None, json_path: Path | None = None) -> None:
    """Draw the plots (`plot(result, out_dir)` -> files, notes; None with --no-plots), record them
    in `result`, write <benchmark>.json and <benchmark>.md to out_dir (and the JSON to `json_path`
    too, --json) and print the Markdown."""
    name = result["benchmark"]
    files, plot_notes = plot(result, out_dir) if plot is not None else ([], [])
    result["notes"] += plot_notes
    result["files"] = {"json": str(out_dir / f"{name}.json"), "markdown": str(out_dir / f"{name}.md"),
                       "plots": files}
    md = redact(markdown(result))   # reports are shared: no secret from a source URL in them
    (out_dir / f"{name}.md").write_text(md + "\n")
    write_json(out_dir / f"{name}.json", result)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(json_path), result)
    print(md)


def write_json(path: Path, data: Any) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def _jsonable(x):
    """NaN / inf -> None, numpy scalars -> Python, Paths -> str (strict JSON); strings without
    the credentials of URLs (a source's URL lands in labels, paths, notes and the command)."""
    if isinstance(x, str):
        return redact(x)
    if isinstance(x, dict):
        return {redact(str(k)): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return redact(str(x))
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def load_result(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"results file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"{p} is not a benchmark results JSON ({exc})") from None
    if not isinstance(data, dict) or "benchmark" not in data or not isinstance(data.get("rows"), list):
        raise BenchError(f"{p} is not a benchmark results JSON (no 'benchmark' / 'rows')")
    return data


# ----------------------------------------------------------------------------------- statistics

def percentile(values, q: float) -> float | None:
    v = sorted(float(x) for x in values)
    if not v:
        return None
    if len(v) == 1:
        return v[0]
    pos = (len(v) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def summarize(values) -> dict:
    """median, mean, min, max, q1, q3 (IQR ends), n of a list of numbers (None entries skipped)."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return {"median": None, "mean": None, "min": None, "max": None, "q1": None, "q3": None, "n": 0}
    return {"median": percentile(v, 50), "mean": sum(v) / len(v), "min": min(v), "max": max(v),
            "q1": percentile(v, 25), "q3": percentile(v, 75), "n": len(v)}


def ratio(a, b) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    if a is None or b is None or not b:
        return None
    return float(a) / float(b)


def fmt(x, digits: int = 1, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x}{unit}"
    return f"{x:.{digits}f}{unit}"


def fmt_spread(s: dict | None, digits: int = 1) -> str:
    """"23.4 (22.9–24.0)": median and min–max of a `summarize` dict."""
    if not s or s.get("median") is None:
        return "–"
    if s.get("n", 0) <= 1 or s["min"] == s["max"]:
        return fmt(s["median"], digits)
    return f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"


# ---------------------------------------------------------------------------------- machine info

def _dist_version(names) -> tuple[str | None, str | None]:
    from importlib import metadata
    for n in names:
        try:
            return n, metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5).stdout.strip()
        except Exception:  # noqa: BLE001
            pass
    return platform.processor() or platform.machine()


def gpu_info() -> list[dict]:
    """Visible NVIDIA GPUs (nvidia-smi; else CUDA PyTorch); [] when none."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                 timeout=10)
            gpus = []
            for line in out.stdout.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) >= 3:
                    gpus.append({"name": parts[0], "memory_mb": _num(parts[1]), "driver": parts[2]})
            if gpus:
                return gpus
        except Exception:  # noqa: BLE001
            pass
    if torch_cuda_available():
        import torch
        return [{"name": torch.cuda.get_device_name(i),
                 "memory_mb": torch.cuda.get_device_properties(i).total_memory / 2**20,
                 "driver": None} for i in range(torch.cuda.device_count())]
    return []


def _num(text):
    try:
        return float(text)
    except ValueError:
        return None


def torch_cuda_available() -> bool:
    """torch.cuda.is_available(), without importing a CPU-only torch build (slow, pointless)."""
    _, version = _dist_version(("torch",))
    if version is None or "+cpu" in version:
        return False
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def git_revision() -> dict:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"commit": rev or None, "dirty": dirty}
    except Exception:  # noqa: BLE001
        return {"commit": None, "dirty": None}


def machine_info() -> dict:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_logical_cores": os.cpu_count(),
        "cpu_physical_cores": None,
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpus": gpu_info(),
        "packages": {},
        "git": git_revision(),
    }
    try:
        import psutil
        info["cpu_physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    for key, names in PACKAGES.items():
        dist, version = _dist_version(names)
        info["packages"][key] = version if dist is None or dist == names[0] else f"{version} ({dist})"
    try:
        import onnxruntime as ort
        info["onnxruntime_providers"] = list(ort.get_available_providers())
    except Exception:  # noqa: BLE001
        info["onnxruntime_providers"] = []
    return info


def machine_line(m: dict) -> str:
    gpus = ", ".join(g["name"] for g in m.get("gpus") or []) or "no GPU"
    pk = m.get("packages", {})
    load = m.get("load_average")
    load_s = f"; load avg {load[0]:.1f} at start" if load else ""
    return (f"{m.get('cpu')} ({m.get('cpus_usable')} usable cores){load_s}; {gpus}; "
            f"numpy {pk.get('numpy')}, opencv {pk.get('opencv')}, onnxruntime {pk.get('onnxruntime')}, "
            f"mediapipe {pk.get('mediapipe')}, av {pk.get('av')}, torch {pk.get('torch')}")


# ---------------------------------------------------------------------------- resource monitor

class GpuMemory:
    """Peak GPU memory of this process during a region, from the best source available:
    NVML (nvidia-ml-py), else `nvidia-smi` (sampled at most twice a second), both counting every
    backend's memory; else PyTorch's allocator peak (the torch backend's tensors only).
    `sample()` gives None where nothing is known (no GPU, or nothing allocated through torch)."""

    SMI_INTERVAL_S = 0.5

    def __init__(self, device: str | None):
        self.device = device
        self.index = int(device.split(":", 1)[1]) if device and ":" in device else 0
        self.kind = None
        self._nvml = None
        self._smi = None
        self._smi_last = (0.0, None)
        if device is not None and device == "cpu":
            return
        try:
            import pynvml  # nvidia-ml-py
            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self.kind = "nvml_process_used"
            return
        except Exception:  # noqa: BLE001
            self._nvml = None
        self._smi = shutil.which("nvidia-smi")
        if self._smi:
            self.kind = "nvidia_smi_process_used"
        elif torch_cuda_available():
            self.kind = "torch_max_allocated"

    def reset(self) -> None:
        if self.kind == "torch_max_allocated":
            import torch
            torch.cuda.reset_peak_memory_stats(self.index)

    def sample(self) -> float | None:
        pid = os.getpid()
        if self.kind == "nvml_process_used":
            try:
                procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
                used = sum(p.usedGpuMemory or 0 for p in procs if p.pid == pid)
                return used / 2**20 if used else None
            except Exception:  # noqa: BLE001
                return None
        if self.kind == "nvidia_smi_process_used":
            last_t, last_v = self._smi_last
            if time.monotonic() - last_t < self.SMI_INTERVAL_S:
                return last_v
            value = None
            try:
                out = subprocess.run([self._smi, "--query-compute-apps=pid,used_memory",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                     timeout=5).stdout
                used = [float(parts[1]) for parts in (line.split(",") for line in out.splitlines())
                        if len(parts) >= 2 and parts[0].strip() == str(pid) and _num(parts[1]) is not None]
                value = sum(used) if used else None
            except Exception:  # noqa: BLE001
                value = None
            self._smi_last = (time.monotonic(), value)
            return value
        if self.kind == "torch_max_allocated":
            import torch
            used = torch.cuda.max_memory_allocated(self.index) / 2**20
            return used or None
        return None


def rss_mb() -> float | None:
    """The process's resident memory now, MB (None when unknown)."""
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        return None


class ResourceMonitor:
    """CPU time / wall time, peak RSS (sampled on a thread) and peak GPU memory of a region.

    cpu_pct is the process's CPU time over wall time (100 = one core busy; all threads,
    including FFmpeg's and ONNX Runtime's); other_cores_busy is what the rest of the machine
    used meanwhile (background load makes every number noisier).
    """

    def __init__(self, interval_s: float = 0.02, gpu_device: str | None = None):
        self.interval_s = interval_s
        self.gpu = GpuMemory(gpu_device) if gpu_device is not None and gpu_device != "cpu" else None
        self.result: dict = {}
        self._stop = threading.Event()
        try:
            import psutil
            self._ps = psutil
            self._proc = psutil.Process()
        except ImportError:
            self._ps = None
            self._proc = None

    def _rss_mb(self) -> float | None:
        if self._proc is not None:
            return self._proc.memory_info().rss / 2**20
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError, AttributeError):
            return None

    def _cpu_s(self) -> float:
        if self._proc is not None:
            t = self._proc.cpu_times()
            return t.user + t.system
        t = os.times()
        return t.user + t.system

    def _sampler(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        rss = self._rss_mb()
        if rss is not None:
            self.peak_rss = max(self.peak_rss or 0.0, rss)
        if self.gpu is not None:
            g = self.gpu.sample()
            if g is not None:
                self.peak_gpu = max(self.peak_gpu or 0.0, g)

    def __enter__(self):
        self.peak_rss = None
        self.peak_gpu = None
        if self.gpu is not None:
            self.gpu.reset()
        self.rss_start = self._rss_mb()
        if self._ps is not None:
            self._ps.cpu_percent(None)   # starts the system-wide measurement interval
        self._cpu0 = self._cpu_s()
        self._t0 = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._sampler, name="bench-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self._t0
        cpu = self._cpu_s() - self._cpu0
        self._stop.set()
        self._thread.join()
        self._sample()
        ncpu = os.cpu_count() or 1
        cpu_pct = 100.0 * cpu / wall if wall > 0 else None
        other = None
        if self._ps is not None and cpu_pct is not None:
            system_busy = self._ps.cpu_percent(None) / 100.0 * ncpu
            other = max(0.0, system_busy - cpu_pct / 100.0)
        if self._ps is None:
            import resource
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # lifetime peak
            self.peak_rss = max(self.peak_rss or 0.0, peak)
        self.result = {
            "wall_s": wall, "cpu_s": cpu, "cpu_pct": cpu_pct,
            "peak_rss_mb": self.peak_rss, "rss_start_mb": self.rss_start,
            "rss_delta_mb": (self.peak_rss - self.rss_start) if self.peak_rss is not None
            and self.rss_start is not None else None,
            "other_cores_busy": other,
            "gpu_mem_peak_mb": self.peak_gpu,
            "gpu_mem_kind": self.gpu.kind if self.gpu is not None else None,
        }
        return False


# ------------------------------------------------------------------------------------- markdown

def md_table(headers: list[str], rows: list[list], align: list[str] | None = None) -> str:
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def markdown_tail(result: dict, more_notes: Iterable[str] = ()) -> list[str]:
    """The "Notes" and "Plots" sections that end every benchmark's Markdown (left out when empty)."""
    notes = list(result.get("notes") or []) + list(more_notes)
    plots = result["files"].get("plots")
    lines = []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return lines


# ---------------------------------------------------------------------------------------- plots

def pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


PLOTS_MISSING = "matplotlib is not installed: no plots (pip install matplotlib, or the [bench] extra)"


def save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


# -------------------------------------------------------------------------------------- compare

def _key_text(key: dict) -> str:
    return " ".join(f"{v}" for v in key.values() if v not in (None, ""))


def compare(path_a: str, path_b: str) -> str:
    """Side-by-side table of two results files of the same benchmark: A, B and B/A per metric
    of every configuration present in both."""
    a, b = load_result(path_a), load_result(path_b)
    if a["benchmark"] != b["benchmark"]:
        raise BenchError(f"cannot compare a {a['benchmark']} result with a {b['benchmark']} result")
    rows_a = {json.dumps(r["key"], sort_keys=True): r for r in a["rows"]}
    rows_b = {json.dumps(r["key"], sort_keys=True): r for r in b["rows"]}
    keys = {k: r["key"] for k, r in list(rows_a.items()) + list(rows_b.items())}
    common = [k for k in rows_a if k in rows_b]
    lines = [f"# Compare {a['benchmark']}: A = {path_a}, B = {path_b}", ""]
    for tag, d in (("A", a), ("B", b)):
        m = d.get("machine") or {}
        lines.append(f"- {tag}: {d.get('created', '?')} on {machine_line(m) if m else '?'}")
    lines.append("")
    if not common:
        lines.append("No configuration is present in both files (keys differ).")
        only = sorted(set(rows_a) ^ set(rows_b))
        for k in only[:20]:
            lines.append(f"- only in {'A' if k in rows_a else 'B'}: {_key_text(keys[k])}")
        return "\n".join(lines)
    table = []
    for k in common:
        ma, mb = rows_a[k].get("metrics", {}), rows_b[k].get("metrics", {})
        for metric in [m for m in ma if m in mb]:
            va, vb = ma[metric], mb[metric]
            if not isinstance(va, (int, float)) and va is not None:
                continue
            r = ratio(vb, va)
            table.append([_key_text(keys[k]), metric, fmt(va, 2), fmt(vb, 2),
                          "–" if r is None else f"{r:.2f}×"])
    lines.append(md_table(["configuration", "metric", "A", "B", "B/A"], table, ["l", "l", "r", "r", "r"]))
    missing = len(set(rows_a) ^ set(rows_b))
    if missing:
        lines.append("")
        lines.append(f"{missing} configuration(s) present in only one file were left out.")
    return "\n".join(lines)


def add_output_arguments(group, no_plots_help: str, verbose: bool = True) -> None:
    """Where and how a benchmark reports: --out, --overwrite, --no-plots, --quiet and, for those
    that load mediapipe or ONNX Runtime (whose native logs are silenced by default), --verbose."""
    group.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<timestamp>/)")
    group.add_argument("--overwrite", action="store_true", help="allow an existing non-empty --out")
    group.add_argument("--no-plots", action="store_true", help=no_plots_help)
    group.add_argument("--json", type=Path, metavar="PATH",
                       help="also write the results JSON here (e.g. benchmarks/reports/perf/*.json, "
                            "which python -m benchmarks.figures renders into the README's tables)")
    group.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    if verbose:
        group.add_argument("--verbose", action="store_true", help="show native library logging")


def add_compare_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                        help="print two results files of this benchmark side by side (B/A ratios) and exit")


class NullSink:
    """A sink that discards frames: the benchmarks' runs without encoding."""

    description = "null"

    def open(self, info):
        pass

    def write(self, frame, image):
        pass

    def close(self):
        pass
