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
