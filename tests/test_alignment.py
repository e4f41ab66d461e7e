import numpy as np

from stream.alignment import Alignment, align_face, fit_similarity, load_canonical_shape, transform_points


def similarity(angle_deg, scale, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx],
                     [scale * np.sin(a), scale * np.cos(a), ty]])


def test_fit_similarity_recovers_a_known_transform_exactly():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, (40, 2))
    m = similarity(17, 0.6, 30, -12)
    dst = transform_points(src, m)
    np.testing.assert_allclose(fit_similarity(src, dst), m, atol=1e-4)


def test_fit_similarity_never_reflects():
    src = np.random.default_rng(3).uniform(0, 10, (12, 2))
    m = fit_similarity(src, src * [-1, 1])
    # A similarity: [[a, -b], [b, a]] (rotation and scale, no reflection or shear).
    assert abs(m[0, 0] - m[1, 1]) < 1e-9 and abs(m[0, 1] + m[1, 0]) < 1e-9


def test_canonical_face_aligns_to_identity_and_round_trips():
    canon = load_canonical_shape()
    assert canon.shape == (468, 2)
    al = align_face(canon)
    np.testing.assert_allclose(al.matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-4)
    # A face 3x larger, rotated and moved in a frame maps back onto the canonical crop.
    frame_pts = transform_points(canon, similarity(-25, 3.0, 400, 100))
    al = align_face(frame_pts)
    np.testing.assert_allclose(al.to_crop(frame_pts), canon, atol=1e-3)
    np.testing.assert_allclose(al.to_frame(al.to_crop(frame_pts)), frame_pts, atol=1e-3)
    assert abs(al.scale - 1 / 3.0) < 1e-6


def test_alignment_crop_samples_the_face_region():
    img = np.zeros((300, 300, 3), np.uint8)
    img[100:200, 100:200] = 255
    # Crop pixel (x, y) = frame (x + 100, y + 100) at scale 1.
    al = Alignment(np.array([[1.0, 0, -100], [0, 1.0, -100]]), size=100)
    crop = al.crop(img)
    assert crop.shape == (100, 100, 3)
    assert crop.min() == 255
    half = al.crop(img, size=50)   # the same window at half the resolution
    assert half.shape == (50, 50, 3) and half.min() == 255
