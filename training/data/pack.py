"""Pack the prepared training cache into small archives to carry to a lent GPU, and back.

    python -m training.data.pack   [--cache data/cache] [--out data/carry] [--part-mib 60]
    python -m training.data.pack --unpack [--out data/carry] [--cache data/cache]

The device tool carries at most 64 MiB per call, so the crops are re-encoded as
WebP (quality 85, about a third of the JPEG size) and split into numbered
tar parts of at most --part-mib MiB; meta.npz, the real-photo segmentation
cache and the mask templates go in part 0. Unpacking writes them back as the
JPEG/PNG files `training.data.dataset` reads. Nothing here is committed: the
archives hold non-commercial research data and live in the ignored data/.
"""
from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def pack(cache: Path, out: Path, part_mib: float = 60.0, templates: Path | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    limit = int(part_mib * 2**20)
    parts: list[Path] = []

    def new_part():
        path = out / f"cache_part{len(parts):03d}.tar"
        parts.append(path)
        return tarfile.open(path, "w"), 0

    tar, size = new_part()
    if templates is not None and templates.exists():
        tar.add(templates, arcname="templates")
        size += sum(p.stat().st_size + 512 for p in templates.rglob("*") if p.is_file())
    files = [(cache / "meta.npz", "meta.npz")]
    files += [(p, str(p.relative_to(cache))) for sub in ("realseg", "parsing")
              for p in sorted((cache / sub).glob("*")) if p.is_file()]
    files += [(p, f"crops/{p.stem}.webp") for p in sorted((cache / "crops").glob("*.jpg"))]
    for path, name in files:
        if name.endswith(".webp"):
            img = cv2.imread(str(path))
            data = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 85])[1].tobytes()
        else:
            data = path.read_bytes()
        if size + len(data) + 1024 > limit and size > 0:
            tar.close()
            tar, size = new_part()
        _add_bytes(tar, name, data)
        size += len(data) + 512
    tar.close()
    return parts


def unpack(parts_dir: Path, cache: Path) -> int:
    n = 0
    (cache / "crops").mkdir(parents=True, exist_ok=True)
    for part in sorted(parts_dir.glob("cache_part*.tar")):
        with tarfile.open(part) as tar:
            for member in tar.getmembers():
                if member.name.startswith("crops/") and member.name.endswith(".webp"):
                    data = np.frombuffer(tar.extractfile(member).read(), np.uint8)
                    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
                    cv2.imwrite(str(cache / "crops" / (Path(member.name).stem + ".jpg")), img,
                                [cv2.IMWRITE_JPEG_QUALITY, 95])
                    n += 1
                elif member.name.startswith("templates"):
                    tar.extract(member, ROOT / "data" / "raw" / "maskthefacetemplates", filter="data")
                else:
                    tar.extract(member, cache, filter="data")
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=ROOT / "data" / "cache")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "carry")
    ap.add_argument("--part-mib", type=float, default=60.0)
    ap.add_argument("--unpack", action="store_true")
    args = ap.parse_args(argv)
    if args.unpack:
        if not any(args.out.glob("cache_part*.tar")):
            print(f"error: no cache_part*.tar in {args.out}", file=sys.stderr)
            return 2
        print(f"unpacked {unpack(args.out, args.cache)} crops into {args.cache}")
        return 0
    if not (args.cache / "meta.npz").exists():
        print(f"error: no prepared cache in {args.cache}; run python -m training.data.prepare", file=sys.stderr)
        return 2
    parts = pack(args.cache, args.out, args.part_mib, ROOT / "data" / "raw" / "maskthefacetemplates")
    for p in parts:
        print(f"{p} {p.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
