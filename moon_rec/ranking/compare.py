"""``moon ranker compare``: the ID-only DIN baseline against MOON rankers, same split and
seed, with the gap closed = (AUC - AUC_ids) / (AUC_oracle - AUC_ids) overall, on cold
items, on look-driven and on other categories, and each model's training time.

With ``style_embeddings`` (a synthetic world's perfect look vectors,
:func:`moon_rec.ranking.diagnostics.write_oracle_style_embeddings`), every content ranker is
also trained on them (row ``<id>@style``, no query embeddings: the look alone), and its
row gets the content share = (AUC - AUC_ids) / (AUC on perfect style - AUC_ids): how much
of what perfect content buys this ranker the MOON vectors buy it (overall, cold,
look-driven). A ranker with a look head runs on the perfect look vectors without it, at
the head's size: the head's job is to find the look in MOON vectors, and on vectors that
are the look the identity is the right head (post-training a head on them measured 0.7568
against 0.7968 without, small world).

With ``reuse``, an experiment whose model directory already holds a finished model trained
with the same config, training set and (for ``ids+moon``) embedding version is evaluated,
not retrained (the ID-only baseline does not depend on the embeddings, so comparing
several encoder versions trains it once)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moon_rec.metrics.ranking import gap_closed
from moon_rec.ranking.config import RankerConfig, load_ranker_config
from moon_rec.ranking.evaluate import evaluate_ranker
from moon_rec.ranking.train import train_ranker

DEFAULT_EXPERIMENTS: tuple[str, ...] = ("din_ids", "cube_moon", "sim_moon")
STYLE_SUFFIX = "@style"  # the row of a content experiment run on perfect look vectors


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
    reuse: bool = False,
    style_embeddings: str | Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate each experiment (the first is the baseline) into ``out/<id>``.

    Args:
        reuse: keep a finished model in ``out/<id>`` made from the same config, training
            set and embedding version instead of retraining it.
        style_embeddings: perfect look vectors (an embedding table): each content
            experiment is also run on them (``out/<id>@style``) for its content share.

    Returns:
        {"rows": {id: eval report + gap_closed* + train_seconds}, "baseline": id}; also
        written to ``out/compare.json``.
    """
    out = Path(out)
    reports: dict[str, dict[str, Any]] = {}
    configs = {name: load_ranker_config(config_file, name) for name in experiments}
    if seed is not None:
        configs = {n: c.with_overrides({"train": {"seed": seed}}) for n, c in configs.items()}
    runs = [(name, configs[name], embeddings, query_embeddings) for name in experiments]
    if style_embeddings is not None:
        runs += [(f"{n}{STYLE_SUFFIX}", _on_style(configs[n]), style_embeddings, None)
                 for n in experiments if configs[n].uses_embeddings]
    for row, config, emb, queries in runs:
        model_dir = out / row
        meta = _reusable(model_dir, config, training_set, emb) if reuse else None
        if meta is None:
            meta = train_ranker(
                training_set,
                config,
                model_dir,
                embeddings=emb,
                query_embeddings=queries,
                resume=False,
                progress=progress,
            )
        reports[row] = evaluate_ranker(model_dir, world=world)
        reports[row]["train_seconds"] = meta.get("train_seconds")
        reports[row]["reused"] = meta.get("reused", False)
    base = reports[experiments[0]]
    for row, rep in reports.items():
        style = reports.get(f"{row}{STYLE_SUFFIX}")
        for key in ("", "_cold", "_look_driven", "_other"):
            rep[f"gap_closed{key}"] = gap_closed(
                rep[f"auc{key}"], base[f"auc{key}"], base.get(f"oracle_auc{key}")
            )
            if style is not None:
                rep[f"content_share{key}"] = gap_closed(
                    rep[f"auc{key}"], base[f"auc{key}"], style.get(f"auc{key}"))
    result = {"baseline": experiments[0], "rows": reports}
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def _on_style(config: RankerConfig) -> RankerConfig:
    """The config a content experiment runs with on the perfect look vectors: itself, or,
    with a look head, itself without the head at the head's size."""
    if config.look_head is None:
        return config
    return config.with_overrides({"look_head": None, "moon_dim": config.look_head.dim})


def _reusable(
    model_dir: Path, config: Any, training_set: str | Path, embeddings: str | Path
) -> dict[str, Any] | None:
    """The meta of a finished model in ``model_dir`` that training ``config`` now would
    reproduce (same config, training set and, for ``ids+moon``, embedding version)."""
    from moon_rec.data.embeddings import EmbeddingSnapshot
    from moon_rec.ranking.model_dir import RankerDir

    meta = RankerDir(model_dir).finished_meta()
    if meta is None or meta.get("config") != config.to_dict():
        return None
    if meta.get("training_set") != str(Path(training_set).resolve()):
        return None
    if (config.uses_embeddings
            and meta.get("model_version") != EmbeddingSnapshot.open(embeddings).model_version):
        return None
    meta["reused"] = True
    return meta


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.4f}"


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of a compare result."""
    head = [
        "model", "AUC", "GAUC", "AUC cold", "AUC look", "AUC other", "gap", "gap cold",
        "gap look", "gap other", "content share", "share cold", "train s",
    ]
    lines = [head]
    for name, r in result["rows"].items():
        lines.append(
            [
                name,
                _fmt(r["auc"]),
                _fmt(r["gauc"]),
                _fmt(r["auc_cold"]),
                _fmt(r["auc_look_driven"]),
                _fmt(r.get("auc_other")),
                _fmt(r["gap_closed"], True),
                _fmt(r["gap_closed_cold"], True),
                _fmt(r["gap_closed_look_driven"], True),
                _fmt(r.get("gap_closed_other"), True),
                _fmt(r.get("content_share")),
                _fmt(r.get("content_share_cold")),
                "-" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f}",
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
            _fmt(base.get("oracle_auc_other")),
            "100%",
            "100%",
            "100%",
            "100%",
            "-",
            "-",
            "-",
        ]
    )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines
    )
