"""The catalog the service ranks and searches: the embedding center and its ANN index.

Loaded from the embed job's snapshot (the same rows ``materialize`` wrote online) at
start-up; items missing from it are read from the online store on first use (pushed by
another process) and added; a background thread reloads the center when the embed job
writes a new snapshot of the served model_version.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from moon_rec.featurestore.layout import (
    EMBEDDING_MANIFEST,
    FeatureDataPaths,
    embeddings_model_version,
)
from moon_rec.retrieval.ann import AnnConfig, AnnIndex
from serving.center import EmbeddingCenter
from serving.store_guard import StoreGuard
from serving.version_gate import VersionGate

log = logging.getLogger(__name__)


def load_center(paths: FeatureDataPaths, dim: int, gate: VersionGate) -> EmbeddingCenter:
    """The center of the snapshot at ``paths`` (``emb_{dim}``); ``VersionMismatch`` when
    its vectors are not of the gate's version."""
    center = EmbeddingCenter.from_parquet(paths.embeddings_dir(), paths.item_features, dim)
    gate.check_loaded(center.model_version, paths.embeddings_dir())
    return center


def build_ann(center: EmbeddingCenter, kind: str = "auto") -> AnnIndex:
    """An ANN index over every item of ``center`` (``auto``: chosen by catalog size)."""
    ids, vecs = center.all_items()
    cfg = AnnConfig.auto(len(ids)) if kind == "auto" else AnnConfig(kind=kind)
    return AnnIndex.build(vecs, ids, cfg)


class Catalog:
    """The center + ANN index, kept in step with the store and the snapshot.

    Args:
        center: the loaded center (``load_center``); the ranker's content lookup reads it.
        paths: the offline data locations (the snapshot's folder is watched).
        gate: decides whether a new snapshot can be served.
        guard: every online-store read goes through it.
        client: the online client (``moon_rec.featurestore.online.OnlineFeatureClient``).
        ann_kind: ``auto`` or an ``moon_rec.retrieval.ann`` kind.
    """

    def __init__(
        self,
        center: EmbeddingCenter,
        paths: FeatureDataPaths,
        gate: VersionGate,
        guard: StoreGuard,
        client: Any,
        ann_kind: str = "auto",
    ) -> None:
        self.center = center
        self.paths = paths
        self.gate = gate
        self.guard = guard
        self.client = client
        self.ann_kind = ann_kind
        self.ann = build_ann(center, ann_kind)
        self.stale_reason: str | None = None
        self._snapshot_key = self._snapshot_state()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    @property
    def dim(self) -> int:
        return self.center.dim

    def __len__(self) -> int:
        return len(self.center)

    # -- reads ---------------------------------------------------------------------------
    def ensure_items(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(category [N], brand [N], found [N]) of item ``ids`` [N]; items missing from the
        center are read from the online store (pushed by another process) and added."""
        _, cat, brand, found = self.center.lookup(ids)
        if found.all():
            return cat, brand, found
        missing = np.unique(ids[~found])
        emb = self.guard.call("item embeddings", self.client.item_embeddings, missing,
                              self.dim, on_mismatch="missing")
        if emb.found.any():
            attrs = self.guard.call("item attributes", self.client.item_attributes, missing)
            ok = emb.found
            self.upsert(missing[ok], emb.vectors[ok], attrs["category_id"][ok],
                        attrs["brand_id"][ok])
            _, cat, brand, found = self.center.lookup(ids)
        return cat, brand, found

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(item ids [k'], cosine scores [k']) nearest to ``vector`` [dim] (k' <= k)."""
        scores, ids = self.ann.search(vector[None, :], k)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    # -- writes --------------------------------------------------------------------------
    def upsert(
        self, ids: np.ndarray, vectors: np.ndarray, category: np.ndarray, brand: np.ndarray
    ) -> None:
        """Add or replace items [N] (vectors [N, dim]) in the center and the ANN index."""
        self.center.upsert(ids, vectors, category, brand)
        self.ann.add(vectors, ids)

    # -- refresh -------------------------------------------------------------------------
    def _snapshot_state(self) -> str:
        try:
            return (self.paths.embeddings_dir() / EMBEDDING_MANIFEST).read_text()
        except OSError:
            return ""

    def refresh(self) -> bool:
        """Reload the center when the embed job wrote a new snapshot. A snapshot of the
        served model_version replaces the base (items added online are kept); one of
        another version is not loaded (``stale_reason`` says why) because this ranker
        cannot use it. Returns True when the center was reloaded."""
        key = self._snapshot_state()
        if key == self._snapshot_key:
            return False
        problem = self.gate.snapshot_problem(embeddings_model_version(self.paths))
        if problem is not None:
            self.stale_reason = problem
            self._snapshot_key = key
            return False
        fresh = EmbeddingCenter.from_parquet(self.paths.embeddings_dir(),
                                             self.paths.item_features, self.dim)
        self.center.replace_base(fresh)
        self.ann = build_ann(self.center, self.ann_kind)
        self._snapshot_key = key
        self.stale_reason = None
        log.info("embedding center refreshed: %d items", len(self.center))
        return True

    def start_refresher(self, period_s: float) -> None:
        """Check for a new snapshot every ``period_s`` seconds in a thread (0: never)."""
        if period_s <= 0 or self._refresher is not None:
            return

        def loop() -> None:
            while not self._stop.wait(period_s):
                try:
                    self.refresh()
                except Exception:  # keep serving the loaded center
                    log.exception("embedding refresh failed")

        self._refresher = threading.Thread(target=loop, name="center-refresh", daemon=True)
        self._refresher.start()

    def close(self) -> None:
        self._stop.set()
