"""The oracle of bench/alerts.py (the upper bound the README's spike-alert figures are read against): its null
distribution against hand-computed values."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

_BENCH = Path(__file__).resolve().parents[2] / "bench" / "alerts.py"
_spec = importlib.util.spec_from_file_location("bench_alerts", _BENCH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_the_oracle_p_value_is_the_binomial_tail_at_the_known_share():
    """Two minutes of 10 posts at a known 10 % share, 3 + 2 angry: the 2-minute window's p-value is
    P(Binomial(20, 0.1) >= 5) = 1 - sum_{j<5} C(20, j) 0.1^j 0.9^(20-j) = 0.0431745..."""
    expected = 1 - sum(math.comb(20, j) * 0.1 ** j * 0.9 ** (20 - j) for j in range(5))
    assert expected == pytest.approx(0.04317450, abs=1e-8)
    p = bench.oracle_pvalues(np.array([10, 10]), np.array([3, 2]), np.array([0.1, 0.1]), [1, 2])
    assert p[2][1] == pytest.approx(expected, rel=1e-9)
    # the 1-minute window at the second minute: P(Binomial(10, 0.1) >= 2) = 1 - 0.9^10 - 10 x 0.1 x 0.9^9
    assert p[1][1] == pytest.approx(1 - 0.9 ** 10 - 0.9 ** 9, rel=1e-9)


def test_the_wander_moments_are_the_lognormals_for_one_minute_and_shrink_with_the_window():
    s = 0.15
    mean, var = bench.wander_moments(s, 1)
    assert mean == pytest.approx(math.exp(s * s / 2)) and var == pytest.approx(math.exp(s * s) * math.expm1(s * s))
    # a 60-minute mean of an AR(1) with 60-minute memory keeps most of the variance, far more than 1/60 of it
    assert var / 60 < bench.wander_moments(s, 60)[1] < var
    # and the oracle without the wander's path is more cautious than the one that knows it: a larger p-value
    posts, angry, share = np.full(30, 20), np.full(30, 2), np.full(30, 0.05)
    known = bench.oracle_pvalues(posts, angry, share, [30])[30][-1]
    unknown = bench.oracle_pvalues(posts, angry, share, [30], wander_sd=s)[30][-1]
    assert known < 1e-2 and unknown > known
