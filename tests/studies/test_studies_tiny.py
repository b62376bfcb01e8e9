"""The tiny variant of each study on the tiny world, end to end through the `moon` CLI:
exchange rate, the three scaling axes, resume, and the report with its plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moon_rec.cli import main

# The tiny preset cut further: 10 encoder versions, 3 points on the encoder axes, 4 on
# seq_len, half the requests; about a second per point.
TINY = [
    "--preset", "tiny",
    "--set", "encoder.pretrain_steps=8",
    "--set", "encoder.main_steps=12",
    "--set", "encoder.snapshots=[3,6,12]",
    "--set", "encoder.variant_steps=6",
    "--set", "encoder.queue_sizes=[0,16,64]",
    "--set", "ranker.seq_lens=[1,3,6,12]",
    "--set", "ranker.noise_versions=[untrained]",
    "--set", "ranker.noise_seeds=[1]",
    "--set", "ranker.max_train_requests=1200",
    "--set", "ranker.max_test_requests=500",
    "--quiet",
]


@pytest.fixture(scope="module")
def study(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study")
    assert main(["study", "exchange-rate", "--world", str(tiny_world), "--out", str(out),
                 "--no-report", *TINY]) == 0
    return out


def test_exchange_rate_study(study: Path) -> None:
    res = json.loads((study / "exchange_rate.json").read_text())
    versions = res["versions"]
    assert len(versions) >= 6
    assert {"untrained", "pretrain", "text_only", "image_only"} <= set(versions)
    for row in versions.values():
        for m in ("recall@10", "text_recall@10", "probe_acc", "image_title_align", "auc"):
            assert row[m] is not None
    assert res["baseline"] == min(versions, key=lambda n: versions[n]["auc"])
    assert set(res["metrics"]) == set(res["candidate_metrics"])
    for s in res["metrics"].values():
        assert {"rate_median", "rate_iqr", "slope", "spearman", "kendall"} <= set(s)
    assert res["best"] in res["candidate_metrics"]
    assert len(versions["untrained"]["auc_seeds"]) == 2  # the noise seed
    # every point records its config and seed; distinct encoders have distinct versions
    rec = json.loads((study / "points" / "ranker" / "pretrain--seed0.json").read_text())
    assert rec["seed"] == 0 and rec["config"]["ranker"]["seed"] == 0
    assert rec["config"]["ranker"]["base"]["behaviour"]["module"] == "cube"
    assert res["reference"]["auc"] is not None  # the ID-only reference ranker
    assert len({r["model_version"] for r in versions.values()}) == len(versions)
    # embeddings follow the ranker contract and carry the encoder's model_version
    import pyarrow.parquet as pq

    t = pq.read_table(study / "embeddings" / "pretrain" / "items.parquet")
    assert {"item_id", "emb_32", "emb_256", "model_version", "event_timestamp"} <= set(
        t.column_names)
    assert t.column("model_version")[0].as_py() == versions["pretrain"]["model_version"]


def test_resume_recomputes_nothing(study: Path, tiny_world: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (study / "points").rglob("*.json")}
    assert main(["study", "exchange-rate", "--world", str(tiny_world), "--out", str(study),
                 "--no-report", *TINY]) == 0
    after = {p: p.stat().st_mtime_ns for p in (study / "points").rglob("*.json")}
    assert before == after


@pytest.mark.parametrize("axis", ["tokens", "negatives", "seq_len"])
def test_scaling_axes(study: Path, tiny_world: Path, axis: str) -> None:
    assert main(["study", "scaling", "--axis", axis, "--world", str(tiny_world), "--out",
                 str(study), "--no-report", *TINY]) == 0
    res = json.loads((study / f"scaling_{axis}.json").read_text())
    key = "auc" if axis == "seq_len" else "recall@10"
    assert len(res["rows"]) >= 3
    assert all(r[key] is not None for r in res["rows"])
    assert key in res["fits"]
    fit = res["fits"][key]
    assert fit["ok"] or fit["error"]
    if axis == "seq_len":
        assert [r["x"] for r in res["rows"]] == [1, 3, 6, 12]


def test_report_rebuilds_from_points(study: Path, tiny_world: Path) -> None:
    for axis in ("tokens", "negatives", "seq_len"):  # idempotent: all points exist
        main(["study", "scaling", "--axis", axis, "--world", str(tiny_world), "--out",
              str(study), "--no-report", *TINY])
    out = study / "rep"
    assert main(["report", "--study", str(study), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    for name in ("exchange_rate.png", "scaling_tokens.png", "scaling_negatives.png",
                 "scaling_seq_len.png"):
        assert (out / name).stat().st_size > 10_000
        assert f"]({name})" in md
    assert "Spearman" in md and "Best guide" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
