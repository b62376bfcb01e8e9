"""Power law with offset: the fit recovers known curves, CIs, and where returns flatten."""

from __future__ import annotations

import numpy as np
import pytest

from moon_rec.studies.scaling import fit_band, fit_power_law, power_law


def test_recovers_a_known_power_law_with_intervals() -> None:
    x = np.array([100, 200, 400, 800, 1600, 3200], dtype=float)
    a, b, c = 0.9, 0.5, 0.6
    rng = np.random.default_rng(0)
    y = power_law(x / x.min(), a, b, c) + rng.normal(0, 0.002, len(x))
    fit = fit_power_law(x, y)
    assert fit["ok"] and fit["dof"] == 3
    assert fit["a"] == pytest.approx(a, abs=0.03)
    assert fit["c"] == pytest.approx(c, abs=0.15)
    lo, hi = fit["ci"]["a"]
    assert lo <= a <= hi
    # returns flatten where a doubling gains < 0.005: b (1 - 2^-c) (x/x0)^-c = 0.005
    want = x.min() * (b * (1 - 2 ** -c) / 0.005) ** (1 / c)
    assert fit["x_flat"] == pytest.approx(want, rel=0.6)
    assert 0 < fit["gain_next_doubling"] < 0.1
    curve, lower, upper = fit_band(fit, x)
    assert np.all(lower <= curve + 1e-12) and np.all(curve <= upper + 1e-12)


def test_decreasing_quality_and_too_few_points() -> None:
    x = np.array([1, 2, 4, 8, 16], dtype=float)
    fit = fit_power_law(x, power_law(x, 0.5, -0.2, 0.7))  # falls towards 0.5
    assert fit["ok"] and fit["b"] < 0 and fit["x_flat"] is None
    assert "does not rise" in fit["note"]
    bad = fit_power_law([1, 2], [0.1, 0.2])
    assert not bad["ok"] and "need >= 3" in bad["error"]


def test_exactly_three_points_has_no_intervals() -> None:
    x = np.array([10, 20, 40], dtype=float)
    fit = fit_power_law(x, power_law(x / 10, 0.8, 0.3, 1.0))
    assert fit["ok"] and fit["dof"] == 0
    assert fit["ci"]["a"] is None
