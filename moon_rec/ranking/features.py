"""The ranker's input contract: one batch of impressions as KeyedJaggedTensors plus dense.

A :class:`RankerBatch` carries *raw* ids (item_id, user_id, ... as in the tables); the
model maps them to table rows itself (:class:`moon_rec.ranking.sparse.IdRemap`), so a
caller can never index past a table. Two KeyedJaggedTensors:

- ``pooled`` (EmbeddingBagCollection, one vector per feature): ``user_id``, ``brand_id``,
  ``position`` (one value each) and ``query_tokens`` (hashed tokens of the text query,
  mean-pooled; empty for an empty query);
- ``sequence`` (EmbeddingCollection, one vector per value): ``item_id``, ``category_id``
  (one value each: the target) and ``hist_item_ids``, ``hist_category_ids`` (the behaviour
  sequence, most recent first, zero or more values each, the same count for both).

The feature spec's sparse extras (:mod:`moon_rec.data.feature_spec`) follow
POOLED_FEATURES in ``pooled``, one value each, already table rows
(``FittedFeatures.encode``).

Dense: ``query_embedding`` [B, C], the MOON embedding of the query text (zeros where there
is none, with ``has_query`` False); ``dense`` [B, F] the spec's transformed numeric
features (F may be 0); ``labels`` [B] clicks as float.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

POOLED_FEATURES: tuple[str, ...] = ("user_id", "brand_id", "position", "query_tokens")
SEQUENCE_FEATURES: tuple[str, ...] = (
    "item_id",
    "category_id",
    "hist_item_ids",
    "hist_category_ids",
)
_TOKEN = re.compile(r"[0-9a-z]+")


def query_tokens(text: str | None, buckets: int, max_tokens: int = 8) -> list[int]:
    """Hash the lower-cased alphanumeric tokens of ``text`` into ``[0, buckets)``.

    Stable across processes and runs (crc32, not Python's salted ``hash``).

    Example::

        query_tokens("Red Dress", 4096)  # two bucket ids
    """
    if not text:
        return []
    toks = _TOKEN.findall(text.lower())[:max_tokens]
    return [zlib.crc32(t.encode()) % buckets for t in toks]


@dataclass
class RankerBatch:
    """One batch of B impressions (see the module docstring for the features).

    Args:
        pooled: KJT with keys POOLED_FEATURES, stride B.
        sequence: KJT with keys SEQUENCE_FEATURES, stride B.
        query_embedding: [B, C] float (C = moon_dim; C may be 0 for the ``ids`` set).
        has_query: [B] bool.
        labels: [B] float in {0, 1} (zeros when unknown, e.g. at serving).
        dense: [B, F] float, the spec's transformed numeric features (F may be 0).
    """

    pooled: KeyedJaggedTensor
    sequence: KeyedJaggedTensor
    query_embedding: torch.Tensor
    has_query: torch.Tensor
    labels: torch.Tensor
    dense: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device, non_blocking: bool = False) -> RankerBatch:
        return RankerBatch(
            pooled=self.pooled.to(device, non_blocking=non_blocking),
            sequence=self.sequence.to(device, non_blocking=non_blocking),
            query_embedding=self.query_embedding.to(device, non_blocking=non_blocking),
            has_query=self.has_query.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            dense=self.dense.to(device, non_blocking=non_blocking),
        )


def _kjt(
    keys: tuple[str, ...], columns: list[np.ndarray], lengths: list[np.ndarray]
) -> KeyedJaggedTensor:
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(keys),
        values=torch.from_numpy(np.concatenate(columns).astype(np.int64, copy=False)),
        lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32, copy=False)),
    )


def make_batch(
    *,
    user_id: np.ndarray,
    item_id: np.ndarray,
    category_id: np.ndarray,
    brand_id: np.ndarray,
    position: np.ndarray,
    query_tokens_padded: np.ndarray,
    query_token_lengths: np.ndarray,
    hist_item_ids: np.ndarray,
    hist_category_ids: np.ndarray,
    hist_lengths: np.ndarray,
    query_embedding: np.ndarray,
    has_query: np.ndarray,
    labels: np.ndarray | None = None,
    extra_ids: dict[str, np.ndarray] | None = None,
    dense: np.ndarray | None = None,
) -> RankerBatch:
    """Build a RankerBatch from padded numpy arrays (B rows).

    Args:
        user_id, item_id, category_id, brand_id, position: [B] int64 raw ids.
        query_tokens_padded: [B, Q] hashed tokens; query_token_lengths: [B] valid count.
        hist_item_ids, hist_category_ids: [B, L] behaviours, most recent first;
            hist_lengths: [B] valid count (the rest is padding, never read).
        query_embedding: [B, C] float32; has_query: [B] bool.
        labels: [B] clicks (None: zeros).
        extra_ids: the spec's sparse extras, [B] table rows each, in spec order.
        dense: [B, F] the spec's transformed numerics (None: F = 0).
    """
    b = int(item_id.shape[0])
    one = np.ones(b, dtype=np.int32)
    q_len = np.minimum(query_token_lengths, query_tokens_padded.shape[1]).astype(np.int32)
    h_len = np.minimum(hist_lengths, hist_item_ids.shape[1]).astype(np.int32)
    q_mask = np.arange(query_tokens_padded.shape[1])[None, :] < q_len[:, None]
    h_mask = np.arange(hist_item_ids.shape[1])[None, :] < h_len[:, None]
    extra = extra_ids or {}
    pooled = _kjt(
        POOLED_FEATURES + tuple(extra),
        [user_id, brand_id, position, query_tokens_padded[q_mask], *extra.values()],
        [one, one, one, q_len, *(one for _ in extra)],
    )
    sequence = _kjt(
        SEQUENCE_FEATURES,
        [item_id, category_id, hist_item_ids[h_mask], hist_category_ids[h_mask]],
        [one, one, h_len, h_len],
    )
    return RankerBatch(
        pooled=pooled,
        sequence=sequence,
        query_embedding=torch.from_numpy(np.ascontiguousarray(query_embedding, dtype=np.float32)),
        has_query=torch.from_numpy(np.asarray(has_query, dtype=bool)),
        labels=torch.from_numpy(
            np.zeros(b, np.float32) if labels is None else np.asarray(labels, np.float32)
        ),
        dense=torch.from_numpy(
            np.zeros((b, 0), np.float32) if dense is None
            else np.ascontiguousarray(dense, dtype=np.float32)
        ),
    )


def request_batch(
    *,
    user_id: int,
    item_ids: np.ndarray,
    category_ids: np.ndarray,
    brand_ids: np.ndarray,
    hist_item_ids: np.ndarray,
    hist_category_ids: np.ndarray,
    query_text: str | None,
    query_embedding: np.ndarray | None,
    query_token_buckets: int,
    max_seq_len: int,
    content_dim: int,
    position: int = 0,
    max_query_tokens: int = 8,
    extra_ids: dict[str, np.ndarray] | None = None,
    dense: np.ndarray | None = None,
) -> RankerBatch:
    """The RankerBatch of one ranking request: B candidates of one user and query.

    The serving side of :func:`make_batch` (training builds its batches through
    ``TrainingSet.batch``, which calls the same function with the same query hashing).

    Args:
        user_id: the user (raw id).
        item_ids, category_ids, brand_ids: [B] the candidates and their attributes.
        hist_item_ids, hist_category_ids: [H] the user's behaviours, most recent first
            (the first ``max_seq_len`` are used).
        query_text: the text query (None or "": no tokens).
        query_embedding: [C] the query's MOON embedding (None: none, ``has_query`` False).
        content_dim: C (0 for the ``ids`` feature set).
        position: the display position every candidate is scored at.
        extra_ids, dense: the spec's extras of the B candidates, encoded
            (``FittedFeatures.encode``; None: the spec has none).
    """
    b = len(item_ids)
    toks = query_tokens(query_text, query_token_buckets, max_query_tokens)
    q_tok = np.full((b, max(1, len(toks))), -1, np.int64)
    q_tok[:, : len(toks)] = toks
    hist = np.asarray(hist_item_ids, np.int64)[:max_seq_len]
    hist_cat = np.asarray(hist_category_ids, np.int64)[:max_seq_len]
    h = len(hist)
    has_q = query_embedding is not None and content_dim > 0
    q = (
        np.broadcast_to(np.asarray(query_embedding, np.float32)[:content_dim], (b, content_dim))
        if has_q
        else np.zeros((b, content_dim), np.float32)
    )
    return make_batch(
        user_id=np.full(b, user_id, np.int64),
        item_id=np.asarray(item_ids, np.int64),
        category_id=np.asarray(category_ids, np.int64),
        brand_id=np.asarray(brand_ids, np.int64),
        position=np.full(b, position, np.int64),
        query_tokens_padded=q_tok,
        query_token_lengths=np.full(b, len(toks), np.int64),
        hist_item_ids=np.broadcast_to(hist.reshape(1, -1), (b, h)) if h else np.full((b, 1), -1),
        hist_category_ids=(
            np.broadcast_to(hist_cat.reshape(1, -1), (b, h)) if h else np.full((b, 1), -1)
        ),
        hist_lengths=np.full(b, h, np.int64),
        query_embedding=q,
        has_query=np.full(b, has_q, bool),
        extra_ids=extra_ids,
        dense=dense,
    )
