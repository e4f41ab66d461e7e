"""Write assets/before_after.png: a frame of the bundled sample, before and after Unmask.

    python assets/make_readme_figure.py [--frame 100] [--method auto]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", type=Path, default=ROOT / "assets" / "sample.mp4")
    ap.add_argument("--frame", type=int, default=100)
    ap.add_argument("--method", default="auto")
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "before_after.png")
    args = ap.parse_args()
    from stream import Unmasker
    with Unmasker(method=args.method) as um, av.open(str(args.source)) as c:
        for i, f in enumerate(c.decode(video=0)):
            img = f.to_ndarray(format="bgr24")
            res = um.process(img, timestamp_ms=float(f.pts * f.time_base * 1000))
            if i == args.frame:
                break
    if not res.faces:
        print("error: no face in that frame", file=sys.stderr)
        return 1
    x0, y0, x1, y1 = res.faces[0].box
    cx, cy, half = (x0 + x1) // 2, (y0 + y1) // 2, int(max(x1 - x0, y1 - y0) * 0.9)
    crop = lambda im: im[max(cy - half, 0):cy + half, max(cx - half, 0):cx + half]
    before, after = crop(img), crop(res.image)
    side = 360
    pair = np.hstack([cv2.resize(before, (side, side)), np.full((side, 8, 3), 255, np.uint8),
                      cv2.resize(after, (side, side))])
    for text, x in (("input", 8), (f"Unmask ({um.method})", side + 16)):
        cv2.putText(pair, text, (x, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    cv2.imwrite(str(args.out), pair)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
