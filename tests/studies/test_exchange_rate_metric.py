"""The exchange-rate metric (moon_rec.metrics.exchange)."""

from __future__ import annotations

import math

import pytest

from moon_rec.metrics.exchange import exchange_rate, exchange_rate_table, metric_exchange


def test_exchange_rate_formula_and_undefined_cases() -> None:
    assert exchange_rate(0.72, 0.70, 0.5, 0.1) == pytest.approx(0.05)
    assert exchange_rate(0.68, 0.70, 0.5, 0.1) == pytest.approx(-0.05)
    assert exchange_rate(0.72, 0.70, 0.3, 0.3) is None  # the metric did not move
    assert exchange_rate(0.72, 0.70, float("nan"), 0.3) is None


def _rows() -> dict[str, dict[str, float | None]]:
    # "good" tracks AUC exactly (linear), "noisy" is out of order, "flat" never moves
    return {
        "v0": {"auc": 0.70, "good": 0.10, "noisy": 0.5, "flat": 1.0},
        "v1": {"auc": 0.71, "good": 0.20, "noisy": 0.2, "flat": 1.0},
        "v2": {"auc": 0.72, "good": 0.30, "noisy": 0.9, "flat": 1.0},
        "v3": {"auc": 0.74, "good": 0.50, "noisy": 0.1, "flat": 1.0},
        "v4": {"auc": 0.75, "good": 0.60, "noisy": None, "flat": 1.0},
    }


def test_table_uses_weakest_version_and_names_the_best_metric() -> None:
    table = exchange_rate_table(_rows(), ["noisy", "good", "flat"])
    assert table["baseline"] == "v0"
    good = table["metrics"]["good"]
    assert good["rates"] == pytest.approx({"v1": 0.1, "v2": 0.1, "v3": 0.1, "v4": 0.1})
    assert good["rate_median"] == pytest.approx(0.1)
    assert good["rate_iqr"] == pytest.approx(0.0)
    assert good["slope"] == pytest.approx(0.1)
    assert good["spearman"] == pytest.approx(1.0)
    assert good["kendall"] == pytest.approx(1.0)
    noisy = table["metrics"]["noisy"]
    assert noisy["n_versions"] == 4  # v4 has no value and is left out
    assert noisy["spearman"] < 0.5
    flat = table["metrics"]["flat"]
    assert all(r is None for r in flat["rates"].values())
    assert flat["spearman"] is None and flat["rate_median"] is None
    assert table["best"] == "good"
    assert table["ranking"][0] == "good" and table["ranking"][-1] == "flat"


def test_explicit_baseline_and_errors() -> None:
    table = exchange_rate_table(_rows(), ["good"], baseline="v4")
    assert table["baseline"] == "v4"
    assert table["metrics"]["good"]["rates"]["v0"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="baseline"):
        exchange_rate_table(_rows(), ["good"], baseline="nope")
    with pytest.raises(ValueError, match="finite"):
        exchange_rate_table({"a": {"auc": None, "m": 1.0}}, ["m"])


def test_alternative_auc_key() -> None:
    rows = {k: {**v, "auc_cold": 1.0 - float(v["auc"] or 0)} for k, v in _rows().items()}
    s = metric_exchange(rows, "good", "v0", auc_key="auc_cold")
    assert s["spearman"] == pytest.approx(-1.0)
    assert not math.isnan(s["slope"])
