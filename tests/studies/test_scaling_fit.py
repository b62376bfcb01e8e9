"""Power law with offset: the fit recovers known curves, CIs, where returns flatten, and
says "not identified" (with the reason) when the points cannot pin the exponent down."""

from __future__ import annotations

import numpy as np
import pytest

from moon_rec.studies.scaling import fit_band, fit_power_law, power_law


def test_recovers_a_planted_power_law_within_its_intervals() -> None:
    x = np.geomspace(100, 100 * 10 ** 2.1, 7)  # 7 points over 2.1 decades
    a, b, c = 0.9, 0.5, 0.6
    rng = np.random.default_rng(0)
    y = power_law(x / x.min(), a, b, c) + rng.normal(0, 0.002, len(x))
    fit = fit_power_law(x, y)
    assert fit["ok"] and fit["dof"] == 4 and fit["identified"], fit["reason"]
    assert fit["reason"] is None and fit["decades"] == pytest.approx(2.1)
    for name, true in (("a", a), ("b", b), ("c", c)):
        lo, hi = fit["ci"][name]
        assert lo <= true <= hi, (name, lo, true, hi)
        assert np.isfinite(lo) and np.isfinite(hi) and hi - lo < 1.0
    assert fit["c"] == pytest.approx(c, abs=0.15)
    # returns flatten where a doubling gains < 0.005: b (1 - 2^-c) (x/x0)^-c = 0.005
    want = x.min() * (b * (1 - 2 ** -c) / 0.005) ** (1 / c)
    assert fit["x_flat"] == pytest.approx(want, rel=0.6)
    assert 0 < fit["gain_next_doubling"] < 0.1
    curve, lower, upper = fit_band(fit, x)
    assert np.all(lower <= curve + 1e-12) and np.all(curve <= upper + 1e-12)


def test_too_few_points_or_too_narrow_a_range_is_not_identified() -> None:
    a, b, c = 0.9, 0.5, 0.6
    few = np.geomspace(100, 100_000, 4)  # 3 decades, 4 points
    fit = fit_power_law(few, power_law(few / 100, a, b, c))
    assert fit["ok"] and not fit["identified"] and "fewer than 5" in fit["reason"]
    narrow = np.geomspace(100, 2000, 6)  # 1.3 decades, 6 points
    rng = np.random.default_rng(1)
    fit = fit_power_law(narrow, power_law(narrow / 100, a, b, c) + rng.normal(0, 0.002, 6))
    assert fit["ok"] and not fit["identified"] and "under 1.5" in fit["reason"]
    assert fit["decades"] == pytest.approx(np.log10(20))


def test_flat_noise_is_not_identified() -> None:
    x = np.geomspace(10, 10_000, 8)
    y = 0.73 + np.random.default_rng(2).normal(0, 0.0003, len(x))  # no law at all
    fit = fit_power_law(x, y)
    assert not fit["identified"]
    assert "bound" in fit["reason"] or "includes 0" in fit["reason"] or "infinite" in fit["reason"]


def test_decreasing_quality_and_too_few_points() -> None:
    x = np.array([1, 2, 4, 8, 16], dtype=float)
    fit = fit_power_law(x, power_law(x, 0.5, -0.2, 0.7))  # falls towards 0.5
    assert fit["ok"] and fit["b"] < 0 and fit["x_flat"] is None
    assert "does not rise" in fit["note"]
    bad = fit_power_law([1, 2], [0.1, 0.2])
    assert not bad["ok"] and "need >= 3" in bad["error"] and not bad["identified"]


def test_exactly_three_points_has_no_intervals() -> None:
    x = np.array([10, 20, 40], dtype=float)
    fit = fit_power_law(x, power_law(x / 10, 0.8, 0.3, 1.0))
    assert fit["ok"] and fit["dof"] == 0 and not fit["identified"]
    assert fit["ci"]["a"] is None and "infinite" in fit["reason"]
    curve, lower, upper = fit_band(fit, x)
    assert np.array_equal(curve, lower) and np.array_equal(curve, upper)
