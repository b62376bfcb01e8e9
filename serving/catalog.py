"""The catalog the service ranks and searches: the embedding center and its ANN index.

The store and the snapshot are the truth, and every process converges on them:

- start-up: the embed job's snapshot (the same rows ``materialize`` wrote online), then
  every item of the store's item change log (items written online since, by any process)
  re-read from the online store;
- while serving: a thread reads the change log on every ``sync_s`` seconds and re-reads
  the items written since (by this process or another: the store's newest-wins row
  replaces whatever this process holds), and reloads the center when the embed job writes
  a new snapshot of the served model_version (then the whole log is applied again);
- items still missing are read from the online store on first use.

So ``/search`` and ranking see the same items in every process and after a restart.

Semantic IDs: the center holds each item's code (the snapshot's ``semantic_ids`` column,
the store's rows for items written since), and the catalog holds the quantiser the embed
job saved beside the snapshot (``semantic_ids.npz``), which codes new items; a refreshed
snapshot brings its own quantiser with it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from moon_rec.data.embeddings import EmbeddingSnapshot
from moon_rec.featurestore.layout import FeatureDataPaths, embeddings_model_version
from moon_rec.featurestore.push import ItemChangeLog
from moon_rec.retrieval.ann import AnnConfig, AnnIndex
from moon_rec.retrieval.semantic_ids import (
    SEMANTIC_IDS_FILE,
    SemanticIdQuantiser,
    load_semantic_ids,
)
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


def read_quantiser(paths: FeatureDataPaths) -> SemanticIdQuantiser | None:
    """The semantic-ID quantiser saved beside the snapshot at ``paths`` (None: none)."""
    file = paths.embeddings_dir() / SEMANTIC_IDS_FILE
    return load_semantic_ids(file) if file.is_file() else None


def load_quantiser(
    paths: FeatureDataPaths, center: EmbeddingCenter, gate: VersionGate
) -> SemanticIdQuantiser | None:
    """The snapshot's quantiser (``read_quantiser``); ``VersionMismatch`` when the gate
    refuses it for the snapshot's ``center`` (another model_version, codes that do not
    fit the ranker, codes without a quantiser)."""
    quantiser = read_quantiser(paths)
    gate.check_quantiser(quantiser, paths.embeddings_dir(), center.levels)
    return quantiser


def build_ann(center: EmbeddingCenter, kind: str = "auto") -> AnnIndex:
    """An ANN index over every item of ``center`` (``auto``: chosen by catalog size)."""
    ids, vecs = center.all_items()
    cfg = AnnConfig.auto(len(ids)) if kind == "auto" else AnnConfig(kind=kind)
    return AnnIndex.build(vecs, ids, cfg)


class Catalog:
    """The center + ANN index, kept in step with the store and the snapshot.

    Args:
        center: the loaded center (``load_center``); the ranker's content (and
            semantic-ID) lookup reads it.
        quantiser: the snapshot's semantic-ID quantiser (``load_quantiser``; None: the
            snapshot has no codes).
        paths: the offline data locations (the snapshot's folder is watched).
        gate: decides whether a new snapshot can be served.
        guard: every online-store read goes through it.
        client: the online client (``moon_rec.featurestore.online.OnlineFeatureClient``).
        changes: the store's item change log.
        ann_kind: ``auto`` or an ``moon_rec.retrieval.ann`` kind.
    """

    def __init__(
        self,
        center: EmbeddingCenter,
        quantiser: SemanticIdQuantiser | None,
        paths: FeatureDataPaths,
        gate: VersionGate,
        guard: StoreGuard,
        client: Any,
        changes: ItemChangeLog,
        ann_kind: str = "auto",
    ) -> None:
        self.center = center
        self.quantiser = quantiser
        self.paths = paths
        self.gate = gate
        self.guard = guard
        self.client = client
        self.changes = changes
        self.ann_kind = ann_kind
        self.ann = build_ann(center, ann_kind)
        self.stale_reason: str | None = None
        self._snapshot_key = self._snapshot_state()
        self._cursor = 0  # of the change log
        self._write = threading.RLock()  # center + ANN change together
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.sync()

    @property
    def dim(self) -> int:
        return self.center.dim

    def __len__(self) -> int:
        return len(self.center)

    def encode_codes(self, vectors: np.ndarray) -> np.ndarray | None:
        """Semantic-ID codes [N, L] of item vectors [N, D] (``SemanticIdQuantiser
        .encode_codes`` of the snapshot's quantiser, as the embed job codes its rows);
        None when the snapshot has no quantiser."""
        quantiser = self.quantiser  # one reference: a refresh may swap it
        return None if quantiser is None else quantiser.encode_codes(vectors)

    # -- reads ---------------------------------------------------------------------------
    def ensure_items(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(category [N], brand [N], found [N]) of item ``ids`` [N]; items missing from the
        center are read from the online store (pushed by another process) and added."""
        _, cat, brand, found = self.center.lookup(ids)
        if found.all():
            return cat, brand, found
        missing = np.unique(ids[~found])
        emb = self.guard.call("item embeddings", self.client.item_embeddings, missing,
                              self.dim, on_mismatch="missing", levels=self.center.levels)
        if emb.found.any():
            attrs = self.guard.call("item attributes", self.client.item_attributes, missing)
            ok = emb.found
            self.upsert(missing[ok], emb.vectors[ok], attrs["category_id"][ok],
                        attrs["brand_id"][ok], None if emb.codes is None else emb.codes[ok])
            _, cat, brand, found = self.center.lookup(ids)
        return cat, brand, found

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(item ids [k'], cosine scores [k']) nearest to ``vector`` [dim] (k' <= k)."""
        scores, ids = self.ann.search(vector[None, :], k)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    # -- writes --------------------------------------------------------------------------
    def upsert(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        category: np.ndarray,
        brand: np.ndarray,
        codes: np.ndarray | None = None,
    ) -> None:
        """Add or replace items [N] (vectors [N, dim], semantic-ID codes [N, L] or None)
        in the center and the ANN index."""
        with self._write:
            self.center.upsert(ids, vectors, category, brand, codes)
            self.ann.add(vectors, ids)

    def _load_from_store(self, ids: np.ndarray) -> int:
        """Re-read items ``ids`` from the online store into the catalog; returns how many
        were found (of the served model_version)."""
        emb = self.client.item_embeddings(ids, self.dim, on_mismatch="missing",
                                          levels=self.center.levels)
        ok = emb.found
        if not ok.any():
            return 0
        attrs = self.client.item_attributes(ids[ok])
        self.upsert(ids[ok], emb.vectors[ok], attrs["category_id"], attrs["brand_id"],
                    None if emb.codes is None else emb.codes[ok])
        return int(ok.sum())

    def sync(self, batch: int = 512) -> int:
        """Apply the item change log after the cursor: every item written online since
        (by any process) is re-read from the store. Returns the items re-read."""
        done = 0
        while True:
            ids, cursor = self.changes.read(self._cursor, limit=batch)
            if ids:
                done += self._load_from_store(np.asarray(ids, np.int64))
            self._cursor = cursor
            if len(ids) < batch:
                return done

    # -- refresh -------------------------------------------------------------------------
    def _snapshot_state(self) -> str:
        return EmbeddingSnapshot.state(self.paths.embeddings_dir())

    def refresh(self) -> bool:
        """Reload the center (and the quantiser) when the embed job wrote a new
        snapshot. A snapshot of the served model_version replaces the base (items added
        online are kept); one of another version, or whose codes this ranker cannot read,
        is not loaded (``stale_reason`` says why). Returns True when the center was
        reloaded."""
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
        quantiser = read_quantiser(self.paths)
        problem = self.gate.quantiser_problem(quantiser, self.paths.embeddings_dir(),
                                              fresh.levels)
        if problem is None and fresh.levels != self.center.levels:
            problem = (f"a snapshot with {fresh.levels}-level semantic-ID codes was written; "
                       f"this service holds {self.center.levels}-level codes: restart it")
        if problem is not None:
            self.stale_reason = problem
            self._snapshot_key = key
            return False
        with self._write:
            self.center.replace_base(fresh)
            self.quantiser = quantiser
            self.ann = build_ann(self.center, self.ann_kind)
            self._cursor = 0  # the store's rows of logged items are newer than a snapshot's
        self.sync()
        self._snapshot_key = key
        self.stale_reason = None
        log.info("embedding center refreshed: %d items", len(self.center))
        return True

    def _every(self, period_s: float, name: str, fn: Any) -> None:
        def loop() -> None:
            while not self._stop.wait(period_s):
                if not self.guard.healthy:
                    continue  # the guard's probe watches the store meanwhile
                try:
                    fn()
                except Exception:  # keep serving what is loaded
                    log.exception("%s failed", name)

        t = threading.Thread(target=loop, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def start_refresher(self, refresh_s: float, sync_s: float = 0.0) -> None:
        """Check for a new snapshot every ``refresh_s`` seconds and read the change log
        every ``sync_s`` seconds, in threads (0: never)."""
        if self._threads:
            return
        if refresh_s > 0:
            self._every(refresh_s, "center-refresh", self.refresh)
        if sync_s > 0:
            self._every(sync_s, "center-sync", self.sync)

    def close(self) -> None:
        self._stop.set()
