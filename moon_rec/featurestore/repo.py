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
