"""Align the 450 hand-labelled MaskedFace-Net photos to the canonical crop.

    python -m training.data.realseg

Faces are found with mediapipe's face mesh on the *masked* photo (as the stream
does); photos where it finds none are listed and skipped. A deterministic 80/20
split by file name gives a `train` fold (segmentation fine-tuning) and an
`eval` fold that training never sees.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import cv2
import numpy as np

from stream.alignment import CANONICAL_SIZE, align_face

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    import mediapipe as mp
    src = next((ROOT / "data" / "raw" / "maskedface_seg_train_384").rglob("CWM")).parent
    out = ROOT / "data" / "cache" / "realseg"
    out.mkdir(parents=True, exist_ok=True)
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                           min_detection_confidence=0.3)
    keys, folds, missed = [], [], 0
    for p in sorted(src.glob("*/images/*.jpg")):
        label = p.parent.parent / "masks" / f"{p.stem}_gt.png"
        img = cv2.imread(str(p))
        lab = cv2.imread(str(label))
        if img is None or lab is None:
            continue
        res = mesh.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        if not res.multi_face_landmarks:
            missed += 1
            continue
        h, w = img.shape[:2]
        lm = np.array([(q.x * w, q.y * h) for q in res.multi_face_landmarks[0].landmark], np.float32)
        al = align_face(lm)
        # Label colours: BGR (0,128,0) = mask.
        mask = ((lab[..., 1] > 64) & (lab[..., 2] < 64) & (lab[..., 0] < 64)).astype(np.uint8) * 255
        key = f"{p.parent.parent.name}_{p.stem}"
        cv2.imwrite(str(out / f"{key}.jpg"), al.crop(img), [cv2.IMWRITE_JPEG_QUALITY, 95])
        mask_c = cv2.warpAffine(mask, al.matrix, (CANONICAL_SIZE, CANONICAL_SIZE),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        cv2.imwrite(str(out / f"{key}_mask.png"), ((mask_c > 127) * 255).astype(np.uint8))
        keys.append(key)
        folds.append("eval" if int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 5 == 0 else "train")
    np.savez(out / "meta.npz", keys=np.array(keys), fold=np.array(folds))
    print(f"aligned {len(keys)} labelled photos ({folds.count('eval')} in the eval fold); "
          f"face mesh missed {missed}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
