import numpy as np

from stream.smoothing import LandmarkSmoother, MaskSmoother, OneEuroFilter


def test_one_euro_is_identity_on_a_constant_signal():
    f = OneEuroFilter()
    x = np.array([[3.0, 4.0]])
    for i in range(10):
        y = f(x, i / 30)
    np.testing.assert_allclose(y, x)


def test_one_euro_removes_jitter_of_a_still_point():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    raw = 100 + rng.normal(0, 1.0, (120, 1))
    out = np.array([f(v, i / 30)[0] for i, v in enumerate(raw)])
    assert out[30:].std() < 0.4 * raw[30:].std()


def test_one_euro_follows_fast_motion_with_little_lag_when_beta_is_high():
    lagging, following = OneEuroFilter(1.0, beta=0.0), OneEuroFilter(1.0, beta=5.0)
    t = np.arange(30) / 30
    pos = 300 * t  # 300 units/s
    slow = [lagging(np.array([p]), s)[0] for p, s in zip(pos, t)]
    fast = [following(np.array([p]), s)[0] for p, s in zip(pos, t)]
    assert abs(pos[-1] - fast[-1]) < 0.25 * abs(pos[-1] - slow[-1])


def test_one_euro_reset_forgets_the_past():
    f = OneEuroFilter()
    f(np.array([0.0]), 0.0)
    f(np.array([0.0]), 0.1)
    f.reset()
    np.testing.assert_allclose(f(np.array([50.0]), 0.2), [50.0])


def test_landmark_smoother_is_scale_invariant():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, (468, 2))
    noise = rng.normal(0, 0.01, (60, 468, 2))
    small, big = LandmarkSmoother(), LandmarkSmoother()
    for i in range(60):
        a = small((base + noise[i]) * 100, i / 30)
        b = big((base + noise[i]) * 1000, i / 30)
    np.testing.assert_allclose(b, a * 10, rtol=1e-3, atol=1e-2)


def test_mask_smoother_hysteresis_and_ema():
    sm = MaskSmoother(alpha=1.0, on=0.6, off=0.4)  # alpha 1: no EMA, hysteresis only
    p, m = sm(np.array([[0.0, 1.0]]))
    assert m.tolist() == [[False, True]]
    p, m = sm(np.array([[0.55, 0.45]]))   # inside the dead band: both keep their state
    assert m.tolist() == [[False, True]]
    p, m = sm(np.array([[0.65, 0.35]]))   # both cross: both flip
    assert m.tolist() == [[True, False]]
    ema = MaskSmoother(alpha=0.5)
    ema(np.zeros((1, 1)))
    p, _ = ema(np.ones((1, 1)))
    assert abs(p[0, 0] - 0.5) < 1e-6
    ema.reset()
    p, m = ema(np.ones((1, 1)))
    assert p[0, 0] == 1.0 and m[0, 0]
