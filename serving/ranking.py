"""Ranking and search of one request: the trained ranker over the catalog and the user's
online behaviour sequence.

- rank: one online-store read per request (the user's behaviour sequences; and one per
  view of the ranker's extra features, when its spec has them); candidate and
  behaviour-item embeddings and attributes (the spec's item_attributes category_id and
  brand_id, :data:`CATALOG_FEATURES`) come from the catalog (the ranker's content lookup is
  the same center); every encoded feature goes through the model's fitted features and the
  ``RankerBatch`` is built by ``moon_rec.ranking.features.request_batch`` laid out by the
  model's spec (the same ``make_batch`` and query hashing as training);
- search: the query's MOON embedding against the catalog's ANN index; rank without
  candidates retrieves them this way.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from moon_rec.data.feature_spec import FeatureSpec, FeatureSpecError
from moon_rec.featurestore.online import SequenceLookup, SpecFeatureReader
from moon_rec.ranking.features import request_batch
from moon_rec.ranking.model import MoonRanker
from serving.catalog import Catalog
from serving.config import MAX_ID, ServiceConfig
from serving.errors import BadInput, NotFound
from serving.query_encoder import QueryEncoder
from serving.store_guard import StoreGuard

# spec sources the catalog holds per item in memory (what else a spec reads of the
# candidate comes from the online store, SpecFeatureReader)
CATALOG_FEATURES: tuple[str, ...] = ("item_attributes:category_id", "item_attributes:brand_id")
# spec sources of the online behaviour sequences: the SequenceLookup field of each
SEQUENCE_FIELDS: dict[str, str] = {
    "user_behaviour:hist_item_ids": "item_ids",
    "user_behaviour:hist_category_ids": "category_ids",
}


def check_servable(spec: FeatureSpec) -> None:
    """FeatureSpecError naming a behaviour sequence serving cannot read online."""
    for e in spec.sequences():
        if e.source not in SEQUENCE_FIELDS:
            raise FeatureSpecError(
                f"feature spec {spec.name!r}: feature {e.column} ({e.source}): serving reads "
                f"the behaviour sequences {', '.join(SEQUENCE_FIELDS)} only")


def request_sequences(spec: FeatureSpec, seq: SequenceLookup, n: int) -> dict[str, np.ndarray]:
    """The spec's behaviour sequences of the first user of ``seq`` (its ``n`` behaviours)."""
    return {e.column: getattr(seq, SEQUENCE_FIELDS[e.source])[0, :n] for e in spec.sequences()}


@dataclass
class RankResult:
    """Scores of one request: ``item_ids`` and ``scores`` in candidate order (as given),
    ``top_k`` best first with each item once, and the versions that produced them."""

    item_ids: list[int]
    scores: list[float]
    top_k: list[dict[str, Any]]
    retrieved: bool
    model_version: str
    embedding_version: str
    history_length: int


@dataclass(frozen=True)
class ServedVersions:
    """What a response reports: the ranker's weights hash and the embedding version."""

    model: str
    embedding: str


