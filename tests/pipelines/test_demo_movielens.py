"""The demo on an imported world: a generated GroupLens-format fixture (never the real
MovieLens files) and a tiny BERT text tower saved with ``save_pretrained`` (the mechanism
that loads all-MiniLM-L6-v2), the encoder and ranker experiments shrunk. Every step runs:
import, validate, post-training from the tower (no pretraining), intermediate metrics
(image ones n/a, next-item recall computed), embed (text-only products), Feast, training
set, an empty query-embedding table, DIN on IDs vs CUBE with MOON vectors (no oracle),
serving with a text-only new item through POST /items, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from movielens_data import save_tiny_bert, write_grouplens_fixture

from moon_rec.loop import run_steps
from pipelines.demo import build_steps, main

ENCODER = (
    # the feature store keeps the four Matryoshka sizes (32 .. 256): the dims stay
    "encoder.hidden_size=32", "encoder.num_heads=2",
    "stage1.steps=4", "stage1.batch_size=8", "stage1.warmup_steps=1",
    "stage1.checkpoint_every=2", "stage1.log_every=1",
    "stage2.steps=2", "stage2.batch_size=8", "stage2.warmup_steps=1",
    "stage2.checkpoint_every=2", "stage2.log_every=1", "stage2.hard_negative_pool=5",
)
RANKERS = ["din_ids_tiny", "cube_moon_tiny"]


@pytest.mark.slow
def test_demo_movielens_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ml = write_grouplens_fixture(tmp_path / "ml-100k")
    tower = save_tiny_bert(tmp_path / "tower")
    art = tmp_path / "art"

    def steps() -> list:
        return build_steps("movielens", 0, art, world="movielens", movielens_path=ml,
                           text_tower=tower, experiments=RANKERS, encoder_overrides=ENCODER)

    run_steps(steps(), art / "demo_state.json", label="demo")
    world = json.loads((art / "world" / "world.json").read_text())
    assert world["text_only"] and world["oracle_auc_test"] is None
    # the encoder: post-trained from the tower, no pretraining
    assert not (art / "encoder" / "pretrain").exists()
    s1 = json.loads((art / "encoder" / "stage1" / "summary.json").read_text())
    assert s1["config"]["encoder"]["text_tower"] == str(tower.resolve())
    assert (art / "encoder" / "stage2" / "encoder" / "text_tower" / "config.json").is_file()
    recall = json.loads((art / "recall.json").read_text())
    assert recall["recall@10"] is None and recall["text_recall_queries"] == "titles"
    assert 0.0 <= recall["text_recall@10"] <= 1.0
    assert recall["n_next_item_targets"] > 0 and 0 <= recall["next_item_recall@10"] <= 1
    # text-only products; queries: an empty table
    manifest = json.loads((art / "embeddings" / "manifest.json").read_text())
    assert manifest["n_items"] == world["n_items"] and manifest["n_rejects"] == 0
    assert pq.read_table(art / "query_embeddings.parquet").num_rows == 0
    compare = json.loads((art / "rankers" / "compare.json").read_text())
    assert sorted(compare["rows"]) == sorted(RANKERS) and compare["baseline"] == RANKERS[0]
    for row in compare["rows"].values():
        assert row["oracle_auc"] is None and row["gap_closed"] is None
        assert 0 < row["auc"] < 1 and row["n_cold"] > 0
    serving = json.loads((art / "serving.json").read_text())
    assert serving["new_item"]["rank"] >= 1  # a text-only item through POST /items
    report = (art / "report.md").read_text()
    assert "MovieLens-100k" in report and "Oracle AUC: n/a" in report
    assert f"{recall['next_item_recall@10']:.3f}" in report
    assert report.index(f"| {RANKERS[0]} |") < report.index(f"| {RANKERS[1]} |")
    for row in compare["rows"].values():
        assert f"{row['auc']:.4f}" in report
        assert f"{row['auc_cold']:.4f}" in report
    assert (art / "report" / "rankers.png").stat().st_size > 1000
    assert not (art / "report" / "recall.png").exists()  # no image-search recall to plot
    capsys.readouterr()
    # a second run reuses every artefact
    state = run_steps(steps(), art / "demo_state.json", label="demo")
    assert all(rec["skipped"] for rec in state.values()), capsys.readouterr().out


def test_demo_movielens_dry_run_and_missing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--world", "movielens", "--artifacts", str(tmp_path / "art"),
            "--movielens-path", str(tmp_path / "ml"), "--text-tower", str(tmp_path / "tower")]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "moon data import movielens --path" in out and "--text-tower" in out
    assert "moon encoder pretrain" not in out
    assert main(args) == 2
    assert "scripts/fetch_movielens.sh" in capsys.readouterr().err
