"""The demo's report: ``ARTIFACTS/report.md`` with its plots under ``ARTIFACTS/report/``.

Every number in it is read from the JSON the steps wrote (``recall_stages/*.json``,
``rankers/compare.json``, ``serving.json``, ``demo_state.json``, ...), so the report and the
outputs cannot disagree. A metric a world cannot have reads "n/a": image-search recall in a
text-only world (MovieLens), the oracle AUC and gap closed in a world without ground truth
(any real one), where the rankers are compared on AUC overall and on cold items instead.
Rebuild it alone with

    python -m pipelines.demo_report --artifacts artifacts
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from moon_rec.loop import Layout, ranker_experiments
from moon_rec.runtime import atomic_write_text

STAGES = ("pretrain", "stage1", "stage2")


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _f(x: Any, nd: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _delta(x: Any, base: Any) -> str:
    return "n/a" if x is None or base is None else f"{x - base:+.4f}"


def _has_image_recall(rec: dict[str, Any]) -> bool:
    return any(v.get("recall@10") is not None for v in rec.get("by_dim", {}).values())


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _dims(rec: dict[str, Any]) -> list[str]:
    return sorted(rec.get("by_dim", {}), key=int)


def _plot_recall(stages: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    final = [stages[s] for s in STAGES if stages.get(s)][-1]
    dims = _dims(final)
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    series = [(s, stages[s]) for s in STAGES if stages.get(s)]
    series += [(f"baseline: {k}", v) for k, v in final.get("baselines", {}).items()
               if k != "color_histogram" and v]
    for name, rec in series:
        ys = [rec["by_dim"][d]["recall@10"] for d in dims if d in rec.get("by_dim", {})]
        ax.plot([int(d) for d in dims][: len(ys)], ys, marker="o", label=name)
    hist = final.get("baselines", {}).get("color_histogram")
    if hist:
        ax.axhline(hist["recall@10"], color="grey", ls="--", label="baseline: colour histogram")
    ax.axhline(0.90, color="red", ls=":", lw=1, label="target 0.90")
    ax.set_xscale("log", base=2)
    ax.set_xticks([int(d) for d in dims], [str(d) for d in dims])
    ax.set_xlabel("Matryoshka embedding dimension")
    ax.set_ylabel("image-search recall@10")
    ax.set_ylim(0, 1)
    ax.set_title("Image-based search recall@10 per dimension and training stage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _plot_rankers(compare: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = compare["rows"]
    oracle = rows[compare["baseline"]].get("oracle_auc") is not None
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    if oracle:
        names = [n for n in rows if n != compare["baseline"]]  # the baseline closes 0%
        groups = [("overall", "gap_closed"), ("cold items", "gap_closed_cold"),
                  ("look-driven", "gap_closed_look_driven")]
        scale = 100.0
    else:  # no oracle: the AUCs themselves, every model
        names = list(rows)
        groups = [("overall", "auc"), ("cold items", "auc_cold"), ("warm items", "auc_warm")]
        scale = 1.0
    x = np.arange(len(groups))
    w = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        ys = [scale * (rows[n].get(k) or 0.0) for _, k in groups]
        ax.bar(x + i * w - 0.4 + w / 2, ys, w, label=n)
    ax.set_xticks(x, [g for g, _ in groups])
    if oracle:
        ax.axhline(50, color="red", ls=":", lw=1, label="target overall 50%")
        ax.axhline(65, color="darkred", ls="--", lw=1, label="target cold 65%")
        ax.set_ylabel("AUC gap closed vs ID-only DIN (%)")
        ax.set_title("How much of the ID-only -> oracle AUC gap each ranker closes")
    else:
        aucs = [rows[n].get(k) for n in names for _, k in groups]
        low = min([a for a in aucs if a is not None] or [0.5])
        ax.set_ylim(max(0.0, low - 0.05), 1.0)
        ax.set_ylabel("test AUC")
        ax.set_title("Test AUC of each ranker (no oracle in a real world)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def write_report(layout: Layout, *, preset: str, seed: int, experiments: list[str]) -> Path:
    """Write ``report.md`` (and its PNGs) into the layout's root; returns its path."""
    art = layout.root
    figs = art / "report"
    figs.mkdir(parents=True, exist_ok=True)
    world = _load(layout.world / "world.json") or {}
    stages = {s: _load(layout.recall_stages / f"{s}.json") for s in STAGES}
    present = [s for s in STAGES if stages.get(s)]
    compare = _load(layout.rankers / "compare.json")
    serving = _load(layout.file("serving.json"))
    state = _load(layout.file("demo_state.json")) or {}
    embed = _load(layout.file("embed.json"))
    materialized = _load(layout.feature_state / "materialized.json")

    stats = world.get("summary", world)
    real = stats.get("source") == "movielens-100k"
    source = stats.get("source")
    title = (f"MovieLens-100k, seed {seed}" if real
             else f"imported world `{source}`, seed {seed}" if isinstance(source, str)
             else f"world preset `{preset}`, seed {seed}")
    md: list[str] = [f"# MOON demo report ({title})", ""]
    line = (f"{stats.get('n_items', '?')} items, {stats.get('n_users', '?')} users, "
            f"{stats.get('n_impressions', '?')} impressions (CTR {_f(stats.get('ctr'), 3)}), "
            f"{stats.get('n_image_queries', '?')} image queries. ")
    if stats.get("oracle_auc_test") is not None:
        line += f"Oracle AUC on the test period: {_f(stats.get('oracle_auc_test'))}. "
    else:
        line += "Oracle AUC: n/a (no ground truth in a real world, so no gap closed). "
    if real:
        line += (f"Imported from `{stats.get('format')}` files: {stats.get('labels')}. "
                 f"Time split at the {stats.get('split_quantile')} quantile of the ratings "
                 f"(train end {stats.get('train_end_ts')}): "
                 f"{stats.get('n_impressions_test')} test impressions, "
                 f"{stats.get('n_cold_items')} cold movies (first rated after the split) "
                 f"with {stats.get('n_impressions_test_cold')} of them. Text-only: no photos.")
    if layout.file("contact_sheet.png").is_file():
        line += "Catalog photos beside user photos: [contact_sheet.png](contact_sheet.png)."
    md += ["## The world", "", line, ""]

    final = stages[present[-1]] if present else None
    if final:
        images = _has_image_recall(final)
        dims = _dims(final)
        rows = []
        for name, rec in [*[(s, stages[s]) for s in present],
                          *final.get("baselines", {}).items()]:
            if not rec:  # a baseline that could not run (e.g. its text tower is gone)
                rows.append([name, *["n/a"] * (6 + len(dims))])
                continue
            by = rec.get("by_dim", {})
            rows.append([name, _f(rec.get("recall@1"), 3), _f(rec.get("recall@10"), 3),
                         _f(rec.get("recall@100"), 3),
                         *[_f(by.get(d, {}).get("recall@10"), 3) for d in dims],
                         _f(rec.get("text_recall@10"), 3),
                         _f(rec.get("next_item_recall@10"), 3), _f(rec.get("probe_acc"), 3)])
        if images:
            head = (f"{final.get('n_image_queries')} user photos searched against "
                    f"{final.get('n_items')} catalog items (exact faiss search). Encoder "
                    f"`{final.get('model_version')}`. R@K at the full dimension (the colour "
                    "histogram has its own), then recall@10 of each Matryoshka prefix.")
        elif stats.get("text_only") is False:
            head = (f"No image queries (user photos) in this world, so image-search recall "
                    f"(R@K) is n/a. {final.get('n_items')} catalog items embedded from photo, "
                    f"title and attributes by encoder `{final.get('model_version')}`.")
        else:
            head = (f"A text-only world: no photos, so image-search recall (R@K) is n/a. "
                    f"{final.get('n_items')} catalog items embedded from title + attributes "
                    f"by encoder `{final.get('model_version')}`.")
        n_text = final.get("n_text_queries")
        if not n_text:
            head += " Text R@10: n/a (no query texts)."
        elif final.get("text_recall_queries") == "titles":
            head += (f" Text R@10: no search logs, so known-item title search: {n_text} "
                     "titles (less their year), each should find its own item.")
        else:
            head += f" Text R@10: {n_text} held-out query texts."
        head += (" Next-item R@10: "
                 f"{final.get('n_next_item_targets')} held-out liked items, each searched "
                 "with the mean of its user's last 10 train-period items, those left out "
                 "(moon_rec/retrieval/recall.py).")
        md += ["## Intermediate metrics: image search, text and next-item recall (DESIGN §6)",
               "", head, "",
               _table(["encoder", "R@1", "R@10", "R@100", *[f"R@10 @{d}d" for d in dims],
                       "text R@10", "next-item R@10", "category probe"], rows), ""]
        if images:
            _plot_recall(stages, figs / "recall.png")
            md += ["![recall per dim](report/recall.png)", ""]

    if compare:  # compare.json keeps its rows sorted by name: baseline first, then as run
        order = [compare["baseline"], *experiments, *compare["rows"]]
        compare = {**compare, "rows": {n: compare["rows"][n] for n in dict.fromkeys(order)
                                       if n in compare["rows"]}}
        _plot_rankers(compare, figs / "rankers.png")
        base = compare["rows"][compare["baseline"]]
        if base.get("oracle_auc") is not None:
            rows = [[n, _f(r.get("auc")), _f(r.get("gauc")), _f(r.get("auc_cold")),
                     _f(r.get("auc_look_driven")), _f(r.get("auc_other")),
                     _pct(r.get("gap_closed")), _pct(r.get("gap_closed_cold")),
                     _pct(r.get("gap_closed_look_driven")), _f(r.get("content_share"), 2),
                     _f(r.get("content_share_cold"), 2)]
                    for n, r in compare["rows"].items()]
            rows.append(["oracle", _f(base.get("oracle_auc")), "-",
                         _f(base.get("oracle_auc_cold")), _f(base.get("oracle_auc_look_driven")),
                         "-", "100%", "100%", "100%", "-", "-"])
            md += ["## CTR rankers (TorchRec, DESIGN §8)", "",
                   f"Trained on the point-in-time training set, evaluated on "
                   f"{base.get('n_test')} test impressions; gap closed = (AUC - AUC_ids) / "
                   f"(AUC_oracle - AUC_ids) against `{compare['baseline']}`. A `@style` row "
                   "is the same ranker on the world's perfect look vectors instead of MOON's "
                   "(no query embeddings); content share = (AUC - AUC_ids) / (AUC of the "
                   "`@style` row - AUC_ids).", "",
                   _table(["model", "AUC", "GAUC", "AUC cold", "AUC look-driven", "AUC other",
                           "gap closed", "gap cold", "gap look-driven", "content share",
                           "share cold"], rows), "",
                   "![gap closed](report/rankers.png)", ""]
        else:
            rows = [[n, _f(r.get("auc")), _f(r.get("gauc")), _f(r.get("auc_cold")),
                     _f(r.get("auc_warm")), _f(r.get("logloss")),
                     _delta(r.get("auc"), base.get("auc")),
                     _delta(r.get("auc_cold"), base.get("auc_cold")),
                     "-" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f}"]
                    for n, r in compare["rows"].items()]
            md += ["## CTR rankers (TorchRec, DESIGN §8)", "",
                   f"Trained on the point-in-time training set, evaluated on "
                   f"{base.get('n_test')} test impressions ({base.get('n_cold')} on cold "
                   "items). No oracle in a real world: oracle AUC and gap closed are n/a; "
                   f"the MOON rankers are compared with `{compare['baseline']}` on AUC "
                   "overall and on cold items (delta = AUC - the baseline's).", "",
                   _table(["model", "AUC", "GAUC", "AUC cold", "AUC warm", "logloss",
                           "delta AUC", "delta AUC cold", "train s"], rows), "",
                   "![AUC](report/rankers.png)", ""]

    if serving:
        lat = serving.get("latency_ms", {})
        md += ["## Serving", "",
               f"`moon serve` on loopback with model `{serving.get('model_version')}` and "
               f"embeddings `{serving.get('embedding_version')}`: {serving.get('n_requests')} "
               f"/rank requests of {serving.get('n_candidates')} candidates, p50 "
               f"{_f(lat.get('p50'), 2)} ms, p99 {_f(lat.get('p99'), 2)} ms over HTTP.", ""]
        if serving.get("new_item"):
            ni = serving["new_item"]
            md += [f"New item {ni.get('item_id')} added through `POST /items` and ranked "
                   f"{ni.get('rank')} of {ni.get('n_candidates')} for user {ni.get('user_id')} "
                   f"right after (score {_f(ni.get('score'))}); `POST /search` with its title "
                   f"{'finds' if ni.get('found_by_text_search') else 'does not find'} it in the "
                   "top 10.", ""]

    rows = [[name, _f(rec.get("seconds"), 1), "reused (up to date)" if rec.get("skipped") else "ran"]
            for name, rec in state.items() if rec.get("seconds") is not None]
    if rows:
        total = sum(float(r[1]) for r in rows)
        slowest = max(rows, key=lambda r: float(r[1]))
        md += ["## Where the time went", "",
               f"{total / 60:.1f} minutes of step time; the longest step is *{slowest[0]}*. "
               "Durations are from each step's last real run.", "",
               _table(["step", "seconds", "this run"], rows), ""]
    if embed or materialized:
        md += ["## Feature store", ""]
        if embed:
            md += [f"Embedding job: {embed.get('n_items')} items at "
                   f"{embed.get('items_per_s')} items/s, model_version "
                   f"`{embed.get('model_version')}`.", ""]
        if materialized:
            md += ["Materialized into the SQLite online store: " + ", ".join(
                f"{m.get('view', '?')} in {m.get('seconds', '?')} s"
                + (f" ({m['rows']} rows)" if m.get("rows") else "")
                for m in materialized) + ".", ""]

    md += ["## Where everything lives", "", _table(["artefact", "path"], [
        [a, f"`{p}`"] for a, p in [
            ("world (parquet + world.json)", layout.world),
            ("encoder checkpoints per stage", layout.encoder),
            ("recall JSON per stage", layout.recall_stages),
            ("item embeddings (parquet parts + manifest)", layout.embeddings),
            ("feature tables", layout.feature_data),
            ("Feast registry + SQLite online store", layout.feature_state),
            ("Feast repository folder (moon serve --repo)", layout.serving_repo),
            ("point-in-time training set", layout.training_set),
            ("rankers + compare.json", layout.rankers),
            ("serving figures", layout.file("serving.json")),
            ("step state (keys, durations)", layout.file("demo_state.json")),
        ]]), ""]
    out = layout.file("report.md")
    atomic_write_text(out, "\n".join(md))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    p.add_argument("--preset", default="small")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(write_report(Layout.at(args.artifacts), preset=args.preset, seed=args.seed,
                       experiments=ranker_experiments(args.preset)))


if __name__ == "__main__":
    main()
