"""stream.running_stats: bounded statistics for runs of any length (a webcam left on for a month)."""
import numpy as np
import pytest

from stream.running_stats import RunningStats


def test_memory_stays_constant_however_many_values():
    stats = RunningStats(capacity=512)
    for value in range(1_000):
        stats.add(value)
    size_after_1k = stats.nbytes
    for value in range(200_000):
        stats.add(value)
    assert stats.nbytes == size_after_1k and stats.count == 201_000
    assert len(stats.samples()) == 512


def test_mean_is_exact_and_percentiles_match_numpy():
    data = np.random.default_rng(1).lognormal(3.0, 0.6, size=300_000)   # latency-like, skewed
    stats = RunningStats(capacity=4096)
    for value in data:
        stats.add(value)
    assert stats.mean == pytest.approx(float(np.mean(data)), rel=1e-9)
    assert stats.min == data.min() and stats.max == data.max()
    for q in (50, 95, 99):
        # A 4096-sample reservoir: the rank error's standard deviation is under 0.35 points at
        # these percentiles, so +-1.5 points is more than 4 sigma.
        low, high = np.percentile(data, [q - 1.5, min(q + 1.5, 100)])
        assert low <= stats.percentile(q) <= high, q


def test_short_runs_are_exact():
    data = np.random.default_rng(2).normal(10, 2, size=1_000)
    stats = RunningStats(capacity=4096)
    for value in data:
        stats.add(value)
    for q in (5, 50, 95, 99):
        assert stats.percentile(q) == pytest.approx(float(np.percentile(data, q)))


def test_empty_statistics():
    stats = RunningStats()
    assert stats.count == 0 and stats.mean is None and stats.percentile(50) is None
