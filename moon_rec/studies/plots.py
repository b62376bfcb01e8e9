"""The studies' figures (matplotlib, Agg backend, PNG).

- ``exchange_rate.png``: one panel per candidate metric, metric (x) against ranker AUC (y),
  one dot per encoder version (error bar: the seeds' standard deviation), the least-squares
  line (its slope is the exchange rate), the ID-only reference, and the rate, Spearman and
  Kendall with their bootstrap intervals in the panel title.
- ``scaling_<axis>.png``: quality against the axis (log x), the power-law fit with its
  confidence band, where returns flatten, and whether the fit is identified.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from moon_rec.studies.config import metric_info

GROUP_COLORS: dict[str, str] = {"baseline": "#7f7f7f", "pretrain": "#8c564b",
                                "stage1": "#1f77b4", "stage2": "#17becf",
                                "modality": "#d62728", "objective": "#ff7f0e",
                                "negatives": "#2ca02c", "variant": "#bcbd22",
                                "given": "#9467bd"}


def _ci(v: Any, ci: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def plot_exchange(result: dict[str, Any], path: str | Path) -> Path:
    """The metric-vs-AUC scatter of an exchange-rate result (``analyse_exchange``)."""
    plt = _plt()
    metrics = list(result["candidate_metrics"])
    summaries = result.get("metrics") or {}
    rows = {n: r for n, r in result["versions"].items() if r.get("auc") is not None}
    ncol = 4
    nrow = max(1, (len(metrics) + ncol - 1) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.9 * nrow), squeeze=False)
    ref = result.get("reference") or {}
    for ax, m in zip(axes.flat, metrics, strict=False):
        s = summaries.get(m, {})
        label = metric_info(m).label
        names = [n for n, r in rows.items() if r.get(m) is not None]
        for n in names:
            r = rows[n]
            ax.errorbar(r[m], r["auc"], yerr=r.get("auc_std") or 0.0, fmt="o", ms=5,
                        color=GROUP_COLORS.get(r.get("group", ""), "k"), capsize=2)
            ax.annotate(n, (r[m], r["auc"]), textcoords="offset points", xytext=(3, 3),
                        fontsize=5.5, color="#333333")
        if ref.get("auc") is not None:
            ax.axhline(ref["auc"], color="#9467bd", ls=":", lw=1.2)
        if s.get("slope") is not None and names:
            xs = np.linspace(min(rows[n][m] for n in names), max(rows[n][m] for n in names), 50)
            ax.plot(xs, s["slope"] * xs + s["intercept"], "--", color="k", lw=1)
        ax.set_title(f"{label}{'' if metric_info(m).real_catalog else ' (oracle)'}\n"
                     f"rate {_ci(s.get('slope'), s.get('slope_ci'), 3)}\n"
                     f"Spearman {_ci(s.get('spearman'), s.get('spearman_ci'))}, "
                     f"Kendall {_ci(s.get('kendall'), s.get('kendall_ci'))}", fontsize=7.5)
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("ranker test AUC", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    groups = sorted({r.get("group", "") for r in rows.values()})
    handles = [plt.Line2D([], [], marker="o", ls="", color=GROUP_COLORS.get(g, "k"), label=g)
               for g in groups]
    handles.append(plt.Line2D([], [], ls="--", color="k", label="least squares (the rate)"))
    if ref.get("auc") is not None:
        handles.append(plt.Line2D([], [], ls=":", color="#9467bd",
                                  label=f"ID-only ({ref['experiment']})"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8,
               frameon=False)
    best = result.get("best")
    fig.suptitle(f"Exchange rate: intermediate metric vs ranker AUC ({len(rows)} encoder "
                 f"versions, seeds {result.get('seeds')}; best guide: "
                 f"{metric_info(best).label if best else '-'})", fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_scaling(result: dict[str, Any], path: str | Path) -> Path:
    """One axis of the scaling study (``analyse_axis``): one panel per quality series."""
    from moon_rec.studies.scaling import fit_band

    plt = _plt()
    series = [k for k in result["series"]
              if any(r.get(k) is not None for r in result["rows"])]
    fig, axes = plt.subplots(1, max(1, len(series)), figsize=(5.6 * max(1, len(series)), 4.4),
                             squeeze=False)
    for ax, key in zip(axes.flat, series, strict=False):
        pts = [(r["x"], r[key], r.get("auc_std") if key == "auc" else None)
               for r in result["rows"] if r.get(key) is not None]
        x = np.array([p[0] for p in pts], np.float64)
        y = np.array([p[1] for p in pts], np.float64)
        err = np.array([p[2] or 0.0 for p in pts])
        ax.errorbar(x, y, yerr=err, fmt="o", color="#1f77b4", capsize=3, label="measured")
        fit = result["fits"].get(key)
        title = result["series"][key]
        if fit and fit.get("ok"):
            xs = np.geomspace(x.min(), x.max() * 2, 100)
            yc, lo, hi = fit_band(fit, xs)
            ax.plot(xs, yc, "-", color="#ff7f0e",
                    label=f"fit a - b(x/x0)^-c: a={fit['a']:.3f}, c={fit['c']:.2f}")
            if fit.get("dof", 0) > 0:
                ax.fill_between(xs, lo, hi, color="#ff7f0e", alpha=0.18,
                                label=f"{int(100 * fit['confidence'])}% band")
            ax.axhline(fit["a"], color="#ff7f0e", ls=":", lw=1, label="asymptote a")
            xf = fit.get("x_flat")
            if xf is not None and x.min() <= xf <= x.max() * 4:
                ax.axvline(xf, color="grey", ls="--", lw=1,
                           label=f"flat (<{fit['flat_gain']} per doubling): {xf:,.0f}")
            title += f"\ngain of the next doubling: {fit['gain_next_doubling']:+.4f}"
            title += ("\nidentified" if fit.get("identified")
                      else "\n" + textwrap.fill(f"not identified: {fit.get('reason')}", 70))
            # the y range follows the points and the curve; a wide band is clipped
            lo_y, hi_y = min((y - err).min(), yc.min()), max((y + err).max(), yc.max())
            pad = 0.3 * (hi_y - lo_y) + 1e-4
            ax.set_ylim(lo_y - pad, hi_y + pad)
        elif fit:
            title += "\n" + textwrap.fill(
                f"not identified: {fit.get('reason') or fit.get('error')}", 70)
        ax.set_xscale("log")
        # the measured x values as plain ticks (log minor labels overlap)
        from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

        ax.xaxis.set_major_locator(FixedLocator(sorted(set(x.tolist()))))
        ax.xaxis.set_major_formatter(
            plt.FuncFormatter(lambda v, _p: f"{v / 1000:g}k" if v >= 10_000 else f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(result["x_label"] + " (log scale)")
        ax.set_ylabel(result["series"][key])
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best", framealpha=0.7)
    fig.suptitle(f"Scaling: {result['x_label']}", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
