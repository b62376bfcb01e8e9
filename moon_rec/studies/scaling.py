"""Scaling-law study (MOON.md "Scaling laws"): quality against training pairs seen, number
of negatives, and behaviour-sequence length, each fitted with a power law with offset.

    quality(x) = a - b * (x / x0) ** (-c)       (x0 = the smallest x of the sweep)

``a`` is the asymptote, ``b`` the gap to it at x0, ``c`` how fast it closes. Fitted with
``scipy.optimize.curve_fit``; confidence intervals from its covariance with Student-t
quantiles on n - 3 degrees of freedom. "Where returns flatten": the x at which one more
doubling of x buys less than ``flat_gain`` of quality under the fit.

A fit is **identified** only with at least ``MIN_POINTS`` points over at least
``MIN_DECADES`` decades of x, the exponent off its bounds, and finite intervals whose
exponent interval excludes 0; otherwise the fit is still drawn but reported as "not
identified" with the reason (a law fitted to 4 points over one decade says nothing about
the exponent).

Axes (the versions come from ``moon_rec.studies.runs``):
- ``tokens``: stage-1 pairs seen (the snapshots along the recipe's stage 1); quality =
  image-search recall@10 and the ranker AUC of the exchange-rate study.
- ``negatives``: negatives per query (in-batch + hard + temporal queue), the recipe's
  stage 2 and one stage-2 run per queue size; quality as for tokens.
- ``seq_len``: the ranker's behaviour-sequence length on one fixed encoder; quality = AUC
  (mean over the ranker seeds).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from moon_rec.runtime import atomic_write_json
from moon_rec.studies.points import Point, run_sweep
from moon_rec.studies.runs import EncoderVersion, Study

AXES: tuple[str, ...] = ("tokens", "negatives", "seq_len")
AXIS_LABELS: dict[str, str] = {
    "tokens": "stage-1 pairs seen",
    "negatives": "negatives per query (in-batch + hard + queue)",
    "seq_len": "behaviour-sequence length (items)",
}
FLAT_GAIN = 0.005
C_MIN, C_MAX = 0.05, 3.0  # exponent bounds: below, the law is indistinguishable from a log
MIN_POINTS = 5
MIN_DECADES = 1.5


def power_law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(x, -c)


def fit_power_law(x: Any, y: Any, *, flat_gain: float = FLAT_GAIN,
                  confidence: float = 0.95) -> dict[str, Any]:
    """Fit y = a - b * (x / x0)^-c; parameters, their CIs, and where returns flatten.

    Args:
        x: [n] positive sizes; y: [n] qualities (higher is better).
        flat_gain: quality gain per doubling of x below which returns count as flat.

    Returns:
        {"a", "b", "c", "x0", "ci": {p: [lo, hi] or None}, "dof", "rmse",
         "x_flat" (x where a doubling gains < flat_gain; None if b <= 0),
         "gain_next_doubling" (at the largest x), "share_of_gain_reached" (of a - y(x0) at the
         largest x), "n", "decades" (log10 of x's range), "ok" (the fit ran), "error",
         "identified" (see the module docstring), "reason" (why not; None when identified)}.
    """
    from scipy.optimize import OptimizeWarning, curve_fit
    from scipy.stats import t as student_t

    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(xa) & np.isfinite(ya) & (xa > 0)
    xa, ya = xa[keep], ya[keep]
    decades = float(np.log10(xa.max() / xa.min())) if len(xa) else 0.0
    out: dict[str, Any] = {"n": len(xa), "decades": decades, "flat_gain": flat_gain,
                           "confidence": confidence, "ok": False, "error": None,
                           "identified": False, "reason": None}
    if len(xa) < 3 or np.ptp(xa) == 0:
        out["error"] = f"need >= 3 distinct x, got {len(np.unique(xa))}"
        out["reason"] = out["error"]
        return out
    x0 = float(xa.min())
    xn = xa / x0
    span = float(np.ptp(ya)) or 1e-3
    rising = ya[np.argmax(xa)] >= ya[np.argmin(xa)]
    p0 = [float(ya.max() + 0.2 * span) if rising else float(ya.min() - 0.2 * span),
          span if rising else -span, 0.5]
    try:
        with warnings.catch_warnings():  # no covariance with 3 points: no CIs, said below
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, pcov = curve_fit(power_law, xn, ya, p0=p0, maxfev=20000,
                                   bounds=([-np.inf, -np.inf, C_MIN], [np.inf, np.inf, C_MAX]))
    except (RuntimeError, ValueError) as exc:
        out["error"] = f"curve_fit: {exc}"
        out["reason"] = out["error"]
        return out
    a, b, c = (float(v) for v in popt)
    dof = len(xa) - 3
    ci: dict[str, list[float] | None] = {}
    for i, name in enumerate(("a", "b", "c")):
        var = float(pcov[i, i]) if np.all(np.isfinite(pcov)) else math.inf
        if dof > 0 and math.isfinite(var):
            half = float(student_t.ppf(0.5 + confidence / 2, dof)) * math.sqrt(max(var, 0.0))
            ci[name] = [(a, b, c)[i] - half, (a, b, c)[i] + half]
        else:
            ci[name] = None
    pred = power_law(xn, a, b, c)
    xmax = float(xn.max())
    gain_next = b * xmax ** (-c) * (1 - 2.0 ** (-c))
    x_flat, note = None, None
    if b > 0 and flat_gain > 0:
        x_flat = x0 * (b * (1 - 2.0 ** (-c)) / flat_gain) ** (1 / c)
        if x_flat > 1000 * float(xa.max()):
            x_flat, note = None, "beyond 1000x the largest x: no flattening in sight"
    elif b <= 0:
        note = "quality does not rise with x under the fit"
    reasons = []
    if len(xa) < MIN_POINTS:
        reasons.append(f"{len(xa)} points (fewer than {MIN_POINTS})")
    if decades < MIN_DECADES:
        reasons.append(f"x spans {decades:.2f} decades (under {MIN_DECADES})")
    if c <= C_MIN * 1.001 or c >= C_MAX * 0.999:
        reasons.append(f"exponent at its bound ({c:.2f})")
    if any(v is None or not all(math.isfinite(e) for e in v) for v in ci.values()):
        reasons.append("an interval is infinite (no degrees of freedom or no covariance)")
    elif ci["c"] is not None and ci["c"][0] <= 0:
        reasons.append(f"the exponent's interval [{ci['c'][0]:.3g}, {ci['c'][1]:.3g}] "
                       "includes 0")
    out.update(identified=not reasons, reason="; ".join(reasons) or None)
    total = a - power_law(np.array([1.0]), a, b, c)[0]
    reached = (power_law(np.array([xmax]), a, b, c)[0] - power_law(np.array([1.0]), a, b, c)[0])
    out.update(ok=True, a=a, b=b, c=c, x0=x0, ci=ci, dof=dof,
               cov=np.asarray(pcov).tolist() if np.all(np.isfinite(pcov)) else None,
               rmse=float(np.sqrt(np.mean((pred - ya) ** 2))),
               gain_next_doubling=float(gain_next), x_flat=x_flat, note=note,
               share_of_gain_reached=float(reached / total) if abs(total) > 1e-12 else None)
    return out


def fit_band(fit: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(curve, lower, upper) of a fit at ``x``: the delta-method confidence band (the band is
    the curve itself when the fit has no degrees of freedom)."""
    from scipy.stats import t as student_t

    xn = np.asarray(x, np.float64) / fit["x0"]
    a, b, c = fit["a"], fit["b"], fit["c"]
    y = power_law(xn, a, b, c)
    if fit.get("dof", 0) <= 0 or fit.get("cov") is None:
        return y, y, y
    cov = np.asarray(fit["cov"], np.float64)
    jac = np.stack([np.ones_like(xn), -np.power(xn, -c), b * np.power(xn, -c) * np.log(xn)], 1)
    se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", jac, cov, jac), 0.0))
    half = float(student_t.ppf(0.5 + fit["confidence"] / 2, fit["dof"])) * se
    return y, y - half, y + half


# -- the sweeps ------------------------------------------------------------------------------


def axis_versions(study: Study, axis: str) -> list[EncoderVersion]:
    """The versions along an encoder axis: ``tokens``, the recipe's stage-1 snapshots and
    its final stage-1 encoder; ``negatives``, the recipe's stage 2 and the queue runs."""
    if axis == "tokens":
        return [v for v in study.versions.values() if v.group == "stage1"]
    if axis == "negatives":
        return [v for v in study.versions.values()
                if v.group == "negatives" or (v.name == "stage2")]
    raise ValueError(f"{axis!r} is not an encoder axis (tokens, negatives)")


def scaling_points(study: Study, axis: str, *, with_auc: bool = False) -> list[Point]:
    """The points of one axis (encoder + metrics [+ ranker] per version; ranker runs per
    sequence length for ``seq_len``)."""
    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r} ({', '.join(AXES)})")
    seeds = study.config.ranker.seeds
    if axis == "seq_len":
        v = study.version(study.config.ranker.seq_len_version)
        return [study.encoder_point(v), study.metrics_point(v)] + [
            study.ranker_point(v.name, s, kind="seq_len", max_seq_len=L)
            for L in study.config.ranker.seq_lens for s in seeds]
    versions = axis_versions(study, axis)
    points = [study.encoder_point(v) for v in versions] + [study.metrics_point(v) for v in versions]
    if with_auc:
        points += [study.ranker_point(v.name, s) for v in versions for s in seeds]
    return points


