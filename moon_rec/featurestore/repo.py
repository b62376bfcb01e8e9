"""Where the ``feature_repo/`` that the ``feast`` CLI reads finds its data, from any cwd.

``moon features init --data DIR`` records absolute data paths in
``artifacts/feature_repo/paths.json``; ``feature_repo/features.py`` reads them back through
``resolve_data_paths``. The environment overrides the file: ``MOON_FEATURE_DATA`` (the
feature table folder) and ``MOON_FEATURE_EMBEDDINGS`` (the embedding parts folder).
The registry and the SQLite database of ``feature_repo/feature_store.yaml`` live in the
same ``artifacts/feature_repo`` folder, so ``moon features ...`` and ``feast -c
feature_repo ...`` work on one store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from moon_rec import runtime
from moon_rec.featurestore.layout import FeatureDataPaths

REPO_ROOT = Path(__file__).resolve().parents[2]
FEATURE_REPO = REPO_ROOT / "feature_repo"
DEFAULT_STATE_DIR = REPO_ROOT / "artifacts" / "feature_repo"
DEFAULT_DATA_DIR = REPO_ROOT / "artifacts" / "feature_data"
PATHS_FILE = "paths.json"


def write_data_paths(paths: FeatureDataPaths, state_dir: str | Path = DEFAULT_STATE_DIR) -> Path:
    """Record ``paths`` for the CLI repository; returns the file written."""
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    target = state / PATHS_FILE
    return runtime.atomic_write_text(target, paths.to_json() + "\n")


def resolve_data_paths(state_dir: str | Path = DEFAULT_STATE_DIR) -> FeatureDataPaths:
    """The data paths: environment first, then ``paths.json``, then the default folder."""
    data = os.environ.get("MOON_FEATURE_DATA")
    emb = os.environ.get("MOON_FEATURE_EMBEDDINGS")
    if data or emb:
        return FeatureDataPaths.from_dir(data or DEFAULT_DATA_DIR, emb)
    recorded = Path(state_dir) / PATHS_FILE
    if recorded.is_file():
        return FeatureDataPaths.from_json(recorded.read_text())
    return FeatureDataPaths.from_dir(DEFAULT_DATA_DIR)


def write_feast_repo(
    repo: str | Path, profile: str | Path, state: str | Path, project: str,
    paths: FeatureDataPaths,
) -> Path:
    """Write a self-contained Feast repository folder for a store of ``profile`` whose
    registry / SQLite file live in ``state``: ``feature_store.yaml`` with absolute paths and
    ``paths.json`` (the offline data paths). ``moon serve --repo`` and ``feast -c`` read it
    from any working directory. Returns the folder."""
    import yaml

    from moon_rec.featurestore.store import build_repo_config, load_profile

    repo = Path(repo).resolve()
    repo.mkdir(parents=True, exist_ok=True)
    cfg = build_repo_config(profile, state, project=project)
    body = load_profile(profile)
    body["project"] = project
    reg = body.get("registry")
    if isinstance(reg, str):
        reg = {"path": reg}
    if isinstance(reg, dict) and reg.get("registry_type", "file") == "file":
        reg["path"] = str(Path(cfg.registry.path).resolve())
        body["registry"] = reg
    online = body.get("online_store") or {}
    if "path" in online:
        online["path"] = str(Path(state).resolve() / Path(online["path"]).name)
    runtime.atomic_write_text(repo / "feature_store.yaml", yaml.safe_dump(body, sort_keys=False))
    write_data_paths(paths, repo)
    return repo


def publish_store(
    paths: FeatureDataPaths,
    state: str | Path,
    repo: str | Path,
    *,
    profile: str | Path = "embedded",
    project: str | None = None,
    seq_len: int | None = None,
    model_version: str | None = None,
) -> tuple[Path, list[dict[str, Any]]]:
    """Apply the definitions over ``paths`` to a store of ``profile`` (local state in
    ``state``), materialize it and write its repository folder ``repo``.

    Args:
        project: the Feast project (default: the profile's).
        seq_len: the behaviour view's sequence length tag (default: DEFAULT_SEQ_LEN).
        model_version: the embedding view's tag (default: the embed job's manifest).
    Returns:
        (the repository folder, the materialize reports).
    """
    from moon_rec.featurestore.layout import DEFAULT_SEQ_LEN
    from moon_rec.featurestore.materialize import materialize_all
    from moon_rec.featurestore.store import open_store

    write_data_paths(paths, state)
    mfs = open_store(profile, state, paths, project=project, model_version=model_version,
                     seq_len=seq_len or DEFAULT_SEQ_LEN)
    reports = materialize_all(mfs)
    return write_feast_repo(repo, profile, state, mfs.config.project, paths), reports
