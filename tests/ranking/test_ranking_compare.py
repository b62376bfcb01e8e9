"""``moon ranker compare``: baseline and MOON rankers on one split, gap closed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moon_rec.cli import main
from moon_rec.metrics.ranking import gap_closed
from moon_rec.ranking.compare import format_table
from moon_rec.ranking.synthetic import SyntheticPaths


def test_gap_closed() -> None:
    assert gap_closed(0.75, 0.7, 0.8) == pytest.approx(0.5)
    assert gap_closed(0.7, 0.7, 0.7) is None
    assert gap_closed(None, 0.7, 0.8) is None


def test_compare_cli(
    ranker_data: SyntheticPaths,
    configs_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(
        [
            "ranker",
            "compare",
            "--training-set",
            str(ranker_data.training_set),
            "--embeddings",
            str(ranker_data.embeddings),
            "--world",
            str(ranker_data.world),
            "--config",
            str(configs_file),
            "--experiments",
            "din_ids_tiny",
            "cube_moon_tiny",
            "--out",
            str(tmp_path),
            "--seed",
            "1",
        ]
    )
    assert status == 0
    table = capsys.readouterr().out
    assert "din_ids_tiny" in table and "cube_moon_tiny" in table and "oracle" in table
    result = json.loads((tmp_path / "compare.json").read_text())
    base = result["rows"]["din_ids_tiny"]
    assert base["gap_closed"] == pytest.approx(0.0)
    cube = result["rows"]["cube_moon_tiny"]
    assert cube["gap_closed"] == pytest.approx(
        (cube["auc"] - base["auc"]) / (base["oracle_auc"] - base["auc"])
    )
    assert (
        json.loads((tmp_path / "cube_moon_tiny" / "meta.json").read_text())["config"]["train"][
            "seed"
        ]
        == 1
    )
    assert format_table(result).count("\n") == 3
    assert cube["gap_closed_other"] == pytest.approx(
        (cube["auc_other"] - base["auc_other"]) / (base["oracle_auc_other"] - base["auc_other"])
    )
    assert base["train_seconds"] > 0 and not base["reused"]
    # --reuse keeps finished models with the same config / training set / embeddings
    stamp = (tmp_path / "din_ids_tiny" / "model.pt").stat().st_mtime_ns
    args = [
        "ranker", "compare", "--training-set", str(ranker_data.training_set),
        "--embeddings", str(ranker_data.embeddings), "--world", str(ranker_data.world),
        "--config", str(configs_file), "--experiments", "din_ids_tiny", "--out",
        str(tmp_path), "--seed", "1", "--reuse", "--json",
    ]
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)["rows"]["din_ids_tiny"]
    assert again["reused"] and again["auc"] == pytest.approx(base["auc"])
    assert (tmp_path / "din_ids_tiny" / "model.pt").stat().st_mtime_ns == stamp
    assert main([*args[:-3], "2", "--reuse", "--json"]) == 0  # another seed: retrained
    assert not json.loads(capsys.readouterr().out)["rows"]["din_ids_tiny"]["reused"]


def test_compare_content_share_against_perfect_look_vectors(
    ranker_data: SyntheticPaths, configs_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from datetime import UTC, datetime

    import numpy as np

    from moon_rec.data.embeddings import (
        embedding_table,
        load_moon_embeddings,
        prefixes_of,
        write_embedding_table,
    )

    # "perfect look" vectors: any other embedding table of the same items (a synthetic
    # world's are diagnostics.write_oracle_style_embeddings; this ranker world has no style)
    emb = load_moon_embeddings(ranker_data.embeddings, 64)
    rng = np.random.default_rng(0)
    vecs = emb.item_vectors + 0.5 * rng.normal(size=emb.item_vectors.shape).astype(np.float32)
    style = write_embedding_table(
        embedding_table(emb.item_ids, prefixes_of(vecs, (32, 64)), "oracle-style",
                        datetime(2026, 1, 1, tzinfo=UTC)), tmp_path / "style" / "items.parquet")
    args = ["ranker", "compare", "--training-set", str(ranker_data.training_set),
            "--embeddings", str(ranker_data.embeddings), "--world", str(ranker_data.world),
            "--config", str(configs_file), "--experiments", "din_ids_tiny", "cube_moon_tiny",
            "--style-embeddings", str(style), "--out", str(tmp_path / "out"), "--seed", "1"]
    assert main(args) == 0
    assert "content share" in capsys.readouterr().out
    rows = json.loads((tmp_path / "out" / "compare.json").read_text())["rows"]
    # only the content ranker gets a perfect-look twin; the ID baseline has none
    assert set(rows) == {"din_ids_tiny", "cube_moon_tiny", "cube_moon_tiny@style"}
    base, cube, ceiling = rows["din_ids_tiny"], rows["cube_moon_tiny"], rows["cube_moon_tiny@style"]
    assert json.loads((tmp_path / "out" / "cube_moon_tiny@style" / "meta.json").read_text())[
        "model_version"] == "oracle-style"
    for key in ("", "_cold", "_look_driven"):
        assert cube[f"content_share{key}"] == pytest.approx(
            (cube[f"auc{key}"] - base[f"auc{key}"]) / (ceiling[f"auc{key}"] - base[f"auc{key}"]))
    assert "content_share" not in base