def _mean_auc(study: Study, kind: str, name: str) -> tuple[float | None, float | None]:
    aucs = []
    for s in study.config.ranker.seeds:
        r = study.store.get(kind, f"{name}--seed{s}")
        if r is not None and r["result"].get("auc") is not None:
            aucs.append(float(r["result"]["auc"]))
    if not aucs:
        return None, None
    return float(np.mean(aucs)), (float(np.std(aucs, ddof=1)) if len(aucs) > 1 else None)


def analyse_axis(study: Study, axis: str) -> dict[str, Any]:
    """The axis' table and fits from the finished points (writes scaling_<axis>.json)."""
    rows: list[dict[str, Any]] = []
    if axis == "seq_len":
        v = study.version(study.config.ranker.seq_len_version)
        for L in study.config.ranker.seq_lens:
            auc, std = _mean_auc(study, "seq_len", f"L{L:03d}--{v.name}")
            rows.append({"x": L, "auc": auc, "auc_std": std, "version": v.name})
        series = {"auc": "ranker AUC (test)"}
    else:
        for v in axis_versions(study, axis):
            m = study.store.get("metrics", v.name)
            e = study.store.get("encoder", v.name)
            res = e["result"] if e else {}
            x = res.get("pairs_seen", v.pairs_seen) if axis == "tokens" else \
                res.get("negatives_per_query", v.negatives)
            auc, std = _mean_auc(study, "ranker", v.name)
            rows.append({"x": x, "version": v.name, "auc": auc, "auc_std": std,
                         "recall@10": m["result"].get("recall@10") if m else None})
        rows.sort(key=lambda r: r["x"] if r["x"] is not None else -1)
        series = {"recall@10": "image-search recall@10", "auc": "ranker AUC (test)"}
    fits: dict[str, Any] = {}
    for key in series:
        pts = [(r["x"], r[key]) for r in rows if r.get(key) is not None and r["x"]]
        if pts:
            fits[key] = fit_power_law([p[0] for p in pts], [p[1] for p in pts])
    result = {"axis": axis, "x_label": AXIS_LABELS[axis], "rows": rows, "series": series,
              "fits": fits}
    atomic_write_json(study.out / f"scaling_{axis}.json", result, default=str)
    return result


def run_scaling_study(study: Study, axis: str, *, with_auc: bool = False) -> dict[str, Any]:
    """Run (or resume) one axis, then its analysis."""
    study.prepare_ranker_set()
    study.write_manifest(f"scaling-{axis}")
    run_sweep(study.store, scaling_points(study, axis, with_auc=with_auc),
              desc=f"scaling[{axis}]", progress=study.progress)
    return analyse_axis(study, axis)
