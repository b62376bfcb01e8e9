"""Building a Feast ``FeatureStore`` for a profile, with paths that never depend on cwd.

Profiles are data: ``configs/featurestore/<name>.yaml`` is a ``feature_store.yaml`` body
(``embedded``: DuckDB + SQLite + file registry; ``production``: DuckDB + Redis + SQL
registry on PostgreSQL). ``${VAR}`` references are expanded from the environment, with
``MOON_PG_URL`` and ``MOON_REDIS`` defaulting to the loopback services. Relative paths of
the file registry and the SQLite database resolve against the state directory.
"""

from __future__ import annotations

import contextlib
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from feast import FeatureStore, RepoConfig

from moon_rec.featurestore.definitions import (
    DEFAULT_SEQ_LEN,
    FeatureDataPaths,
    FeatureDefinitions,
    build_definitions,
)
from moon_rec.featurestore.stores import MoonOnlineStore, online_store_of

PROFILE_DIR = Path(__file__).resolve().parents[2] / "configs" / "featurestore"
PROFILES: tuple[str, ...] = ("embedded", "production")
ENV_DEFAULTS: dict[str, str] = {
    "MOON_PG_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "MOON_REDIS": "127.0.0.1:6379",
}


def profile_path(profile: str | Path) -> Path:
    """The YAML file of ``profile`` (a name in ``PROFILES`` or a path to a YAML file)."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise FileNotFoundError(f"feature store profile not found: {p}")
        return p.resolve()
    if str(profile) not in PROFILES:
        raise ValueError(
            f"unknown feature store profile '{profile}' (known: {', '.join(PROFILES)})"
        )
    return PROFILE_DIR / f"{profile}.yaml"


def load_profile(profile: str | Path) -> dict[str, Any]:
    """The profile's ``feature_store.yaml`` body as a dict, environment expanded."""
    text = profile_path(profile).read_text()
    text = string.Template(text).safe_substitute({**ENV_DEFAULTS, **os.environ})
    body = yaml.safe_load(text)
    if not isinstance(body, dict):
        raise ValueError(f"feature store profile {profile}: expected a mapping")
    return body


def build_repo_config(
    profile: str | Path, state_dir: str | Path, *, project: str | None = None
) -> RepoConfig:
    """A validated ``RepoConfig`` for ``profile`` whose local files live in ``state_dir``.

    Args:
        profile: ``embedded``, ``production`` or a YAML path.
        state_dir: where the file registry and SQLite database go (created).
        project: override the Feast project name (tests use one per test for isolation).
    """
    state = Path(state_dir).expanduser().resolve()
    state.mkdir(parents=True, exist_ok=True)
    body = load_profile(profile)
    if project is not None:
        body["project"] = project
    reg = body.get("registry")
    if isinstance(reg, str):
        reg = {"path": reg}
    if isinstance(reg, dict) and reg.get("registry_type", "file") == "file":
        reg["path"] = str(state / reg.get("path", "registry.db"))
        body["registry"] = reg
    online = body.get("online_store") or {}
    if "path" in online:
        online["path"] = str(state / online["path"])
    body["repo_path"] = state
    return RepoConfig(**body)


@dataclass
class MoonFeatureStore:
    """A Feast store plus the MOON definitions applied to it.

    Attributes:
        store: the Feast ``FeatureStore``.
        definitions: the entities, sources and views over ``paths``.
        paths: absolute offline data locations.
        profile: the profile name or path it was built from.
    """

    store: FeatureStore
    definitions: FeatureDefinitions
    paths: FeatureDataPaths
    profile: str

    @property
    def config(self) -> RepoConfig:
        return self.store.config

    @property
    def online_store(self) -> MoonOnlineStore:
        """The profile's online store (``online_store.type``), checked to implement
        ``MoonOnlineStore``; a ``StoreInterfaceError`` names its class otherwise."""
        return online_store_of(self.store._get_provider(), self.config.online_store.type)

    def fault_types(self) -> tuple[type[BaseException], ...]:
        """The exception types that mean the feature store failed, not the request: the
        online store's (``MoonOnlineStore.fault_types``) and, on a SQL registry, its
        database driver's (the registry is re-read when its cache expires)."""
        return self.online_store.fault_types() + registry_fault_types(self.config)

    def apply(self, specs: list[str] | None = None) -> None:
        """Register every definition (``feast apply``) and create online tables, with one
        ``FeatureService`` per feature spec (:func:`moon_rec.featurestore.services.
        feature_services`: ``specs`` named must fit the definitions, else a
        FeatureSpecError names the feature before anything is registered; None: every
        spec that fits)."""
        from feast import FeatureView

        from moon_rec.featurestore.services import feature_services

        objects = self.definitions.objects()
        services = feature_services((o for o in objects if isinstance(o, FeatureView)), specs)
        self.store.apply([*objects, *services])  # type: ignore[list-item]

    def teardown(self) -> None:
        """Drop this project's online tables and registry entries (tests, re-inits).

        Not ``FeatureStore.teardown``: Feast's deletes *every* project of the registry,
        which on the shared SQL registry of the production profile pulls the projects of
        all other users (tests, benchmarks, a running service) out from under them.
        """
        store = self.store
        project = self.config.project
        views: list[Any] = list(store.list_feature_views())
        views += list(getattr(store, "list_label_views", list)())
        entities = store.list_entities()
        store._get_provider().teardown_infra(project, views, entities)
        # the file registry may already be gone
        with contextlib.suppress(Exception):
            store.registry.delete_project(project, commit=True)


def registry_fault_types(config: RepoConfig) -> tuple[type[BaseException], ...]:
    """The exception types of a failed registry backend: SQLAlchemy's and psycopg's
    connection errors for a SQL registry (PostgreSQL); none for a file registry."""
    if config.registry.registry_type != "sql":
        return ()
    import psycopg
    from sqlalchemy import exc as sa

    return (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError, sa.TimeoutError,
            psycopg.OperationalError, psycopg.InterfaceError)


def open_store(
    profile: str | Path,
    state_dir: str | Path,
    paths: FeatureDataPaths,
    *,
    project: str | None = None,
    model_version: str | None = None,
    seq_len: int = DEFAULT_SEQ_LEN,
    apply: bool = True,
) -> MoonFeatureStore:
    """Build the store of ``profile`` over ``paths`` and (by default) apply the definitions.

    Args:
        profile: ``embedded`` (default stack) or ``production`` (Redis + PostgreSQL).
        state_dir: the folder for local state (file registry, SQLite database).
        paths: the offline tables (see ``FeatureDataPaths.from_dir``).
        project: Feast project name override.
        model_version: the embedding view's ``model_version`` tag (default: manifest's).
        seq_len: the behaviour sequence max length tag.
        apply: run ``FeatureStore.apply`` now.
    """
    config = build_repo_config(profile, state_dir, project=project)
    store = FeatureStore(config=config)
    defs = build_definitions(paths, model_version=model_version, seq_len=seq_len)
    mfs = MoonFeatureStore(store=store, definitions=defs, paths=paths, profile=str(profile))
    if apply:
        mfs.apply()
    return mfs
