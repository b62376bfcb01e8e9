"""The exchange rate of an intermediate metric (DESIGN section 6, MOON.md "Exchange rate"),
and how far the versions of a study let us trust it.

For encoder versions v against a baseline version b (by default the weakest: lowest AUC),
the pairwise exchange rate of metric m is

    rate_v(m) = (AUC_v - AUC_b) / (m_v - m_b)

i.e. how much downstream ranker AUC one unit of m buys. Pairwise rates explode for
versions whose metric sits near the baseline's, so the headline **exchange rate** is the
least-squares slope of AUC on m over all versions (AUC gain per unit of m).

Every statistic comes with a bootstrap interval (percentile, ``confidence`` level): each
resample draws the versions with replacement and, where a version has AUCs for several
ranker seeds, draws its seeds with replacement too (a two-level bootstrap: versions, then
seeds within a version), so the interval covers both which versions were trained and the
seed-to-seed noise of the ranker. ``scipy.stats.bootstrap`` resamples one level only, hence
the explicit resampler; the statistics themselves are scipy's (``linregress``,
``spearmanr``, ``kendalltau``). All metrics see the same resamples, so the gap between two
metrics' correlations has an interval too. Where seeds disagree, the seed level adds noise
to AUCs that are already seed means, which pulls the resampled correlations towards zero:
the intervals err on the cautious side (a point estimate of 1 can sit above its interval).

Per metric: the slope and its interval, the pairwise rates (median, IQR, relative spread),
Spearman and Kendall of m against AUC with p-values and intervals. The **best guide** is the
metric whose ordering of the versions agrees most with AUC (Spearman, then Kendall, then
the narrower interval); ``best_gap`` gives, per other metric, the interval of
Spearman(best) - Spearman(m): above zero means the best is really ahead of m.

Example::

    rows = {"v0": {"auc": 0.70, "recall": 0.1, "auc_seeds": [0.70, 0.71]},
            "v1": {"auc": 0.72, "recall": 0.3, "auc_seeds": [0.72, 0.72]},
            "v2": {"auc": 0.73, "recall": 0.5, "auc_seeds": [0.73, 0.74]}}
    table = exchange_rate_table(rows, ["recall"], seeds_key="auc_seeds")
    table["metrics"]["recall"]["rates"]  # {"v1": 0.1, "v2": 0.075}
    table["metrics"]["recall"]["slope_ci"]  # [lo, hi] of the fitted rate
    table["best"]                        # "recall"
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_DELTA = 1e-9
MIN_VERSIONS = 3  # fewer: no rank correlation (and no interval)


def exchange_rate(auc_v: float, auc_b: float, m_v: float, m_b: float,
                  min_delta: float = MIN_DELTA) -> float | None:
    """(AUC_v - AUC_b) / (m_v - m_b); None when the metric did not move (|m_v - m_b| <=
    ``min_delta``) or a value is missing / not finite."""
    vals = (auc_v, auc_b, m_v, m_b)
    if any(x is None or not math.isfinite(float(x)) for x in vals):
        return None
    dm = float(m_v) - float(m_b)
    if abs(dm) <= min_delta:
        return None
    return (float(auc_v) - float(auc_b)) / dm


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(float(x))


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _degenerate(x: np.ndarray, y: np.ndarray) -> bool:
    return len(x) < MIN_VERSIONS or np.ptp(x) == 0 or np.ptp(y) == 0


def _corr(x: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    from scipy.stats import kendalltau, spearmanr

    if _degenerate(x, y):
        return {"spearman": None, "spearman_p": None, "kendall": None, "kendall_p": None}
    s = spearmanr(x, y)
    k = kendalltau(x, y)
    return {"spearman": _num(s.statistic), "spearman_p": _num(s.pvalue),
            "kendall": _num(k.statistic), "kendall_p": _num(k.pvalue)}


def metric_exchange(rows: Mapping[str, Mapping[str, Any]], metric: str, baseline: str, *,
                    auc_key: str = "auc", min_delta: float = MIN_DELTA) -> dict[str, Any]:
    """The point estimates of one metric over ``rows`` (version -> values): pairwise rates
    against ``baseline`` and their spread, the least-squares slope (the fitted rate), R^2,
    Spearman and Kendall (no intervals: see ``guide_intervals``)."""
    names = [n for n, r in rows.items() if _finite(r.get(metric)) and _finite(r.get(auc_key))]
    base = rows[baseline]
    rates: dict[str, float | None] = {}
    for n in names:
        if n == baseline:
            continue
        rates[n] = exchange_rate(rows[n][auc_key], base[auc_key], rows[n][metric], base[metric],
                                 min_delta)
    vals = np.array([r for r in rates.values() if r is not None], dtype=np.float64)
    x = np.array([float(rows[n][metric]) for n in names])
    y = np.array([float(rows[n][auc_key]) for n in names])
    out: dict[str, Any] = {"metric": metric, "baseline": baseline, "n_versions": len(names),
                           "rates": rates}
    if vals.size:
        q1, med, q3 = np.percentile(vals, [25, 50, 75])
        out.update(rate_median=float(med), rate_mean=float(vals.mean()),
                   rate_std=float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
                   rate_iqr=float(q3 - q1), rate_min=float(vals.min()), rate_max=float(vals.max()),
                   rate_rel_spread=float((q3 - q1) / abs(med)) if abs(med) > 0 else None)
    else:
        out.update(rate_median=None, rate_mean=None, rate_std=None, rate_iqr=None,
                   rate_min=None, rate_max=None, rate_rel_spread=None)
    if len(names) >= 2 and np.ptp(x) > 0:
        from scipy.stats import linregress

        fit = linregress(x, y)
        out.update(slope=float(fit.slope), intercept=float(fit.intercept),
                   r2=float(fit.rvalue) ** 2 if np.ptp(y) > 0 else None,
                   metric_range=[float(x.min()), float(x.max())])
    else:
        out.update(slope=None, intercept=None, r2=None,
                   metric_range=[float(x.min()), float(x.max())] if x.size else None)
    out.update(_corr(x, y))
    return out


# -- bootstrap intervals -----------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapSpec:
    """How the intervals are drawn.

    Args:
        n_resamples: bootstrap resamples (the same for every metric).
        confidence: the interval's level (percentile interval).
        seed: the resampler's seed (the intervals are reproducible).
        min_valid: the share of resamples that must give a statistic (enough distinct
            versions drawn) for an interval to be reported.
    """

    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    min_valid: float = 0.5


def resample_versions(seed_aucs: Sequence[Sequence[float]], spec: BootstrapSpec,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The two-level resamples of a study's versions.

    Args:
        seed_aucs: per version, its AUCs over the ranker seeds (one or more, finite).

    Returns:
        (pick [B, n] int: the version drawn into each slot of each resample,
         auc [B, n]: that slot's AUC, the mean of its version's seeds drawn with
         replacement), B = ``spec.n_resamples``.
    """
    n = len(seed_aucs)
    if n == 0:
        raise ValueError("no versions to resample")
    counts = np.array([len(s) for s in seed_aucs])
    if counts.min() < 1:
        raise ValueError("every version needs at least one AUC")
    table = np.full((n, int(counts.max())), np.nan)
    for i, s in enumerate(seed_aucs):
        table[i, : len(s)] = np.asarray(s, dtype=np.float64)
    rng = np.random.default_rng([spec.seed, 23])
    pick = rng.integers(0, n, size=(spec.n_resamples, n))
    cnt = counts[pick]  # [B, n]
    k = table.shape[1]
    draw = np.floor(rng.random((spec.n_resamples, n, k)) * cnt[..., None]).astype(np.int64)
    vals = table[pick[..., None], draw]  # [B, n, k]; draws past a version's count are masked
    used = np.arange(k)[None, None, :] < cnt[..., None]
    auc = np.where(used, vals, 0.0).sum(-1) / cnt
    return pick, auc


