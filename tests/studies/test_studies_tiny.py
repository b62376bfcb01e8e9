"""The studies on the tiny world, end to end through the `moon` CLI: the recipe with its
snapshots (the loop's encoder step), variants, several ranker seeds and the ID-only
reference, the statistics, the three scaling axes, resume, and the report with its plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moon_rec.cli import main

# The tiny preset cut further: 10 encoder versions, 2 ranker seeds, a third of the requests;
# about a second per point.
TINY = [
    "--preset", "tiny",
    "--set", "encoder.overrides=[pretrain.steps=8, stage1.steps=12, stage2.steps=6]",
    "--set", "encoder.snapshots={pretrain: [4], stage1: [3, 6]}",
    "--set", "encoder.variants={text_only: {init: pretrain, steps: 4, group: modality, "
             "update: {mix: {text_product: 1.0}}}, no_hard_negatives: {init: stage1, "
             "stage: stage2, group: objective, update: {hard_negatives: 0}}}",
    "--set", "encoder.queue_sizes=[64]",
    "--set", "ranker.seeds=[0, 1]",
    "--set", "ranker.seq_lens=[1, 3, 6]",
    "--set", "ranker.max_train_requests=600",
    "--set", "ranker.max_test_requests=300",
    "--set", "bootstrap_resamples=200",
    "--quiet",
]
VERSIONS = {"untrained", "pretrain_s00004", "pretrain", "stage1_s00003", "stage1_s00006",
            "stage1", "stage2", "text_only", "no_hard_negatives", "queue_q00064"}


@pytest.fixture(scope="module")
def study(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study")
    assert main(["study", "all", "--world", str(tiny_world), "--out", str(out), *TINY]) == 0
    return out


def test_versions_metrics_and_seeds(study: Path) -> None:
    res = json.loads((study / "exchange_rate.json").read_text())
    versions = res["versions"]
    assert set(versions) == VERSIONS
    for row in versions.values():
        for m in ("recall@1", "recall@10", "recall@100", "recall@10_d32", "text_recall@10",
                  "probe_acc", "image_title_align", "style_r2", "auc", "auc_cold"):
            assert row[m] is not None, m
        assert set(row["auc_seeds"]) == {"0", "1"} and row["auc_std"] is not None
    assert res["metric_info"]["style_r2"]["real_catalog"] is False
    assert res["metric_info"]["recall@10"]["real_catalog"] is True
    assert set(res["metrics"]) == set(res["candidate_metrics"])
    for s in res["metrics"].values():
        assert {"slope", "slope_ci", "spearman", "spearman_ci", "kendall", "kendall_ci",
                "rates"} <= set(s)
    assert res["best"] in res["candidate_metrics"] and res["conclusion"]
    assert res["cold"]["best"] in res["candidate_metrics"]
    assert set(res["noise"]) >= {"auc_version_range", "auc_seed_std_mean", "ratio", "resolves"}
    ref = res["reference"]
    assert ref["auc"] is not None and set(ref["auc_seeds"]) == {"0", "1"}
    # the recipe: the loop's encoder step kept the snapshots; every version is distinct
    assert (study / "shared" / "encoder" / "stage1" / "snapshots" / "step-000003").is_dir()
    assert len({r["model_version"] for r in versions.values()}) == len(versions)
    assert versions["stage2"]["negatives"] == 31 + 32 + 128  # in-batch + hard + queue
    assert versions["queue_q00064"]["negatives"] == 31 + 32 + 64
    rec = json.loads((study / "points" / "ranker" / "pretrain--seed1.json").read_text())
    assert rec["seed"] == 1 and rec["config"]["ranker"]["seed"] == 1
    assert rec["config"]["ranker"]["base"]["behaviour"]["module"] == "cube"
    import pyarrow.parquet as pq

    t = pq.read_table(study / "embeddings" / "pretrain" / "items.parquet")
    assert {"item_id", "emb_32", "emb_256", "model_version", "event_timestamp"} <= set(
        t.column_names)
    assert t.column("model_version")[0].as_py() == versions["pretrain"]["model_version"]


def test_resume_recomputes_nothing(study: Path, tiny_world: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (study / "points").rglob("*.json")}
    encoder = study / "shared" / "encoder" / "stage2" / "summary.json"
    mtime = encoder.stat().st_mtime_ns
    assert main(["study", "all", "--world", str(tiny_world), "--out", str(study), "--no-report",
                 *TINY]) == 0
    after = {p: p.stat().st_mtime_ns for p in (study / "points").rglob("*.json")}
    assert before == after and encoder.stat().st_mtime_ns == mtime
    # a lost point is recomputed alone
    lost = study / "points" / "ranker" / "text_only--seed1.json"
    lost.unlink()
    assert main(["study", "exchange-rate", "--world", str(tiny_world), "--out", str(study),
                 "--no-report", *TINY]) == 0
    assert lost.is_file()
    again = {p: p.stat().st_mtime_ns for p in (study / "points").rglob("*.json")}
    assert {p for p in again if again[p] != after.get(p)} == {lost}


@pytest.mark.parametrize("axis", ["tokens", "negatives", "seq_len"])
def test_scaling_axes(study: Path, tiny_world: Path, axis: str) -> None:
    assert main(["study", "scaling", "--axis", axis, "--world", str(tiny_world), "--out",
                 str(study), "--no-report", *TINY]) == 0
    res = json.loads((study / f"scaling_{axis}.json").read_text())
    key = "auc" if axis == "seq_len" else "recall@10"
    assert len(res["rows"]) == (2 if axis == "negatives" else 3)  # stage2 + one queue run
    assert all(r[key] is not None for r in res["rows"])
    fit = res["fits"][key]
    assert not fit["identified"]
    assert ("need >= 3" if axis == "negatives" else "fewer than 5") in fit["reason"]
    if axis == "seq_len":
        assert [r["x"] for r in res["rows"]] == [1, 3, 6]
    if axis == "tokens":
        assert [r["version"] for r in res["rows"]] == ["stage1_s00003", "stage1_s00006", "stage1"]


def test_report_rebuilds_from_points(study: Path) -> None:
    out = study / "rep"
    assert main(["report", "--study", str(study), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    for name in ("exchange_rate.png", "scaling_tokens.png", "scaling_negatives.png",
                 "scaling_seq_len.png"):
        assert (out / name).stat().st_size > 10_000
        assert f"]({name})" in md
    for text in ("Spearman [95%]", "Best guide", "Conclusion:", "Noise check", "real catalog",
                 "no (oracle)", "no: 3 points", "ID-only"):
        assert text in md, text
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
