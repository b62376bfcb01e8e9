"""Batch job: the exchange-rate and scaling-law studies, then their report.

    moon study all --out S [--world W] [--preset small]     # make study: everything
    moon study exchange-rate --world W --out S [--preset small]
    moon study scaling --world W --out S --axis tokens|negatives|seq_len
    moon report --study S

Composes library calls: the ranker training set (moon_rec.featurestore.training_set, built once per
study directory into ``S/shared/training_set.parquet``, or given with ``--training-set``),
the study sweeps (moon_rec.studies) and the report (moon_rec.studies.report).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from moon_rec.studies.config import PRESET_DIR, StudyConfig, load_study_config


def default_preset(world: str | Path) -> str:
    """The study preset named like the world's preset when one exists, else ``tiny``."""
    meta = Path(world) / "world.json"
    preset = json.loads(meta.read_text()).get("preset") if meta.is_file() else None
    return str(preset) if preset and (PRESET_DIR / f"{preset}.yaml").is_file() else "tiny"


def study_config(world: str | Path | None, preset: str | None = None,
                 path: str | Path | None = None,
                 overrides: list[str] | None = None) -> StudyConfig:
    """The study config: ``path`` or ``preset`` (default: the world's preset, else tiny)."""
    if path is None and preset is None and world is not None:
        preset = default_preset(world)
    return load_study_config(preset, path, overrides)


def ensure_training_set(world: str | Path, out: str | Path,
                        training_set: str | Path | None = None) -> Path:
    """The full ranker training set: ``training_set`` when given, else the loop's
    feature-table and training-set steps over ``out/shared`` (built once, with Feast
    point-in-time joins; ``out/shared/training_set.parquet``)."""
    if training_set is not None:
        return Path(training_set)
    from moon_rec.loop import Layout, feature_tables_step, run_steps, training_set_step

    layout = Layout.at(Path(out) / "shared", world=world)
    run_steps([feature_tables_step(layout, deps=()), training_set_step(layout)],
              layout.file("loop_state.json"), label="study inputs")
    return layout.training_set


def ensure_world(out: str | Path, preset: str, seed: int) -> Path:
    """The study's own synthetic world (``out/shared/world``), generated and validated once
    by the loop's world steps: for a study run without ``--world``."""
    from moon_rec.loop import Layout, run_steps, world_steps

    layout = Layout.at(Path(out) / "shared")
    run_steps(world_steps(layout, preset, seed), layout.file("world_state.json"),
              label="study world")
    return layout.world


def _study(world: str | Path, out: str | Path, config: StudyConfig,
           training_set: str | Path | None, progress: bool) -> Any:
    from moon_rec.studies.runs import Study

    ts = ensure_training_set(world, out, training_set)
    return Study(world, out, config, training_set=ts, progress=progress)


def run_exchange_rate(world: str | Path, out: str | Path, config: StudyConfig, *,
                      training_set: str | Path | None = None, progress: bool = True,
                      report: bool = True) -> dict[str, Any]:
    """The exchange-rate study into ``out`` (resumable), then the report."""
    from moon_rec.studies.exchange import run_exchange_study

    t0 = time.time()
    result = run_exchange_study(_study(world, out, config, training_set, progress))
    summary = {"best": result.get("best"), "baseline": result.get("baseline"),
               "ranking": result.get("ranking"), "seconds": round(time.time() - t0, 1),
               "conclusion": result.get("conclusion"), "noise": result.get("noise"),
               "metrics": {m: {k: s.get(k) for k in ("slope", "slope_ci", "spearman",
                                                     "spearman_ci", "kendall", "kendall_ci")}
                           for m, s in (result.get("metrics") or {}).items()}}
    if report:
        summary["report"] = build(out)
    return summary


def run_scaling(world: str | Path, out: str | Path, config: StudyConfig, axis: str, *,
                training_set: str | Path | None = None, progress: bool = True,
                with_auc: bool = False, report: bool = True) -> dict[str, Any]:
    """One scaling axis into ``out`` (resumable), then the report."""
    from moon_rec.studies.scaling import run_scaling_study

    t0 = time.time()
    result = run_scaling_study(_study(world, out, config, training_set, progress), axis,
                               with_auc=with_auc)
    summary: dict[str, Any] = {"axis": axis, "seconds": round(time.time() - t0, 1),
                               "rows": result["rows"],
                               "fits": {k: {p: f.get(p) for p in ("ok", "identified", "reason",
                                                                  "a", "b", "c", "ci", "x_flat",
                                                                  "gain_next_doubling", "error")}
                                        for k, f in result["fits"].items()}}
    if report:
        summary["report"] = build(out)
    return summary


def run_all(world: str | Path | None, out: str | Path, config: StudyConfig, *,
            training_set: str | Path | None = None, progress: bool = True,
            report: bool = True, report_out: str | Path | None = None) -> dict[str, Any]:
    """``make study``: the exchange-rate study (its versions are also the tokens and
    negatives axes) and the seq_len axis in one resumable sweep, then the analyses and the
    report. Without ``world``, the study generates its own (``ensure_world``)."""
    from moon_rec.studies.exchange import analyse_exchange, exchange_points
    from moon_rec.studies.points import run_sweep
    from moon_rec.studies.scaling import AXES, analyse_axis, scaling_points

    t0 = time.time()
    if world is None:
        world = ensure_world(out, config.preset, config.seed)
    study = _study(world, out, config, training_set, progress)
    study.prepare_ranker_set()
    for name in ("exchange-rate", *(f"scaling-{a}" for a in AXES)):
        study.write_manifest(name)
    points = exchange_points(study) + scaling_points(study, "seq_len")
    run_sweep(study.store, points, desc="study", progress=progress)
    if report:  # the report re-analyses the points and writes the JSON tables
        paths = build(out, report_out)
        ex = json.loads((Path(out) / "exchange_rate.json").read_text())
        axes = {a: json.loads((Path(out) / f"scaling_{a}.json").read_text()) for a in AXES}
    else:
        ex = analyse_exchange(study)
        axes = {a: analyse_axis(study, a) for a in AXES}
    summary: dict[str, Any] = {
        "seconds": round(time.time() - t0, 1), "versions": len(ex["versions"]),
        "best": ex.get("best"), "conclusion": ex.get("conclusion"), "noise": ex.get("noise"),
        "fits": {a: {k: {p: f.get(p) for p in ("identified", "reason", "c", "ci")}
                     for k, f in res["fits"].items()} for a, res in axes.items()}}
    if report:
        summary["report"] = paths
    return summary


def build(study_dir: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """``moon report``: plots + report.md + report.html from the study's points."""
    from moon_rec.studies.report import build_report

    return build_report(study_dir, out)