def _interval(samples: np.ndarray, spec: BootstrapSpec) -> list[float] | None:
    ok = samples[np.isfinite(samples)]
    if ok.size < max(2, spec.min_valid * samples.size):
        return None
    alpha = (1.0 - spec.confidence) / 2
    lo, hi = np.percentile(ok, [100 * alpha, 100 * (1 - alpha)])
    return [float(lo), float(hi)]


def _resampled_stats(x: np.ndarray, pick: np.ndarray, auc: np.ndarray,
                     ) -> dict[str, np.ndarray]:
    """Slope, Spearman and Kendall of one metric on every resample (NaN where too few
    distinct versions were drawn)."""
    from scipy.stats import ConstantInputWarning, kendalltau, spearmanr

    n_res = pick.shape[0]
    out = {k: np.full(n_res, np.nan) for k in ("slope", "spearman", "kendall")}
    xs = x[pick]  # [B, n]; NaN where the version has no value of the metric
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        for b in range(n_res):
            keep = np.isfinite(xs[b])
            xb, yb = xs[b, keep], auc[b, keep]
            if len(xb) < 2 or np.ptp(xb) == 0:
                continue
            xc = xb - xb.mean()
            out["slope"][b] = float((xc * (yb - yb.mean())).sum() / (xc * xc).sum())
            if _degenerate(xb, yb):
                continue
            out["spearman"][b] = spearmanr(xb, yb).statistic
            out["kendall"][b] = kendalltau(xb, yb).statistic
    return out