class RequestRanker:
    """Scores requests with the trained ranker.

    Args:
        model: the ranker, built with the catalog's center as its content lookup.
        catalog: candidates' and behaviour items' vectors and attributes; ANN retrieval.
        client: the online client (the user's behaviour sequence).
        guard: every store call goes through it.
        encoder: query vectors.
        config: limits and policies.
        versions: reported with every result.
        lock: the model lock shared with the encoder.
        spec_reader: the online reads of the ranker's extra features (None: its spec has
            none); encoded by the model's fitted transforms, as in training.
    """

    def __init__(
        self,
        model: MoonRanker,
        catalog: Catalog,
        client: Any,
        guard: StoreGuard,
        encoder: QueryEncoder,
        config: ServiceConfig,
        versions: ServedVersions,
        lock: threading.Lock,
        spec_reader: SpecFeatureReader | None = None,
    ) -> None:
        self.model = model
        self.ranker_config = model.config
        self.catalog = catalog
        self.client = client
        self.guard = guard
        self.encoder = encoder
        self.config = config
        self.versions = versions
        self._lock = lock
        self.spec_reader = spec_reader
        check_servable(model.features.spec)

    def search(
        self, query_text: str | None, query_image: str | bytes | None, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(item ids [k'], cosine scores [k']) nearest to the query (ANN over the center)."""
        if k < 1 or k > self.config.max_k:
            raise BadInput(f"k: must be in 1..{self.config.max_k}, got {k}", "k")
        vec = self.encoder.query_vector(query_text, query_image)
        if vec is None:
            raise BadInput("query_text: give a non-empty query_text or a query_image",
                           "query_text")
        return self.catalog.search(vec, k)

    def rank(
        self,
        user_id: int,
        item_ids: list[int] | None,
        *,
        query_text: str | None = None,
        query_image: str | bytes | None = None,
        top_k: int = 10,
    ) -> RankResult:
        """Score ``item_ids`` (or ANN-retrieved candidates) for the user and query."""
        cfg = self.config
        if top_k < 1 or top_k > cfg.max_k:
            raise BadInput(f"top_k: must be in 1..{cfg.max_k}, got {top_k}", "top_k")
        if item_ids is not None:
            if len(item_ids) == 0:
                raise BadInput("item_ids: empty candidate list (omit it to retrieve by the "
                               "query)", "item_ids")
            if len(item_ids) > cfg.max_candidates:
                raise BadInput(f"item_ids: {len(item_ids)} candidates, at most "
                               f"{cfg.max_candidates}", "item_ids")
            if any(i < 0 or i > MAX_ID for i in item_ids):
                raise BadInput("item_ids: ids must be in 0..2^63-1", "item_ids")
        if not 0 <= user_id <= MAX_ID:
            raise BadInput("user_id: must be in 0..2^63-1", "user_id")
        qvec = self.encoder.query_vector(query_text, query_image)
        if item_ids is None and qvec is None:
            raise BadInput("item_ids: give candidates, or a query_text / query_image to "
                           "retrieve them", "item_ids")
        seq = self.guard.call("user features", self.client.user_sequences, [user_id])
        n_hist = int(seq.lengths[0])
        if n_hist == 0 and not cfg.allow_unknown_users:
            raise NotFound(f"user_id: unknown user {user_id} (no behaviour in the store)",
                           "user_id")
        retrieved = item_ids is None
        if item_ids is None:
            assert qvec is not None
            cands, _ = self.catalog.search(qvec, cfg.retrieve_k)
            if len(cands) == 0:
                raise NotFound("item_ids: nothing retrieved (empty catalog)", "item_ids")
        else:
            cands = np.asarray(item_ids, np.int64)
        cat, brand, found = self.catalog.ensure_items(cands)
        if not found.all():
            bad = np.unique(cands[~found])[:10].tolist()
            raise NotFound(f"item_ids: unknown items {bad}", "item_ids")
        fitted = self.model.features
        spec = fitted.spec
        held = dict(zip(CATALOG_FEATURES, (cat, brand), strict=True))
        raw = {e.column: held[e.source] for e in spec.features if e.source in held}
        if self.spec_reader is not None:
            raw |= self.guard.call("spec features", self.spec_reader.read, user_id, cands,
                                   cat, brand)
        try:
            now_us = np.full(len(cands), time.time() * 1e6)  # ``since``: the request's
            sparse_ids, dense = fitted.encode(raw, now_us)
        except ValueError as exc:  # a stored null the ranker has no fill rule for
            raise NotFound(f"item_ids: {exc}", "item_ids") from None
        batch = request_batch(
            self.model.layout,
            user_id=user_id,
            item_ids=cands,
            targets={k: raw[k] for k in self.model.layout.targets},
            sequences=request_sequences(spec, seq, n_hist),
            query_text=query_text,
            query_embedding=qvec,
            query_token_buckets=self.ranker_config.query_token_buckets,
            max_seq_len=self.ranker_config.max_seq_len,
            content_dim=self.model.content_dim,
            sparse_ids=sparse_ids,
            dense=dense,
        )
        with self._lock, torch.inference_mode():
            scores = torch.sigmoid(self.model(batch)).numpy().astype(np.float64)
        # best first, each item once (a candidate listed twice scores the same twice)
        order = np.argsort(-scores, kind="stable")
        _, first = np.unique(cands[order], return_index=True)
        best = order[np.sort(first)][:top_k]
        return RankResult(
            item_ids=cands.tolist(),
            scores=scores.tolist(),
            top_k=[{"item_id": int(cands[i]), "score": float(scores[i])} for i in best],
            retrieved=retrieved,
            model_version=self.versions.model,
            embedding_version=self.versions.embedding,
            history_length=n_hist,
        )
