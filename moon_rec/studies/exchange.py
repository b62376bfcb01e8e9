"""The exchange-rate study (MOON.md "Exchange rate", DESIGN section 6).

Encoder versions of spread-out quality (the untrained encoder, snapshots along the full
encoder recipe and its stages' final encoders, variant runs that move the metrics apart,
encoders given from elsewhere; ``moon_rec.studies.runs``); for each, the candidate
intermediate metrics (``moon_rec.studies.config.metric_info``) and the downstream ranker
AUC over several ranker seeds (mean and std), beside the ID-only reference on the same
seeds. Per metric, overall and on cold items: the exchange rate (the least-squares slope of
AUC on the metric) and the pairwise rates against the weakest version, Spearman and Kendall,
each with a bootstrap interval over versions and seeds, and the best guide
(``moon_rec.metrics.exchange``). The noise check: the AUC spread across versions against
the mean seed-to-seed std (the study resolves its versions when the spread is >= 10x).

Outputs in the study directory: ``exchange_rate.json`` beside the points.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from moon_rec.metrics.exchange import BootstrapSpec, exchange_rate_table, excludes_zero
from moon_rec.runtime import atomic_write_json
from moon_rec.studies.config import metric_info
from moon_rec.studies.points import Point, run_sweep
from moon_rec.studies.runs import Study

RESOLVE_FACTOR = 10.0  # the AUC spread across versions must be this many seed stds
IMAGE_SEARCH = "recall@10"  # the paper's intermediate metric (full dimension)


def exchange_points(study: Study) -> list[Point]:
    """Every point of the study, in dependency order: encoders, metrics, rankers, the
    ID-only reference."""
    versions = list(study.versions.values())
    points = [study.encoder_point(v) for v in versions]
    points += [study.metrics_point(v) for v in versions]
    r = study.config.ranker
    points += [study.ranker_point(v.name, s) for v in versions for s in r.seeds]
    if r.reference_experiment:
        points += [study.reference_point(s) for s in r.seeds]
    return points


def _mean_std(vals: list[float]) -> tuple[float | None, float | None]:
    if not vals:
        return None, None
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def version_rows(study: Study) -> dict[str, dict[str, Any]]:
    """version -> its metrics, AUC and cold-item AUC (mean, std and per seed over the
    ranker seeds), and its facts (group, pairs seen, negatives, model_version)."""
    rows: dict[str, dict[str, Any]] = {}
    seeds = study.config.ranker.seeds
    for v in study.versions.values():
        m = study.store.get("metrics", v.name)
        e = study.store.get("encoder", v.name)
        if m is None or e is None:
            continue
        res = m["result"]
        row: dict[str, Any] = {k: res.get(k) for k in study.config.metrics}
        per_seed: dict[str, dict[int, float]] = {"auc": {}, "auc_cold": {}, "gauc": {},
                                                 "auc_look_driven": {}}
        for s in seeds:
            r = study.store.get("ranker", f"{v.name}--seed{s}")
            if r is None:
                continue
            for k, d in per_seed.items():
                if r["result"].get(k) is not None:
                    d[s] = float(r["result"][k])
        for k, d in per_seed.items():
            row[k], row[f"{k}_std"] = _mean_std(list(d.values()))
            row[f"{k}_seeds"] = d
        row.update(model_version=e["result"]["model_version"], group=v.group, source=v.source,
                   stage=v.stage, step=v.step,
                   pairs_seen=e["result"].get("pairs_seen", v.pairs_seen),
                   negatives=e["result"].get("negatives_per_query", v.negatives),
                   train_loss=e["result"].get("train_loss"),
                   style_probe=res.get("style_probe"))
        rows[v.name] = row
    return rows


def reference_row(study: Study) -> dict[str, Any] | None:
    """The ID-only reference over the ranker seeds (mean, std, per seed)."""
    r = study.config.ranker
    if not r.reference_experiment:
        return None
    out: dict[str, Any] = {"experiment": r.reference_experiment}
    for k in ("auc", "auc_cold", "gauc"):
        d = {}
        for s in r.seeds:
            rec = study.store.get("reference", f"{r.reference_experiment}--seed{s}")
            if rec is not None and rec["result"].get(k) is not None:
                d[s] = float(rec["result"][k])
        out[k], out[f"{k}_std"] = _mean_std(list(d.values()))
        out[f"{k}_seeds"] = d
    return out if out.get("auc") is not None else None


def noise_check(rows: dict[str, dict[str, Any]], key: str = "auc") -> dict[str, Any]:
    """Does the study resolve its versions: the AUC spread across versions (max - min of
    the seed means) against the mean seed-to-seed std."""
    means = [r[key] for r in rows.values() if r.get(key) is not None]
    stds = [r[f"{key}_std"] for r in rows.values() if r.get(f"{key}_std") is not None]
    spread = float(max(means) - min(means)) if means else None
    std = float(np.mean(stds)) if stds else None
    ratio = spread / std if spread is not None and std else None
    return {"auc_version_range": spread, "auc_seed_std_mean": std, "ratio": ratio,
            "resolves": ratio is not None and ratio >= RESOLVE_FACTOR,
            "factor": RESOLVE_FACTOR, "versions_with_std": len(stds)}


def _fmt_ci(ci: list[float] | None) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "(no interval)"


def _evidence(rows: dict[str, dict[str, Any]], best: str) -> str:
    """Where image-search recall and AUC part ways: the AUC rank of the version with the
    best recall, and how recall moves with the best guide across versions."""
    from scipy.stats import spearmanr

    have = {n: r for n, r in rows.items()
            if r.get(IMAGE_SEARCH) is not None and r.get("auc") is not None}
    if len(have) < 3:
        return ""
    top = max(have, key=lambda n: have[n][IMAGE_SEARCH])
    by_auc = sorted(have, key=lambda n: -have[n]["auc"])
    out = (f" The version with the best image-search recall@10 ({top}, "
           f"{have[top][IMAGE_SEARCH]:.3f}) ranks {by_auc.index(top) + 1} of {len(have)} by AUC")
    pairs = [(r[IMAGE_SEARCH], r[best]) for r in have.values() if r.get(best) is not None]
    if best != IMAGE_SEARCH and len(pairs) >= 3:
        x, y = zip(*pairs, strict=True)
        rho = spearmanr(x, y).statistic
        if np.isfinite(rho):
            out += (f"; across versions recall@10 and {metric_info(best).label} agree at "
                    f"Spearman {rho:.2f}")
    return out + "."


def conclusion(table: dict[str, Any] | None, check: dict[str, Any],
               rows: dict[str, dict[str, Any]] | None = None) -> str:
    """The plain-words verdict on the paper's claim that image-search recall is the
    intermediate metric to steer by, with the evidence."""
    if not table or table.get("best") is None:
        return "Too few finished versions to compare the metrics."
    best = table["best"]
    s = table["metrics"][best]
    label = metric_info(best).label
    ci = s.get("spearman_ci")
    parts = [f"The best guide is {label}: Spearman {s['spearman']:.2f}, 95% interval "
             f"{_fmt_ci(ci)}"
             + (", which excludes zero." if excludes_zero(ci) else
                ", which includes zero: it is not told apart from noise.")]
    if IMAGE_SEARCH in table["metrics"]:
        rs = table["metrics"][IMAGE_SEARCH]
        gap = (table.get("best_gap") or {}).get(IMAGE_SEARCH)
        rtxt = (f"image-search recall@10 has Spearman {rs['spearman']:.2f} "
                f"{_fmt_ci(rs.get('spearman_ci'))}" if rs.get("spearman") is not None
                else "image-search recall@10 has no correlation")
        if best == IMAGE_SEARCH or best.startswith("recall@"):
            which = label  # an image-search recall (possibly another K or prefix)
            verdict = (f"The paper's claim holds in this world: {which} is the best guide"
                       + ("" if best == IMAGE_SEARCH else f" ({rtxt})") + "."
                       if excludes_zero(ci) else
                       f"{which[0].upper() + which[1:]} ranks first, but its interval includes "
                       "zero, so the paper's claim is not established here"
                       + ("" if best == IMAGE_SEARCH else f" ({rtxt})") + ".")
        elif gap is not None and not excludes_zero(gap):
            verdict = (f"The paper's claim is neither established nor refuted: {rtxt}, behind "
                       f"{label} by a Spearman gap of {_fmt_ci(gap)}, which includes zero: "
                       "the two are not told apart with these versions.")
        else:
            verdict = (f"The paper's claim does not hold in this world: {rtxt}, reliably "
                       f"behind {label} (Spearman gap {_fmt_ci(gap)}). Instance retrieval can "
                       "be solved from cues (shape, brand mark, exact colour) that do not "
                       "drive clicks, so better recall need not buy AUC.")
        parts.append(verdict + (_evidence(rows, best) if rows else ""))
    if not check.get("resolves"):
        r = check.get("ratio")
        parts.append("Caution: the AUC spread across versions is "
                     + (f"only {r:.1f}x" if r is not None else "not measured against")
                     + f" the mean seed std (the standard is {RESOLVE_FACTOR:.0f}x), so the "
                     "ordering of the versions is largely seed noise.")
    return " ".join(parts)


def analyse_exchange(study: Study) -> dict[str, Any]:
    """The exchange-rate table of the finished points (writes exchange_rate.json)."""
    rows = version_rows(study)
    complete = {n: r for n, r in rows.items() if r.get("auc") is not None}
    metrics = list(study.config.metrics)
    spec = BootstrapSpec(n_resamples=study.config.bootstrap_resamples,
                         confidence=study.config.confidence, seed=study.config.seed)
    result: dict[str, Any] = {
        "versions": rows, "candidate_metrics": metrics,
        "metric_info": {m: metric_info(m)._asdict() for m in metrics},
        "metrics": {}, "seeds": list(study.config.ranker.seeds),
        "ranker_experiment": study.config.ranker.experiment,
        "reference": reference_row(study), "noise": noise_check(complete),
        "noise_cold": noise_check(complete, "auc_cold")}
    if len(complete) >= 2:
        result.update(exchange_rate_table(complete, metrics, seeds_key="auc_seeds",
                                          bootstrap=spec))
        cold = {n: r for n, r in complete.items() if r.get("auc_cold") is not None}
        result["cold"] = exchange_rate_table(cold, metrics, auc_key="auc_cold",
                                             seeds_key="auc_cold_seeds",
                                             bootstrap=spec) if len(cold) >= 2 else None
    result["conclusion"] = conclusion(result if result.get("metrics") else None,
                                      result["noise"], complete)
    atomic_write_json(study.out / "exchange_rate.json", _clean(result), default=str)
    return result


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def run_exchange_study(study: Study) -> dict[str, Any]:
    """Run (or resume) every point, then the analysis."""
    study.prepare_ranker_set()
    study.write_manifest("exchange-rate")
    run_sweep(study.store, exchange_points(study), desc="exchange-rate", progress=study.progress)
    return analyse_exchange(study)
