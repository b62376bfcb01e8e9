"""Opening the Feast repository folder the service reads (``moon serve --repo``)."""

from __future__ import annotations

from pathlib import Path

from moon_rec.featurestore.store import MoonFeatureStore


def open_repo_store(repo: str | Path, fs_yaml: str | Path | None = None) -> MoonFeatureStore:
    """A ``MoonFeatureStore`` over a Feast repository folder (``feature_repo/`` or one
    written by ``moon_rec.featurestore.repo.write_feast_repo``); data paths from ``REPO/paths.json``,
    else ``moon_rec.featurestore.repo.resolve_data_paths``."""
    from feast import FeatureStore

    from moon_rec.featurestore.definitions import build_definitions
    from moon_rec.featurestore.layout import FeatureDataPaths
    from moon_rec.featurestore.repo import resolve_data_paths

    repo = Path(repo).resolve()
    yaml_file = Path(fs_yaml).resolve() if fs_yaml else repo / "feature_store.yaml"
    if not yaml_file.is_file():
        raise FileNotFoundError(f"no Feast repository config at {yaml_file}")
    store = FeatureStore(repo_path=str(repo), fs_yaml_file=yaml_file)
    local = repo / "paths.json"
    paths = (
        FeatureDataPaths.from_json(local.read_text()) if local.is_file() else resolve_data_paths()
    )
    return MoonFeatureStore(
        store=store, definitions=build_definitions(paths), paths=paths, profile=str(yaml_file)
    )
