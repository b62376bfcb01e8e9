"""Shared test fixtures: a tiny world generated once per session, offline hub, one thread."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

import moon_rec  # noqa: F401  (before any torch import: OpenMP's passive wait, moon_rec.runtime)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset, seed 1, generated once for the whole test session. Treat as read-only."""
    from moon_rec.data.world import generate_world, make_config

    out = tmp_path_factory.mktemp("world") / "tiny"
    generate_world(make_config("tiny", 1), out, progress=False)
    return out
