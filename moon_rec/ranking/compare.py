"""``moon ranker compare``: the ID-only DIN baseline against MOON rankers, same split and
seed, with the gap closed = (AUC - AUC_ids) / (AUC_oracle - AUC_ids) overall, on cold
items and on look-driven categories."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from moon_rec.metrics.ranking import gap_closed
from moon_rec.ranking.config import load_ranker_config
from moon_rec.ranking.evaluate import evaluate_ranker
from moon_rec.ranking.train import train_ranker

DEFAULT_EXPERIMENTS: tuple[str, ...] = ("din_ids", "cube_moon", "sim_moon")


def compare_rankers(
    training_set: str | Path,
    embeddings: str | Path,
    config_file: str | Path,
    out: str | Path,
    *,
    experiments: tuple[str, ...] = DEFAULT_EXPERIMENTS,
    world: str | Path | None = None,
    query_embeddings: str | Path | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate each experiment (the first is the baseline) into ``out/<id>``.

    Returns:
        {"rows": {id: eval report + gap_closed*}, "baseline": id}; also written to
        ``out/compare.json``.
    """
    out = Path(out)
    reports: dict[str, dict[str, Any]] = {}
    for name in experiments:
        config = load_ranker_config(config_file, name)
        if seed is not None:
            config = replace(config, train=replace(config.train, seed=seed))
        model_dir = out / name
        train_ranker(
            training_set,
            config,
            model_dir,
            embeddings=embeddings,
            query_embeddings=query_embeddings,
            resume=False,
            progress=progress,
        )
        reports[name] = evaluate_ranker(model_dir, world=world)
    base = reports[experiments[0]]
    for rep in reports.values():
        rep["gap_closed"] = gap_closed(rep["auc"], base["auc"], base["oracle_auc"])
        rep["gap_closed_cold"] = gap_closed(
            rep["auc_cold"], base["auc_cold"], base["oracle_auc_cold"]
        )
        rep["gap_closed_look_driven"] = gap_closed(
            rep["auc_look_driven"], base["auc_look_driven"], base["oracle_auc_look_driven"]
        )
    result = {"baseline": experiments[0], "rows": reports}
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.4f}"


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of a compare result."""
    head = ["model", "AUC", "GAUC", "AUC cold", "AUC look", "gap", "gap cold", "gap look"]
    lines = [head]
    for name, r in result["rows"].items():
        lines.append(
            [
                name,
                _fmt(r["auc"]),
                _fmt(r["gauc"]),
                _fmt(r["auc_cold"]),
                _fmt(r["auc_look_driven"]),
                _fmt(r["gap_closed"], True),
                _fmt(r["gap_closed_cold"], True),
                _fmt(r["gap_closed_look_driven"], True),
            ]
        )
    base = result["rows"][result["baseline"]]
    lines.append(
        [
            "oracle",
            _fmt(base["oracle_auc"]),
            "-",
            _fmt(base["oracle_auc_cold"]),
            _fmt(base["oracle_auc_look_driven"]),
            "100%",
            "100%",
            "100%",
        ]
    )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines
    )
