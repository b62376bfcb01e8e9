"""Fixtures of the feature store suite: one parametrised store per profile.

``embedded`` (DuckDB + SQLite + file registry) always runs; ``production`` (Redis + SQL
registry on PostgreSQL) is marked ``services``. Each test gets its own Feast project, so
tests never see each other's rows in the shared Redis / PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fs_data import T0

from moon_rec.featurestore.layout import FeatureDataPaths

PROFILES = ["embedded", pytest.param("production", marks=pytest.mark.services)]


@pytest.fixture(params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(tmp_path: Path, profile: str) -> Iterator[Callable[..., object]]:
    """``make_store(data_dir=None, **open_store_kwargs)`` -> applied ``MoonFeatureStore``."""
    from moon_rec.featurestore.store import open_store

    made = []

    def make(data_dir: Path | None = None, **kwargs: object) -> object:
        data = data_dir or tmp_path / "data"
        data.mkdir(parents=True, exist_ok=True)
        mfs = open_store(
            profile,
            tmp_path / f"state{len(made)}",
            FeatureDataPaths.from_dir(data),
            project=f"t_{uuid.uuid4().hex[:12]}",
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(mfs)
        return mfs

    yield make
    for mfs in made:
        mfs.teardown()


@pytest.fixture
def time0() -> datetime:
    return T0


@pytest.fixture
def one_us() -> timedelta:
    return timedelta(microseconds=1)
