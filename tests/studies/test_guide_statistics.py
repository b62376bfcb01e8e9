"""The exchange-rate statistics on planted data: a metric planted to track AUC is named the
best guide with intervals that exclude zero; a metric planted as noise gets intervals that
include zero; the seed level of the bootstrap widens the intervals when seeds disagree."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from moon_rec.metrics.exchange import (
    BootstrapSpec,
    exchange_rate_table,
    excludes_zero,
    resample_versions,
)

SPEC = BootstrapSpec(n_resamples=400, seed=0)


def planted(seed: int, n: int = 12, seeds: int = 3, seed_std: float = 0.001,
            ) -> dict[str, dict[str, Any]]:
    """n versions whose true AUC rises with a hidden quality; ``track`` is that quality
    plus a little noise, ``noise`` is independent of it."""
    rng = np.random.default_rng(seed)
    quality = rng.permutation(np.linspace(0.0, 1.0, n))
    auc = 0.70 + 0.03 * quality[:, None] + rng.normal(0.0, seed_std, (n, seeds))
    track = quality + rng.normal(0.0, 0.05, n)
    noise = rng.random(n)
    return {f"v{i:02d}": {"auc": float(auc[i].mean()), "auc_seeds": auc[i].tolist(),
                          "track": float(track[i]), "noise": float(noise[i])}
            for i in range(n)}


def test_planted_tracker_is_best_and_noise_is_not_told_apart_from_zero() -> None:
    table = exchange_rate_table(planted(1), ["noise", "track"], seeds_key="auc_seeds",
                                bootstrap=SPEC)
    assert table["best"] == "track" and table["ranking"] == ["track", "noise"]
    track, noise = table["metrics"]["track"], table["metrics"]["noise"]
    for key in ("spearman_ci", "kendall_ci", "slope_ci"):
        assert excludes_zero(track[key]), (key, track[key])
        assert track[key][0] > 0
        assert not excludes_zero(noise[key]), (key, noise[key])
    # point estimates inside their intervals (not the tracker's Spearman of 1: at the top of
    # its range, where seed resampling can only pull it down)
    assert noise["spearman_ci"][0] <= noise["spearman"] <= noise["spearman_ci"][1]
    for s in (track, noise):
        assert s["slope_ci"][0] <= s["slope"] <= s["slope_ci"][1]
    # the planted rate: AUC = 0.70 + 0.03 quality, so about 0.03 AUC per unit
    assert track["slope_ci"][0] < 0.03 < track["slope_ci"][1]
    assert excludes_zero(table["best_gap"]["noise"])  # the tracker is really ahead
    assert table["seeds_per_version"]["v00"] == 3
    assert table["bootstrap"]["n_resamples"] == SPEC.n_resamples


def test_noise_interval_includes_zero_across_planted_worlds() -> None:
    covered = 0
    for seed in range(10):
        table = exchange_rate_table(planted(seed), ["noise", "track"], seeds_key="auc_seeds",
                                    bootstrap=BootstrapSpec(n_resamples=200, seed=seed))
        assert table["best"] == "track"
        assert table["metrics"]["track"]["spearman_ci"][0] > 0
        covered += not excludes_zero(table["metrics"]["noise"]["spearman_ci"])
    assert covered >= 8  # a 95% interval, 10 worlds


def test_seed_noise_widens_the_intervals() -> None:
    noisy = planted(3, seed_std=0.02)  # seeds disagree by about the whole AUC range
    means_only = {n: {k: v for k, v in r.items() if k != "auc_seeds"} for n, r in noisy.items()}
    two_level = exchange_rate_table(noisy, ["track"], seeds_key="auc_seeds", bootstrap=SPEC)
    one_level = exchange_rate_table(means_only, ["track"], seeds_key="auc_seeds", bootstrap=SPEC)
    w2 = np.diff(two_level["metrics"]["track"]["spearman_ci"])[0]
    w1 = np.diff(one_level["metrics"]["track"]["spearman_ci"])[0]
    assert w2 > w1
    assert one_level["seeds_per_version"]["v00"] == 1


def test_resample_versions_draws_versions_then_seeds() -> None:
    pick, auc = resample_versions([[0.5], [0.6, 0.8]], BootstrapSpec(n_resamples=300))
    assert pick.shape == auc.shape == (300, 2)
    assert np.all(auc[pick == 0] == 0.5)  # one seed: always its AUC
    second = auc[pick == 1]
    assert set(np.round(second, 6)) <= {0.6, 0.7, 0.8} and len(set(np.round(second, 6))) == 3
    with pytest.raises(ValueError, match="at least one"):
        resample_versions([[0.5], []], SPEC)


def test_too_few_versions_give_no_interval() -> None:
    rows = {"a": {"auc": 0.7, "m": 0.1}, "b": {"auc": 0.71, "m": 0.2}}
    table = exchange_rate_table(rows, ["m"], bootstrap=SPEC)
    s = table["metrics"]["m"]
    assert s["spearman"] is None and s["spearman_ci"] is None and table["best"] is None
