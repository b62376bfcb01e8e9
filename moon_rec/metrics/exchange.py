"""The exchange rate of an intermediate metric (DESIGN section 6, MOON.md "Exchange rate").

For encoder versions v against a baseline version b (by default the weakest: lowest AUC),
the exchange rate of metric m is

    rate_v(m) = (AUC_v - AUC_b) / (m_v - m_b)

i.e. how much downstream ranker AUC one unit of m buys. Over all versions we report, per
metric: every version's rate, their median / mean / spread (standard deviation,
inter-quartile range, relative spread = IQR / |median|), the least-squares slope of AUC on
m (the "fitted rate", robust to versions close to the baseline), and the Spearman and
Kendall rank correlations of m with AUC (with p-values). The best guide is the metric whose
ordering of versions agrees most with AUC (Spearman, then Kendall), ties broken by the
more stable rate (smaller relative spread).

Example::

    rows = {"v0": {"auc": 0.70, "recall": 0.1}, "v1": {"auc": 0.72, "recall": 0.3},
            "v2": {"auc": 0.73, "recall": 0.5}}
    table = exchange_rate_table(rows, ["recall"])
    table["metrics"]["recall"]["rates"]  # {"v1": 0.1, "v2": 0.075}
    table["best"]                        # "recall"
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MIN_DELTA = 1e-9


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


def _corr(x: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    from scipy.stats import kendalltau, spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"spearman": None, "spearman_p": None, "kendall": None, "kendall_p": None}
    s = spearmanr(x, y)
    k = kendalltau(x, y)

    def f(v: Any) -> float | None:
        v = float(v)
        return v if math.isfinite(v) else None

    return {"spearman": f(s.statistic), "spearman_p": f(s.pvalue),
            "kendall": f(k.statistic), "kendall_p": f(k.pvalue)}


def metric_exchange(rows: Mapping[str, Mapping[str, Any]], metric: str, baseline: str, *,
                    auc_key: str = "auc", min_delta: float = MIN_DELTA) -> dict[str, Any]:
    """The exchange-rate summary of one metric over ``rows`` (version -> values)."""
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
        slope, intercept = np.polyfit(x, y, 1)
        pred = slope * x + intercept
        ss_tot = float(((y - y.mean()) ** 2).sum())
        out.update(slope=float(slope), intercept=float(intercept),
                   r2=1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else None,
                   metric_range=[float(x.min()), float(x.max())])
    else:
        out.update(slope=None, intercept=None, r2=None,
                   metric_range=[float(x.min()), float(x.max())] if x.size else None)
    out.update(_corr(x, y))
    return out


def _rank_key(summary: Mapping[str, Any]) -> tuple[float, float, float]:
    def val(k: str) -> float:
        v = summary.get(k)
        return float(v) if v is not None else -math.inf

    spread = summary.get("rate_rel_spread")
    return (val("spearman"), val("kendall"), -float(spread) if spread is not None else -math.inf)


def exchange_rate_table(rows: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], *,
                        auc_key: str = "auc", baseline: str | None = None,
                        min_delta: float = MIN_DELTA) -> dict[str, Any]:
    """Exchange rates of every metric in ``metrics`` across the versions of ``rows``.

    Args:
        rows: version name -> {auc_key: AUC, metric: value, ...} (None / NaN values are
            left out of that metric's summary).
        metrics: the candidate intermediate metrics.
        baseline: the version to measure against; default the weakest (lowest AUC).

    Returns:
        {"baseline", "metrics": {metric: summary (see ``metric_exchange``)}, "ranking"
        (metrics best first), "best"}.
    """
    with_auc = {n: r for n, r in rows.items() if _finite(r.get(auc_key))}
    if not with_auc:
        raise ValueError(f"no version has a finite {auc_key!r}")
    if baseline is None:
        baseline = min(with_auc, key=lambda n: float(with_auc[n][auc_key]))
    elif baseline not in rows:
        raise ValueError(f"baseline {baseline!r} is not one of the versions {sorted(rows)}")
    summaries = {m: metric_exchange(rows, m, baseline, auc_key=auc_key, min_delta=min_delta)
                 for m in metrics}
    ranking = sorted(metrics, key=lambda m: _rank_key(summaries[m]), reverse=True)
    best = ranking[0] if ranking and summaries[ranking[0]].get("spearman") is not None else None
    return {"baseline": baseline, "auc_key": auc_key, "metrics": summaries,
            "ranking": list(ranking), "best": best}