def guide_intervals(values: Mapping[str, Sequence[float | None]],
                    seed_aucs: Sequence[Sequence[float]], spec: BootstrapSpec | None = None,
                    ) -> dict[str, Any]:
    """Bootstrap intervals of every metric's slope, Spearman and Kendall against AUC.

    Args:
        values: metric -> its value per version (None / NaN: that version has none).
        seed_aucs: per version (same order), its AUC per ranker seed.
        spec: resamples, level, seed.

    Returns:
        {"metrics": {m: {"slope_ci", "spearman_ci", "kendall_ci", "valid_resamples"}},
         "spec": {...}, "samples": {m: {stat: [B] array}}} (``samples`` for gaps between
        metrics; not JSON).
    """
    spec = spec or BootstrapSpec()
    pick, auc = resample_versions(seed_aucs, spec)
    metrics: dict[str, Any] = {}
    samples: dict[str, dict[str, np.ndarray]] = {}
    for m, vals in values.items():
        x = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
        if len(x) != len(seed_aucs):
            raise ValueError(f"metric {m!r}: {len(x)} values for {len(seed_aucs)} versions")
        st = _resampled_stats(x, pick, auc)
        samples[m] = st
        metrics[m] = {f"{k}_ci": _interval(v, spec) for k, v in st.items()}
        metrics[m]["valid_resamples"] = int(np.isfinite(st["spearman"]).sum())
    return {"metrics": metrics, "samples": samples,
            "spec": {"n_resamples": spec.n_resamples, "confidence": spec.confidence,
                     "seed": spec.seed, "levels": "versions, then seeds within a version"}}


def excludes_zero(ci: Sequence[float] | None) -> bool:
    """An interval that lies wholly above or below zero."""
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def _rank_key(summary: Mapping[str, Any]) -> tuple[float, float, float]:
    def val(k: str) -> float:
        v = summary.get(k)
        return float(v) if v is not None else -math.inf

    ci = summary.get("spearman_ci")
    return (val("spearman"), val("kendall"), -(ci[1] - ci[0]) if ci else -math.inf)


def exchange_rate_table(rows: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], *,
                        auc_key: str = "auc", seeds_key: str | None = None,
                        baseline: str | None = None, min_delta: float = MIN_DELTA,
                        bootstrap: BootstrapSpec | None = None) -> dict[str, Any]:
    """Exchange rates of every metric in ``metrics`` across the versions of ``rows``, with
    bootstrap intervals, and the best guide.

    Args:
        rows: version name -> {auc_key: AUC, metric: value, seeds_key: [AUC per seed] or
            {seed: AUC}, ...} (None / NaN metric values are left out of that metric's
            summary; a version without ``seeds_key`` counts its ``auc_key`` as one seed).
        metrics: the candidate intermediate metrics.
        baseline: the version the pairwise rates are measured against; default the weakest
            (lowest AUC).
        bootstrap: the intervals' resamples (default ``BootstrapSpec()``).

    Returns:
        {"baseline", "auc_key", "metrics": {metric: ``metric_exchange`` summary +
        ``slope_ci``, ``spearman_ci``, ``kendall_ci``, ``valid_resamples``}, "ranking"
        (metrics best first), "best", "best_gap" {metric: interval of Spearman(best) -
        Spearman(metric)}, "bootstrap" (the spec)}.
    """
    with_auc = {n: r for n, r in rows.items() if _finite(r.get(auc_key))}
    if not with_auc:
        raise ValueError(f"no version has a finite {auc_key!r}")
    if baseline is None:
        baseline = min(with_auc, key=lambda n: float(with_auc[n][auc_key]))
    elif baseline not in rows:
        raise ValueError(f"baseline {baseline!r} is not one of the versions {sorted(rows)}")
    summaries = {m: metric_exchange(with_auc, m, baseline, auc_key=auc_key, min_delta=min_delta)
                 for m in metrics}
    names = list(with_auc)
    seed_aucs: list[list[float]] = []
    for n in names:
        raw = with_auc[n].get(seeds_key) if seeds_key else None
        vals = list(raw.values()) if isinstance(raw, Mapping) else list(raw or [])
        vals = [float(v) for v in vals if _finite(v)]
        seed_aucs.append(vals or [float(with_auc[n][auc_key])])
    values = {m: [with_auc[n].get(m) if _finite(with_auc[n].get(m)) else None for n in names]
              for m in metrics}
    boot = guide_intervals(values, seed_aucs, bootstrap)
    for m in metrics:
        summaries[m].update(boot["metrics"][m])
    ranking = sorted(metrics, key=lambda m: _rank_key(summaries[m]), reverse=True)
    best = ranking[0] if ranking and summaries[ranking[0]].get("spearman") is not None else None
    gaps: dict[str, list[float] | None] = {}
    if best is not None:
        spec = bootstrap or BootstrapSpec()
        ref = boot["samples"][best]["spearman"]
        for m in metrics:
            if m != best:
                gaps[m] = _interval(ref - boot["samples"][m]["spearman"], spec)
    return {"baseline": baseline, "auc_key": auc_key, "metrics": summaries,
            "ranking": list(ranking), "best": best, "best_gap": gaps,
            "bootstrap": boot["spec"],
            "seeds_per_version": {n: len(s) for n, s in zip(names, seed_aucs, strict=True)}}
