"""Fixtures of the ranker tests: a small synthetic training set + embeddings + world."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moon_rec.ranking.synthetic import SyntheticPaths, write_synthetic_ranker_inputs

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ranker" / "experiments.yaml"


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ranker_data(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPaths:
    return write_synthetic_ranker_inputs(tmp_path_factory.mktemp("ranker_data"), seed=0)


@pytest.fixture(scope="session")
def configs_file() -> Path:
    return CONFIGS
