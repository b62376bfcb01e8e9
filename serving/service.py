"""The ranking service, independent of HTTP: the composition of its parts.

``RankingService`` wires, once, the small parts that each do one job:

- ``serving.version_gate.VersionGate``: the embedding model_version served; start-up
  refuses (``VersionMismatch``) when the ranker's differs from the store's (the embedding
  view's tag and the embedding snapshot) or the encoder's;
- ``serving.store_guard.StoreGuard``: every online-store call behind one circuit breaker
  (``StoreUnavailable``, 503, while the store is down; a background probe closes it);
- ``serving.catalog.Catalog``: the in-memory embedding center and its ANN index, loaded
  from the snapshot and the store's item change log, kept in step by background threads,
  and the snapshot's semantic-ID quantiser (start-up refuses one of another
  model_version, or whose codes do not fit a ranker trained with semantic IDs);
- ``serving.query_encoder.QueryEncoder``: MOON vectors of queries and new products;
- ``serving.writer.Writer``: new items (vectors and semantic-ID code in one row) and
  behaviour written to the online store (through
  ``moon_rec.featurestore.push.OnlineWriter``: views resolved once, atomic appends);
- ``serving.ranking.RequestRanker``: rank and search, with the trained ranker built on the
  catalog's center as its content and semantic-ID lookup (new items are rankable at once,
  with their codes);
- ``moon_rec.featurestore.online.SpecFeatureReader``: the ranker's feature spec checked
  against the store's registry at start (a missing feature, or one of another type, refuses
  the start naming it), and its extra features read online per request, encoded by the
  transforms fitted in training (``FittedFeatures``, from the model directory).

Errors: ``BadInput`` (422) / ``NotFound`` (404) name the field; ``StoreUnavailable`` (503).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from moon_rec import runtime
from moon_rec.encoders import MoonEncoder
from moon_rec.featurestore.layout import ITEM_EMBEDDING_VIEW, embeddings_model_version
from moon_rec.featurestore.online import OnlineFeatureClient, SpecFeatureReader
from moon_rec.featurestore.push import OnlineWriter
from moon_rec.ranking.config import RankerConfig
from moon_rec.ranking.evaluate import load_ranker, read_meta
from moon_rec.ranking.model_dir import RankerDir
from serving.catalog import Catalog, load_center, load_quantiser
from serving.center import CenterContentArch, CenterSemanticIds, EmbeddingCenter
from serving.config import ACTIONS, MAX_ID, ServiceConfig
from serving.errors import (
    BadInput,
    NotFound,
    ServiceError,
    StoreUnavailable,
    VersionMismatch,
)
from serving.query_encoder import QueryEncoder, decode_image_field
from serving.ranking import RankResult, RequestRanker, ServedVersions
from serving.repo import open_repo_store
from serving.store_guard import StoreGuard
from serving.version_gate import VersionGate
from serving.writer import Writer

__all__ = [
    "ACTIONS",
    "MAX_ID",
    "BadInput",
    "NotFound",
    "RankResult",
    "RankingService",
    "ServiceConfig",
    "ServiceError",
    "StoreUnavailable",
    "VersionMismatch",
    "decode_image_field",
    "open_repo_store",
]


class RankingService:
    """The service's parts, wired together (see the module docstring).

    Args:
        model_dir: a trained ranker (``moon ranker train --out``).
        repo: the Feast repository folder.
        encoder: the MOON encoder checkpoint (default: ``MODEL/encoder`` if present).
        fs_yaml: another ``feature_store.yaml`` (e.g. the production profile's).
        config: limits and policies.
    """

    def __init__(
        self,
        model_dir: str | Path,
        repo: str | Path,
        *,
        encoder: str | Path | None = None,
        fs_yaml: str | Path | None = None,
        config: ServiceConfig | None = None,
    ) -> None:
        self.config = config or ServiceConfig()
        runtime.set_threads(self.config.threads)
        model_dir = Path(model_dir)
        self.meta = read_meta(model_dir)
        self.ranker_config = RankerConfig.from_dict(self.meta["config"])
        self.dim = int(self.ranker_config.moon_dim)
        enc_path = Path(encoder) if encoder else model_dir / "encoder"
        if not (enc_path / "moon_encoder.json").is_file():
            raise FileNotFoundError(
                f"no MOON encoder checkpoint at {enc_path} (pass --encoder DIR)"
            )
        self.encoder = MoonEncoder.from_pretrained(enc_path).eval()
        self.mfs = open_repo_store(repo, fs_yaml)
        try:
            tag = self.mfs.store.get_feature_view(ITEM_EMBEDDING_VIEW).tags.get("model_version")
        except Exception as exc:
            raise StoreUnavailable(f"cannot read the feature registry of {repo}: {exc}") from exc
        self.gate = VersionGate(model_dir, self.meta.get("model_version"),
                                self.encoder.model_version, self.ranker_config.semantic_ids)
        self.gate.check_start(
            encoder_path=enc_path, registry_tag=tag,
            snapshot=(embeddings_model_version(self.mfs.paths), self.mfs.paths.embeddings_dir()),
        )
        self.embedding_version = self.gate.embedding_version
        # store calls run on the worker threads side by side: the stores' reads never wait
        # on a write (SQLite: a read connection per thread; MoonOnlineStore's contract)
        self.client = OnlineFeatureClient(self.mfs, expected_model_version=self.embedding_version)
        self.online = OnlineWriter(self.mfs)  # the feature views, resolved once
        # the ranker's feature spec against the store: a missing feature, or one of another
        # type, refuses the start (FeatureSpecError naming it); its extras are read online
        self.features = RankerDir(model_dir).features(self.meta)
        self.spec_reader = SpecFeatureReader(self.client, self.features.spec,
                                             item_cache_s=self.config.item_feature_cache_s)
        self.guard = StoreGuard(lambda: self.client.user_sequences([0]), self.mfs.fault_types(),
                                retry_s=self.config.store_retry_s,
                                health_s=self.config.health_s)
        center = load_center(self.mfs.paths, self.dim, self.gate)
        quantiser = load_quantiser(self.mfs.paths, center, self.gate)
        self.catalog = Catalog(center, quantiser, self.mfs.paths, self.gate, self.guard,
                               self.client, self.online.changes, self.config.ann_kind)
        # the ranker's content and code lookups are the center: new items are rankable at
        # once, with their vectors and codes
        content = CenterContentArch(center) if self.ranker_config.uses_moon else None
        codes = CenterSemanticIds(center) if self.ranker_config.semantic_ids else None
        self.model, _ = load_ranker(model_dir, content=content, semantic_ids=codes)
        self.model_version = f"ranker-{RankerDir(model_dir).weights_version()}"
        lock = threading.Lock()  # one model / encoder call at a time
        limits = self.config.image_limits()
        self.query_encoder = QueryEncoder(self.encoder, self.dim, self.config.query_cache, lock,
                                          limits)
        self.writer = Writer(self.online, self.guard, self.catalog, self.query_encoder,
                             self.config)
        self.ranker = RequestRanker(
            self.model, self.catalog, self.client, self.guard, self.query_encoder, self.config,
            ServedVersions(self.model_version, self.embedding_version), lock,
            self.spec_reader if self.features.spec.extras() else None,
        )
        self.started = time.time()

    # -- the parts' state, for callers and tests ------------------------------------------
    @property
    def center(self) -> EmbeddingCenter:
        return self.catalog.center

    @property
    def stale_reason(self) -> str | None:
        return self.catalog.stale_reason

    @property
    def store_ok(self) -> bool:
        return self.guard.healthy

    @property
    def ann(self) -> Any:
        return self.catalog.ann

    @property
    def image_size(self) -> int:
        return self.query_encoder.image_size

    # -- lifecycle -------------------------------------------------------------------------
    def refresh(self) -> bool:
        """``Catalog.refresh``: reload the center from a new snapshot of the same version."""
        return self.catalog.refresh()

    def start_refresher(self) -> None:
        """Start the background threads: snapshot refresh and change-log sync of the
        catalog, and the store health monitor (what /healthz reports)."""
        self.catalog.start_refresher(self.config.refresh_s, self.config.sync_s)
        self.guard.start_monitor()

    def close(self) -> None:
        self.catalog.close()
        self.guard.close()

    def check_store(self) -> bool:
        """The store's health as last seen (the breaker's state); never waits on it."""
        return self.guard.check()

    # -- requests --------------------------------------------------------------------------
    def query_vector(self, text: str | None, image: str | bytes | None) -> np.ndarray | None:
        """``QueryEncoder.query_vector``: the query's MOON embedding [dim], or None."""
        return self.query_encoder.query_vector(text, image)

    def rank(
        self,
        user_id: int,
        item_ids: list[int] | None,
        *,
        query_text: str | None = None,
        query_image: str | bytes | None = None,
        top_k: int = 10,
    ) -> RankResult:
        """``RequestRanker.rank``: score candidates (or ANN-retrieved items)."""
        return self.ranker.rank(user_id, item_ids, query_text=query_text,
                                query_image=query_image, top_k=top_k)

    def search(
        self, query_text: str | None, query_image: str | bytes | None, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``RequestRanker.search``: (item ids, cosine scores) nearest to the query."""
        return self.ranker.search(query_text, query_image, k)

    def add_item(self, item_id: int, title: str, image: str | bytes | None,
                 **attrs: Any) -> dict[str, Any]:
        """``Writer.add_item``: embed a new item, push it online and into the catalog."""
        return self.writer.add_item(item_id, title, image, **attrs)

    def add_behaviour(
        self, user_id: int, item_id: int, action: str, ts: datetime | None = None
    ) -> dict[str, Any]:
        """``Writer.add_behaviour``: append a behaviour to the user's online sequence."""
        return self.writer.add_behaviour(user_id, item_id, action, ts)

    def info(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "embedding_version": self.embedding_version,
            "behaviour_module": self.ranker_config.behaviour.module,
            "feature_set": self.ranker_config.feature_set,
            "feature_spec": self.features.spec.name,
            "moon_dim": self.dim,
            "semantic_ids": (self.catalog.quantiser.describe()
                             if self.catalog.quantiser is not None else None),
            "items_in_center": len(self.catalog),
            "ann": self.catalog.ann.config.kind,
            "stale_reason": self.stale_reason,
            "uptime_s": round(time.time() - self.started, 1),
            "meta": json.loads(json.dumps({k: self.meta.get(k) for k in ("steps", "done")})),
        }
