"""``torchrun --nproc_per_node 2`` (gloo): table-wise sharded over two ranks, the same AUC
band as one rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moon_rec.ranking.config import load_ranker_config
from moon_rec.ranking.evaluate import evaluate_ranker
from moon_rec.ranking.synthetic import SyntheticPaths
from moon_rec.ranking.train import train_ranker


def test_two_ranks_match_one_rank(
    ranker_data: SyntheticPaths, configs_file: Path, tmp_path: Path
) -> None:
    out2 = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "moon_rec.cli",
        "ranker",
        "train",
        "--training-set",
        str(ranker_data.training_set),
        "--embeddings",
        str(ranker_data.embeddings),
        "--config",
        str(configs_file),
        "--experiment",
        "cube_moon_tiny",
        "--out",
        str(out2),
        "--quiet",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out2 / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["done"]
    assert {p.name for p in out2.glob("checkpoint.fused.rank*")} == {
        "checkpoint.fused.rank0-of-2.pt",
        "checkpoint.fused.rank1-of-2.pt",
    }

    cfg = load_ranker_config(configs_file, "cube_moon_tiny")
    out1 = tmp_path / "one"
    train_ranker(
        ranker_data.training_set,
        cfg,
        out1,
        embeddings=ranker_data.embeddings,
        progress=False,
        device="cpu",
    )
    auc1 = evaluate_ranker(out1)["auc"]
    auc2 = evaluate_ranker(out2)["auc"]
    assert auc1 > 0.55 and auc2 > 0.55
    assert abs(auc1 - auc2) < 0.02


def _torchrun(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "moon_rec.cli",
        "ranker",
        "train",
        "--quiet",
        "--device",
        "cpu",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_two_rank_resume_is_exact(
    ranker_data: SyntheticPaths, configs_file: Path, tmp_path: Path
) -> None:
    """Killed at step 37 and resumed (weights gathered, per-rank fused optimizer state)."""
    common = [
        "--training-set",
        str(ranker_data.training_set),
        "--embeddings",
        str(ranker_data.embeddings),
        "--config",
        str(configs_file),
        "--experiment",
        "din_ids_tiny",
    ]
    assert _torchrun([*common, "--out", str(tmp_path / "a")]).returncode == 0
    first = _torchrun([*common, "--out", str(tmp_path / "b"), "--max-steps", "37"])
    assert first.returncode == 0, first.stderr[-2000:]
    assert not (tmp_path / "b" / "model.pt").exists()
    assert _torchrun([*common, "--out", str(tmp_path / "b")]).returncode == 0
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
