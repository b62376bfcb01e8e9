"""The exchange-rate study (MOON.md "Exchange rate", DESIGN section 6).

A set of encoder versions of spread-out quality (untrained, pretrained only, snapshots along
one post-training run, text-only and image-only post-training, fewer/more negatives); for
each, the candidate intermediate metrics (image-search recall@10, text-query recall@10,
category probe accuracy, image-title alignment) and the downstream ranker AUC (the study's
ranker experiment, e.g. ids+moon with CUBE; fixed split, one or more seeds). Per metric:
its exchange rate against the weakest version, the rate's spread across versions, the
Spearman and Kendall correlation with AUC, and the best guide
(``moon_rec.metrics.exchange``).

Outputs in the study directory: ``exchange_rate.json`` (the table) beside the points.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from moon_rec.metrics.exchange import exchange_rate_table
from moon_rec.runtime import atomic_write_json
from moon_rec.studies.points import Point, run_sweep
from moon_rec.studies.runs import Study, encoder_versions, version_by_name


def exchange_points(study: Study) -> list[Point]:
    """Every point of the study, in dependency order: encoders, metrics, rankers."""
    versions = encoder_versions(study.config)
    points = [study.encoder_point(v) for v in versions]
    points += [study.metrics_point(v) for v in versions]
    r = study.config.ranker
    points += [study.ranker_point(v.name, s) for v in versions for s in r.seeds]
    noise = {version_by_name(study.config, n).name for n in r.noise_versions}
    points += [study.ranker_point(v.name, s) for v in versions if v.name in noise
               for s in r.noise_seeds if s not in r.seeds]
    if r.reference_experiment:
        points.append(study.reference_point(r.seeds[0]))
    return points


def version_rows(study: Study) -> dict[str, dict[str, Any]]:
    """version -> its metrics, AUC (mean over seeds), AUC std, per-seed AUCs and facts."""
    rows: dict[str, dict[str, Any]] = {}
    for v in encoder_versions(study.config):
        m = study.store.get("metrics", v.name)
        e = study.store.get("encoder", v.name)
        if m is None or e is None:
            continue
        res = m["result"]
        row: dict[str, Any] = {k: res.get(k) for k in study.config.metrics}
        row["recall@1"], row["recall@100"] = res.get("recall@1"), res.get("recall@100")
        by_dim = res.get("by_dim") or {}
        for d, vals in by_dim.items():
            row[f"recall@10_d{d}"] = vals.get("recall@10")
        aucs, extra, all_aucs = [], {}, {}
        seeds = list(dict.fromkeys([*study.config.ranker.seeds, *study.config.ranker.noise_seeds]))
        for s in seeds:
            r = study.store.get("ranker", f"{v.name}--seed{s}")
            if r is not None and r["result"].get("auc") is not None:
                all_aucs[s] = float(r["result"]["auc"])
                if s in study.config.ranker.seeds:
                    aucs.append(all_aucs[s])
                    extra = r["result"]
        row["auc_seeds"] = all_aucs
        # the AUC of the rates: the study seeds only, so every version is measured alike
        row["auc"] = float(np.mean(aucs)) if aucs else None
        spread = list(all_aucs.values())
        row["auc_std"] = float(np.std(spread, ddof=1)) if len(spread) > 1 else None
        for k in ("auc_cold", "auc_look_driven", "gauc", "oracle_auc"):
            vals = []
            for s in study.config.ranker.seeds:
                r = study.store.get("ranker", f"{v.name}--seed{s}")
                if r is not None and r["result"].get(k) is not None:
                    vals.append(float(r["result"][k]))
            row[k] = float(np.mean(vals)) if vals else extra.get(k)
        row.update(model_version=e["result"]["model_version"], group=v.group, run=v.run,
                   pairs_seen=v.pairs_seen, negatives=v.negatives,
                   train_loss=e["result"].get("train_loss"))
        rows[v.name] = row
    return rows


def analyse_exchange(study: Study) -> dict[str, Any]:
    """The exchange-rate table of the finished points (writes exchange_rate.json)."""
    rows = version_rows(study)
    complete = {n: r for n, r in rows.items() if r.get("auc") is not None}
    result: dict[str, Any] = {"versions": rows, "candidate_metrics": list(study.config.metrics),
                              "metrics": {},
                              "seeds": list(study.config.ranker.seeds),
                              "ranker_experiment": study.config.ranker.experiment}
    r = study.config.ranker
    if r.reference_experiment:
        ref = study.store.get("reference", f"{r.reference_experiment}--seed{r.seeds[0]}")
        if ref is not None:
            result["reference"] = {"experiment": r.reference_experiment,
                                   **{k: ref["result"].get(k) for k in ("auc", "auc_cold", "gauc")}}
    if len(complete) >= 2:
        table = exchange_rate_table(complete, study.config.metrics)
        result.update(table)
        # the noise floor: seed-to-seed AUC spread against the spread across versions
        stds = [r["auc_std"] for r in complete.values() if r.get("auc_std") is not None]
        aucs = [r["auc"] for r in complete.values()]
        result["auc_seed_std_mean"] = float(np.mean(stds)) if stds else None
        result["auc_version_range"] = float(max(aucs) - min(aucs))
        result["cold"] = exchange_rate_table(
            {n: r for n, r in complete.items() if r.get("auc_cold") is not None},
            study.config.metrics, auc_key="auc_cold") if all(
                r.get("auc_cold") is not None for r in complete.values()) else None
    atomic_write_json(study.out / "exchange_rate.json", _clean(result), default=str)
    return result


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def run_exchange_study(study: Study) -> dict[str, Any]:
    """Run (or resume) every point, then the analysis."""
    study.prepare_ranker_set()
    study.write_manifest("exchange-rate")
    run_sweep(study.store, exchange_points(study), desc="exchange-rate", progress=study.progress)
    return analyse_exchange(study)
