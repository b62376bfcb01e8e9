"""The online store interface: a new back-end is one module (a ``MoonOnlineStore`` subclass
and its config) plus a profile YAML naming it; a store that misses a method, or is not a
MOON store at all, is refused where the writer starts, naming its class."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest
from feast.feature_view import FeatureView
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.repo_config import RepoConfig

from moon_rec.featurestore.stores import EncodedRows, MoonOnlineStore, StoreInterfaceError

# Feast finds a store by its dotted path and its config as ``<class>Config`` beside it;
# pytest imports this file as a top-level module (its folder is on sys.path)
_HALF = f"{__name__}.HalfSqliteOnlineStore"


class HalfSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """The config of the store below (Feast's SQLite keys, this module's type)."""

    type: Literal[_HALF] = _HALF  # type: ignore[assignment,valid-type]


class HalfSqliteOnlineStore(SqliteOnlineStore, MoonOnlineStore):
    """A new back-end that implements the bulk write and the atomic update but forgot the
    change log and ``fault_types``."""

    def write_encoded(self, config: RepoConfig, table: FeatureView, batch: EncodedRows) -> None:
        self.online_write_batch(config, table, batch.write_rows(), None)

    def update_rows(self, config: RepoConfig, table: FeatureView, keys: Sequence[object],
                    update: object) -> None:
        raise NotImplementedError


def _profile(tmp_path: Path, store_type: str) -> Path:
    """The embedded profile with another ``online_store.type``."""
    from moon_rec.featurestore.store import PROFILE_DIR

    body = (PROFILE_DIR / "embedded.yaml").read_text()
    path = tmp_path / "profile.yaml"
    path.write_text(body.replace(
        "type: moon_rec.featurestore.stores.sqlite.MoonSqliteOnlineStore", f"type: {store_type}"
    ))
    assert store_type in path.read_text()
    return path


def _writer(tmp_path: Path, store_type: str) -> object:
    from moon_rec.featurestore.layout import FeatureDataPaths
    from moon_rec.featurestore.push import OnlineWriter
    from moon_rec.featurestore.store import open_store

    mfs = open_store(_profile(tmp_path, store_type), tmp_path / "state",
                     FeatureDataPaths.from_dir(tmp_path / "data"), apply=False)
    return OnlineWriter(mfs)


def test_a_store_missing_a_method_is_refused_naming_it_and_the_methods(tmp_path: Path) -> None:
    with pytest.raises(StoreInterfaceError) as err:
        _writer(tmp_path, _HALF)
    assert isinstance(err.value, ValueError)  # moon reports it as "error: ...", exit 2
    msg = str(err.value)
    assert "HalfSqliteOnlineStore" in msg
    for method in ("fault_types", "log_changes", "read_changes"):
        assert method in msg
    assert "write_encoded" in msg  # the message says what the interface is


def test_a_plain_feast_store_is_refused_naming_its_class(tmp_path: Path) -> None:
    with pytest.raises(StoreInterfaceError,
                       match=r"feast\.infra\.online_stores\.sqlite\.SqliteOnlineStore is not a "
                             r"MOON online store"):
        _writer(tmp_path, "sqlite")


def test_the_profiles_stores_declare_their_faults(make_store: object) -> None:
    mfs = make_store()  # type: ignore[operator]
    store = mfs.online_store
    assert isinstance(store, MoonOnlineStore)
    faults = mfs.fault_types()
    assert ConnectionError in faults and TimeoutError in faults
    if mfs.config.registry.registry_type == "sql":
        from sqlalchemy import exc as sa

        assert sa.OperationalError in faults
    else:
        assert sqlite3.OperationalError in faults
    from moon_rec.featurestore.stores import StoreBusy

    assert not any(issubclass(StoreBusy, f) for f in faults)  # busy never opens a breaker
