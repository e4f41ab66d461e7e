"""Carrying the training cache to a lent GPU: parts stay under the limit and round-trip."""
import numpy as np
import cv2

from training.data.pack import pack, unpack


def test_pack_splits_into_small_parts_and_unpacks_to_the_same_crops(tmp_path):
    cache = tmp_path / "cache"
    (cache / "crops").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):   # noisy images compress badly: several parts at a 0.2 MiB limit
        img = cv2.GaussianBlur(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), (3, 3), 0)
        cv2.imwrite(str(cache / "crops" / f"face_{i:02d}.jpg"), img)
    np.savez(cache / "meta.npz", keys=np.array([f"face_{i:02d}" for i in range(12)]))
    parts = pack(cache, tmp_path / "carry", part_mib=0.2)
    assert len(parts) > 1
    assert all(p.stat().st_size <= 0.2 * 2**20 + 4096 for p in parts)
    restored = tmp_path / "restored"
    assert unpack(tmp_path / "carry", restored) == 12
    assert (restored / "meta.npz").exists()
    for i in range(12):
        a = cv2.imread(str(cache / "crops" / f"face_{i:02d}.jpg")).astype(int)
        b = cv2.imread(str(restored / "crops" / f"face_{i:02d}.jpg")).astype(int)
        assert np.abs(a - b).mean() < 12          # lossy, but the same picture
