"""The TensorRT engine cache (pure Python; no TensorRT or CUDA import).

An engine is only valid for the exact ONNX file, TensorRT version, GPU model
and build settings it was built with. Each engine is therefore stored under a
key: sha256 over those fields, as canonical JSON

    engines_cache/<name>-<key16>.engine     the serialised engine
    engines_cache/<name>-<key16>.json       the key fields, the full key, the engine's sha256
    engines_cache/timing-<gpu>-<cc>-trt<version>.cache   persistent timing cache

`is_fresh` answers whether an engine for a key exists and is intact; a changed
field gives another key, so stale engines are simply not found (and rebuilt by
export.build_engines, which prunes the stale files of the same model, GPU and
precision). Writes are atomic (temporary file + rename) so a runner starting
while a build finishes never reads half an engine.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from models.checkpoints import file_sha256  # noqa: F401  (the cache keys files by it; one definition)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_DIR = ROOT / "engines_cache"
KEY_VERSION = 1  # bump when the meaning of a field changes


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. `profile` is the (min, opt, max) faces batch."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str     # "8.9"
    precision: str              # "fp16" | "fp32"
    profile: tuple              # (min, opt, max) batch
    workspace_bytes: int

    def __post_init__(self):
        prof = tuple(int(x) for x in self.profile)
        if len(prof) != 3 or not (1 <= prof[0] <= prof[1] <= prof[2]):
            raise ValueError(f"profile must be (min, opt, max) with 1 <= min <= opt <= max, got {self.profile}")
        object.__setattr__(self, "profile", prof)
        object.__setattr__(self, "workspace_bytes", int(self.workspace_bytes))
        object.__setattr__(self, "compute_capability", str(self.compute_capability))
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {self.precision!r}")

    def fields(self) -> dict:
        d = asdict(self)
        d["profile"] = list(self.profile)
        return d

    def digest(self) -> str:
        """sha256 of the canonical JSON of the fields (independent of field order)."""
        payload = json.dumps({"key_version": KEY_VERSION, **self.fields()}, sort_keys=True,
                             separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def short(self) -> str:
        return self.digest()[:16]

    @classmethod
    def from_fields(cls, d: dict) -> "EngineKey":
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "profile" else v) for k, v in d.items() if k in names})


def profile_for(max_batch: int) -> tuple:
    """The optimisation profile over the faces batch: 1 .. max, opt = max // 2 (or 1)."""
    max_batch = int(max_batch)
    if max_batch < 1:
        raise ValueError(f"max batch must be at least 1, got {max_batch}")
    return (1, max(1, max_batch // 2), max_batch)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", str(text)).strip("_") or "unknown"


def atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class EngineCache:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else DEFAULT_CACHE_DIR

    # -- paths ---------------------------------------------------------------------------------

    def engine_path(self, name: str, key: EngineKey) -> Path:
        return self.root / f"{name}-{key.short}.engine"

    def meta_path(self, name: str, key: EngineKey) -> Path:
        return self.engine_path(name, key).with_suffix(".json")

    def timing_cache_path(self, gpu_name: str, compute_capability: str, tensorrt_version: str) -> Path:
        name = f"timing-{_slug(gpu_name)}-sm{_slug(compute_capability)}-trt{_slug(tensorrt_version)}.cache"
        return self.root / name

    # -- engines -------------------------------------------------------------------------------

    def read_meta(self, path: Path) -> dict | None:
        try:
            return json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None

    def is_fresh(self, name: str, key: EngineKey, verify: bool = True) -> bool:
        """True when an intact engine for exactly this key is cached."""
        engine, meta_p = self.engine_path(name, key), self.meta_path(name, key)
        if not engine.exists() or not meta_p.exists():
            return False
        meta = self.read_meta(meta_p)
        if not meta or meta.get("key") != key.digest() or meta.get("fields") != key.fields():
            return False
        if verify and meta.get("engine_sha256") != file_sha256(engine):
            return False
        return True

    def store(self, name: str, key: EngineKey, engine_bytes: bytes, extra: dict | None = None) -> Path:
        """Write the engine, then its JSON (the JSON's presence marks a complete entry)."""
        data = bytes(engine_bytes)
        path = self.engine_path(name, key)
        atomic_write(path, data)
        meta = {"name": name, "key": key.digest(), "fields": key.fields(),
                "engine": path.name, "engine_sha256": hashlib.sha256(data).hexdigest(),
                "engine_bytes": len(data), **(extra or {})}
        atomic_write(self.meta_path(name, key), (json.dumps(meta, indent=2) + "\n").encode())
        return path

    def entries(self, name: str) -> list[tuple[Path, dict]]:
        """(engine path, meta) of every complete entry of model `name`."""
        out = []
        for meta_p in sorted(self.root.glob(f"{name}-*.json")):
            if not re.fullmatch(re.escape(name) + r"-[0-9a-f]{16}\.json", meta_p.name):
                continue  # e.g. inpainter_fast-... while looking for "inpainter"
            meta = self.read_meta(meta_p)
            engine = meta_p.with_suffix(".engine")
            if meta and "fields" in meta and engine.exists():
                out.append((engine, meta))
        return out

    def find(self, name: str, *, onnx_sha256: str, tensorrt_version: str, gpu_name: str,
             compute_capability: str, precision: str, max_batch: int | None = None,
             verify: bool = True) -> tuple[Path, EngineKey] | None:
        """The cached engine for this ONNX / TensorRT / GPU / precision, whatever profile and workspace it
        was built with: the one whose max batch equals `max_batch` if given, else the largest max batch."""
        want = {"onnx_sha256": onnx_sha256, "tensorrt_version": tensorrt_version, "gpu_name": gpu_name,
                "compute_capability": str(compute_capability), "precision": precision}
        best = None
        for engine, meta in self.entries(name):
            f = meta["fields"]
            if any(f.get(k) != v for k, v in want.items()):
                continue
            try:
                key = EngineKey.from_fields(f)
            except (TypeError, ValueError):
                continue
            if max_batch is not None and key.profile[2] != int(max_batch):
                continue
            if not self.is_fresh(name, key, verify=verify):
                continue
            if best is None or key.profile[2] > best[1].profile[2]:
                best = (engine, key)
        return best

    def prune(self, name: str, keep: EngineKey) -> list[Path]:
        """Delete the stale engines of `name` for the same GPU, TensorRT version and precision as `keep`
        (an older ONNX, profile or workspace); engines for other GPUs / precisions stay."""
        removed = []
        same = ("gpu_name", "compute_capability", "tensorrt_version", "precision")
        kf = keep.fields()
        for engine, meta in self.entries(name):
            f = meta["fields"]
            if meta.get("key") == keep.digest() or any(f.get(k) != kf[k] for k in same):
                continue
            for p in (engine, engine.with_suffix(".json")):
                try:
                    p.unlink()
                    removed.append(p)
                except FileNotFoundError:
                    pass
        return removed

    # -- timing cache --------------------------------------------------------------------------

    def load_timing_cache(self, gpu_name: str, compute_capability: str, tensorrt_version: str) -> bytes:
        p = self.timing_cache_path(gpu_name, compute_capability, tensorrt_version)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            return b""

    def save_timing_cache(self, gpu_name: str, compute_capability: str, tensorrt_version: str,
                          data: bytes) -> Path:
        p = self.timing_cache_path(gpu_name, compute_capability, tensorrt_version)
        atomic_write(p, bytes(data))
        return p
