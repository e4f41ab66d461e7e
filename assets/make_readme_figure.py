"""Write assets/before_after.png: a frame of the bundled sample, before and after Unmask.

    python assets/make_readme_figure.py [--frame 100]

Kept for old instructions: the figure is made by `python -m benchmarks.figures before-after`.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if __name__ == "__main__":
    from benchmarks.figures import main
    sys.exit(main(["before-after", *sys.argv[1:]]))
