"""The ranker's input contract: one batch of impressions as KeyedJaggedTensors plus dense,
laid out from the feature spec (:class:`RankerLayout`).

The impression's own keys are the ranker's: ``user_id``, ``item_id``, ``position`` and the
query text's hashed ``query_tokens``. Every other sparse feature is a spec entry
(:mod:`moon_rec.data.feature_spec`), in spec order:

- ``pooled`` (EmbeddingBagCollection, one vector per feature): ``user_id``, the spec's
  pooled features (categoricals no sequence targets, bucketised numerics: one value each,
  already table rows, ``FittedFeatures.encode``), ``position`` (one value) and
  ``query_tokens`` (mean-pooled; empty for an empty query);
- ``sequence`` (EmbeddingCollection, one vector per value): ``item_id`` and the spec's
  sequence targets (one raw id each: the candidate's side of each (target, sequence) pair),
  then the spec's id_sequences (the behaviours, most recent first, zero or more raw ids
  each, the same count for all). Target and sequence of a pair share a table when the
  spec says so (``item`` for item ids).

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

from moon_rec.data.feature_spec import ITEM_KEY, FeatureSpec

USER_KEY = "user_id"
POSITION_KEY = "position"
QUERY_KEY = "query_tokens"


@dataclass(frozen=True)
class RankerLayout:
    """Where each feature of a spec goes in a :class:`RankerBatch`.

    Args:
        pooled: the spec's pooled features (table rows), in spec order.
        targets: the spec's categoricals a sequence targets (raw ids), in pair order.
        sequences: the spec's id_sequences, in spec order.
        pairs: (target, sequence) of each sequence; the first is ``item_id``'s (the
            primary pair, whose ids MOON content and semantic IDs are looked up by).

    Example::

        layout = RankerLayout.of(load_feature_spec("ids"))
        layout.pooled_keys    # ("user_id", "brand_id", "position", "query_tokens")
        layout.sequence_keys  # ("item_id", "category_id", "hist_item_ids", ...)
    """

    pooled: tuple[str, ...]
    targets: tuple[str, ...]
    sequences: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, spec: FeatureSpec) -> RankerLayout:
        return cls(
            pooled=tuple(e.column for e in spec.pooled()),
            targets=tuple(e.column for e in spec.targets()),
            sequences=tuple(e.column for e in spec.sequences()),
            pairs=tuple(spec.pairs()),
        )

    @property
    def pooled_keys(self) -> tuple[str, ...]:
        return (USER_KEY, *self.pooled, POSITION_KEY, QUERY_KEY)

    @property
    def sequence_keys(self) -> tuple[str, ...]:
        return (ITEM_KEY, *self.targets, *self.sequences)

    @property
    def primary(self) -> str:
        """The sequence of item ids (the first pair's)."""
        return self.pairs[0][1]


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
        pooled: KJT with keys ``layout.pooled_keys``, stride B.
        sequence: KJT with keys ``layout.sequence_keys``, stride B.
        query_embedding: [B, C] float (C = moon_dim; 0 for a spec without MOON content).
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
    layout: RankerLayout,
    *,
    user_id: np.ndarray,
    item_id: np.ndarray,
    position: np.ndarray,
    query_tokens_padded: np.ndarray,
    query_token_lengths: np.ndarray,
    sequences: dict[str, np.ndarray],
    hist_lengths: np.ndarray,
    query_embedding: np.ndarray,
    has_query: np.ndarray,
    targets: dict[str, np.ndarray] | None = None,
    labels: np.ndarray | None = None,
    sparse_ids: dict[str, np.ndarray] | None = None,
    dense: np.ndarray | None = None,
) -> RankerBatch:
    """Build a RankerBatch from padded numpy arrays (B rows), laid out by ``layout``.

    Args:
        user_id, item_id, position: [B] int64 raw ids.
        query_tokens_padded: [B, Q] hashed tokens; query_token_lengths: [B] valid count.
        sequences: each of ``layout.sequences``, [B, L] behaviours, most recent first;
            hist_lengths: [B] valid count (the rest is padding, never read).
        query_embedding: [B, C] float32; has_query: [B] bool.
        targets: each of ``layout.targets``, [B] raw ids.
        labels: [B] clicks (None: zeros).
        sparse_ids: each of ``layout.pooled``, [B] table rows (``FittedFeatures.encode``).
        dense: [B, F] the spec's transformed numerics (None: F = 0).
    """
    b = int(item_id.shape[0])
    one = np.ones(b, dtype=np.int32)
    targets = targets or {}
    pooled_ids = sparse_ids or {}
    width = min((s.shape[1] for s in sequences.values()), default=0)
    q_len = np.minimum(query_token_lengths, query_tokens_padded.shape[1]).astype(np.int32)
    h_len = np.minimum(hist_lengths, width).astype(np.int32)
    q_mask = np.arange(query_tokens_padded.shape[1])[None, :] < q_len[:, None]
    h_mask = np.arange(width)[None, :] < h_len[:, None]
    pooled = _kjt(
        layout.pooled_keys,
        [user_id, *(pooled_ids[k] for k in layout.pooled), position, query_tokens_padded[q_mask]],
        [one, *(one for _ in layout.pooled), one, q_len],
    )
    sequence = _kjt(
        layout.sequence_keys,
        [item_id, *(targets[k] for k in layout.targets),
         *(sequences[k][:, :width][h_mask] for k in layout.sequences)],
        [one, *(one for _ in layout.targets), *(h_len for _ in layout.sequences)],
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
    layout: RankerLayout,
    *,
    user_id: int,
    item_ids: np.ndarray,
    sequences: dict[str, np.ndarray],
    query_text: str | None,
    query_embedding: np.ndarray | None,
    query_token_buckets: int,
    max_seq_len: int,
    content_dim: int,
    targets: dict[str, np.ndarray] | None = None,
    position: int = 0,
    max_query_tokens: int = 8,
    sparse_ids: dict[str, np.ndarray] | None = None,
    dense: np.ndarray | None = None,
) -> RankerBatch:
    """The RankerBatch of one ranking request: B candidates of one user and query.

    The serving side of :func:`make_batch` (training builds its batches through
    ``TrainingSet.batch``, which calls the same function with the same query hashing).

    Args:
        layout: the ranker's (``model.layout``).
        user_id: the user (raw id).
        item_ids: [B] the candidates; targets: each of ``layout.targets``, [B] their raw
            ids (e.g. their categories).
        sequences: each of ``layout.sequences``, [H] the user's behaviours, most recent
            first (the first ``max_seq_len`` are used; the same H for all).
        query_text: the text query (None or "": no tokens).
        query_embedding: [C] the query's MOON embedding (None: none, ``has_query`` False).
        content_dim: C (0 without MOON content).
        position: the display position every candidate is scored at.
        sparse_ids, dense: the spec's encoded features of the B candidates
            (``FittedFeatures.encode``; None: the spec has none).
    """
    b = len(item_ids)
    toks = query_tokens(query_text, query_token_buckets, max_query_tokens)
    q_tok = np.full((b, max(1, len(toks))), -1, np.int64)
    q_tok[:, : len(toks)] = toks
    hist = {k: np.asarray(sequences[k], np.int64)[:max_seq_len] for k in layout.sequences}
    lengths = {len(v) for v in hist.values()}
    if len(lengths) > 1:
        raise ValueError(f"behaviour sequences of different lengths: "
                         f"{ {k: len(v) for k, v in hist.items()} }")
    h = lengths.pop() if lengths else 0
    has_q = query_embedding is not None and content_dim > 0
    q = (
        np.broadcast_to(np.asarray(query_embedding, np.float32)[:content_dim], (b, content_dim))
        if has_q
        else np.zeros((b, content_dim), np.float32)
    )
    return make_batch(
        layout,
        user_id=np.full(b, user_id, np.int64),
        item_id=np.asarray(item_ids, np.int64),
        targets={k: np.asarray(v, np.int64) for k, v in (targets or {}).items()},
        position=np.full(b, position, np.int64),
        query_tokens_padded=q_tok,
        query_token_lengths=np.full(b, len(toks), np.int64),
        sequences={k: np.broadcast_to(v.reshape(1, -1), (b, h)) if h else np.full((b, 1), -1)
                   for k, v in hist.items()},
        hist_lengths=np.full(b, h, np.int64),
        query_embedding=q,
        has_query=np.full(b, has_q, bool),
        sparse_ids=sparse_ids,
        dense=dense,
    )
