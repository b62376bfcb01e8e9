"""Fixtures of the pipeline tests: a generated tiny world and a small hand-made catalog
with bad rows (see ``pipeline_data``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pipeline_data import T0, make_catalog


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    world = tmp_path / "world"
    make_catalog(world)
    return world


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generator's ``tiny`` preset (seed 1), made once per session (~10 s)."""
    from moon_rec.data.world import generate_world, make_config

    out = tmp_path_factory.mktemp("tiny_world")
    generate_world(make_config("tiny", 1), out, progress=False)
    return out


@pytest.fixture
def time0() -> datetime:
    return T0


@pytest.fixture
def hour() -> timedelta:
    return timedelta(hours=1)
