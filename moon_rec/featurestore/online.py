"""Online lookups: numpy arrays for a batch of item / user ids, model_version checked.

A thin client over ``FeatureStore.get_online_features``; it works on any online store
(SQLite, Redis). Embeddings carry the ``model_version`` that produced them; a ranker built
for one encoder version must not silently read another's vectors, so every lookup checks
the version against the expected one (by default the embedding view's ``model_version``
tag, set by ``feast apply`` from the embed job's manifest).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np

from moon_rec.data.embeddings import SEMANTIC_IDS, emb_column
from moon_rec.data.feature_spec import FeatureSpec, FeatureSpecError
from moon_rec.featurestore.layout import (
    ITEM_ATTRIBUTES_VIEW,
    ITEM_EMBEDDING_VIEW,
    ITEM_STAT_FIELDS,
    TARGET_BRAND_KEY,
    TARGET_CATEGORY_KEY,
    UNKNOWN_MODEL_VERSION,
    USER_BEHAVIOUR_VIEW,
)
from moon_rec.featurestore.services import check_spec
from moon_rec.featurestore.store import MoonFeatureStore


class ModelVersionMismatch(ValueError):
    """Embeddings of another encoder version than the one expected were found."""


@dataclass
class EmbeddingLookup:
    """Item embeddings of one Matryoshka size.

    Attributes:
        vectors: float32 [N, dim]; zero rows where not found.
        found: bool [N].
        model_versions: the stored version per row (None where not found).
        codes: int32 [N, L] semantic-ID codes when asked for (``levels``), -1 rows where
            not found or stored without a code (or with a code of another length); None
            when not asked for.
    """

    vectors: np.ndarray
    found: np.ndarray
    model_versions: list[str | None]
    codes: np.ndarray | None = None


@dataclass
class SequenceLookup:
    """Behaviour sequences, padded to L on the right (most recent first).

    Attributes:
        item_ids / category_ids: int64 [N, L], -1 padding.
        actions: object [N, L] of str, "" padding.
        ts: int64 [N, L] microseconds since the epoch (UTC), 0 padding.
        lengths: int64 [N]; 0 where the user has no sequence.
    """

    item_ids: np.ndarray
    category_ids: np.ndarray
    actions: np.ndarray
    ts: np.ndarray
    lengths: np.ndarray


def _micros(v: Any) -> int:
    if isinstance(v, datetime):
        from moon_rec.featurestore.stores import epoch_micros

        return epoch_micros(v)
    return int(v) * 1_000_000  # Feast returns Unix seconds for some stores


class OnlineFeatureClient:
    """Batch lookups against the online store of ``mfs``.

    Args:
        mfs: the feature store.
        expected_model_version: the encoder version to accept; default: the embedding
            view's ``model_version`` tag (no check when that tag is ``"unknown"``).

    Example:
        >>> client = OnlineFeatureClient(mfs)  # doctest: +SKIP
        >>> client.item_embeddings([3, 7], dim=64).vectors.shape  # doctest: +SKIP
        (2, 64)
    """

    def __init__(self, mfs: MoonFeatureStore, expected_model_version: str | None = None) -> None:
        self.mfs = mfs
        self.store = mfs.store
        if expected_model_version is None:
            tag = self.store.get_feature_view(ITEM_EMBEDDING_VIEW).tags.get("model_version")
            expected_model_version = None if tag in (None, UNKNOWN_MODEL_VERSION) else tag
        self.expected_model_version = expected_model_version
        self.max_len = int(
            self.store.get_feature_view(USER_BEHAVIOUR_VIEW).tags.get("max_len", "50")
        )
        # the view carries codes when the embed job's snapshot had them
        self.has_codes = any(
            f.name == SEMANTIC_IDS
            for f in self.store.get_feature_view(ITEM_EMBEDDING_VIEW).features
        )

    def _get(
        self, features: list[str], key: str, ids: Sequence[int] | np.ndarray
    ) -> dict[str, list[Any]]:
        rows = [{key: int(i)} for i in np.asarray(ids, dtype=np.int64).tolist()]
        return self.store.get_online_features(features=features, entity_rows=rows).to_dict()

    def online_rows(
        self, features: list[str], entity_rows: list[dict[str, int]]
    ) -> dict[str, list[Any]]:
        """``get_online_features`` of ``features`` for ``entity_rows`` (field -> values)."""
        return self.store.get_online_features(features=features,
                                              entity_rows=entity_rows).to_dict()

    def item_embeddings(
        self,
        item_ids: Sequence[int] | np.ndarray,
        dim: int = 256,
        *,
        on_mismatch: Literal["raise", "missing"] = "raise",
        levels: int = 0,
    ) -> EmbeddingLookup:
        """Embeddings of ``item_ids`` [N] at Matryoshka size ``dim`` -> ``EmbeddingLookup``.

        Args:
            on_mismatch: ``raise`` ``ModelVersionMismatch`` when a stored row has another
                version than expected, or treat such rows as ``missing``.
            levels: L > 0 also reads the rows' semantic-ID codes (read in the same row
                as the vectors), [N, L]; 0 reads none.
        """
        name = emb_column(dim)
        read_codes = levels > 0 and self.has_codes
        got = self._get(
            [f"{ITEM_EMBEDDING_VIEW}:{name}", f"{ITEM_EMBEDDING_VIEW}:model_version"]
            + ([f"{ITEM_EMBEDDING_VIEW}:{SEMANTIC_IDS}"] if read_codes else []),
            "item_id",
            item_ids,
        )
        n = len(got["item_id"])
        vectors = np.zeros((n, dim), dtype=np.float32)
        found = np.zeros(n, dtype=bool)
        versions: list[str | None] = list(got["model_version"])
        bad: list[int] = []
        for i, (vec, ver) in enumerate(zip(got[name], versions, strict=True)):
            if vec is None:
                continue
            if self.expected_model_version is not None and ver != self.expected_model_version:
                bad.append(i)
                continue
            vectors[i] = vec
            found[i] = True
        if bad and on_mismatch == "raise":
            i = bad[0]
            raise ModelVersionMismatch(
                f"item_id {got['item_id'][i]} has embeddings of model_version "
                f"{versions[i]!r}, expected {self.expected_model_version!r} "
                f"({len(bad)} of {n} rows differ)"
            )
        codes = None
        if levels > 0:
            codes = np.full((n, levels), -1, np.int32)
            for i, code in enumerate(got[SEMANTIC_IDS] if read_codes else []):
                if found[i] and code is not None and len(code) == levels:
                    codes[i] = code
        return EmbeddingLookup(vectors=vectors, found=found, model_versions=versions,
                               codes=codes)

    def item_attributes(self, item_ids: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Attributes and counts [N] each (``found`` [N] bool; -1 / NaN where missing)."""
        ints = ["category_id", "brand_id", "spu_id", *ITEM_STAT_FIELDS]
        got = self._get(
            [f"{ITEM_ATTRIBUTES_VIEW}:{f}" for f in [*ints, "price"]], "item_id", item_ids
        )
        out: dict[str, np.ndarray] = {
            f: np.array([-1 if v is None else v for v in got[f]], dtype=np.int64) for f in ints
        }
        out["price"] = np.array(
            [np.nan if v is None else v for v in got["price"]], dtype=np.float64
        )
        out["found"] = np.array([v is not None for v in got["category_id"]], dtype=bool)
        return out

    def user_sequences(self, user_ids: Sequence[int] | np.ndarray) -> SequenceLookup:
        """Behaviour sequences of ``user_ids`` [N], padded to [N, L]."""
        fields = ["hist_item_ids", "hist_category_ids", "hist_actions", "hist_ts"]
        got = self._get([f"{USER_BEHAVIOUR_VIEW}:{f}" for f in fields], "user_id", user_ids)
        n, cap = len(got["user_id"]), self.max_len
        items = np.full((n, cap), -1, dtype=np.int64)
        cats = np.full((n, cap), -1, dtype=np.int64)
        actions = np.full((n, cap), "", dtype=object)
        ts = np.zeros((n, cap), dtype=np.int64)
        lengths = np.zeros(n, dtype=np.int64)
        for i in range(n):
            seq = got["hist_item_ids"][i]
            if not seq:
                continue
            m = min(len(seq), cap)
            lengths[i] = m
            items[i, :m] = seq[:m]
            cats[i, :m] = got["hist_category_ids"][i][:m]
            actions[i, :m] = got["hist_actions"][i][:m]
            ts[i, :m] = [_micros(t) for t in got["hist_ts"][i][:m]]
        return SequenceLookup(items, cats, actions, ts, lengths)


class SpecFeatureReader:
    """The online values of a feature spec's extra features for one request: what
    ``FittedFeatures.encode`` takes, read like the training set holds them (int64 ids,
    -1 for null; float64, NaN for null).

    Entity rows per view from its join keys: ``item_id`` the candidate, ``user_id`` the
    user, ``target_category_id`` / ``target_brand_id`` the candidate's category / brand
    (the user x category / brand views), as the training set's entity rows had them.

    Reads: one ``get_online_features`` for the item-keyed views and one for all the others
    (user, user x category, user x brand: Feast reads each view for the distinct values
    of its own join keys), each distinct entity row once.
    The item-keyed views (item attributes, item CTR) are also cached in process for
    ``item_cache_s`` seconds: they are shared by every user and change only when the
    store is materialized (a nightly job) or a new item is written, while a request reads
    them for every candidate (on the tiny world, 12 of the 15 ms the spec's reads took).
    An item the store does not hold is never cached (a later ``POST /items`` is read at
    once); after a materialization, a cached item serves its previous values for at most
    ``item_cache_s`` seconds. User-keyed views are read on every request.

    Args:
        client: the online client.
        spec: the ranker's feature spec; checked against the store's registry here (a
            missing feature, or one of another type, is a FeatureSpecError naming it: the
            service refuses to start).
        item_cache_s: how long an item's values are served from the cache (0: no cache).
        max_cached_items: items held at most (past it, expired entries go first, then all).

    Example:
        >>> reader = SpecFeatureReader(client, spec)  # doctest: +SKIP
        >>> raw = reader.read(4, [3, 7], [1, 1], [9, 2])  # {"price": [2], ...}
    """

    KEYS = ("item_id", "user_id", TARGET_CATEGORY_KEY, TARGET_BRAND_KEY)

    def __init__(self, client: OnlineFeatureClient, spec: FeatureSpec, *,
                 item_cache_s: float = 60.0, max_cached_items: int = 1_000_000) -> None:
        self.client = client
        self.spec = spec
        self.item_cache_s = float(item_cache_s)
        self.max_cached_items = int(max_cached_items)
        self._items: dict[int, tuple[float, tuple[Any, ...]]] = {}  # id -> (expiry, values)
        self._lock = threading.Lock()
        check_spec(client.store, spec, "the online store's registry")
        by_keys: dict[tuple[str, ...], list[str]] = {}  # join keys -> refs, spec order
        for e in spec.extras():
            keys = tuple(client.store.get_feature_view(e.view).join_keys)
            if not set(keys) <= set(self.KEYS):
                raise FeatureSpecError(
                    f"feature spec {spec.name!r}: feature {e.column} ({e.source}): view "
                    f"{e.view} is keyed by {list(keys)}; the ranker reads views keyed by "
                    f"{', '.join(self.KEYS)}")
            refs = by_keys.setdefault(keys, [])
            if e.source not in refs:
                refs.append(e.source)
        # two reads per request: the item-keyed views (cached), and every other view in one
        # get_online_features (Feast reads each view for its own keys' distinct values)
        self.item_refs = by_keys.get(("item_id",), [])
        rest = {k: r for k, r in by_keys.items() if k != ("item_id",)}
        self.request_keys = tuple(k for k in self.KEYS if any(k in keys for keys in rest))
        self.request_refs = [ref for refs in rest.values() for ref in refs]

    def read(
        self,
        user_id: int,
        item_ids: Sequence[int] | np.ndarray,
        category_ids: Sequence[int] | np.ndarray | None = None,
        brand_ids: Sequence[int] | np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Raw values [B] per extra column for the B candidates (user-only views are read
        once and repeated)."""
        b = len(item_ids)
        per_key: dict[str, list[int]] = {
            "item_id": [int(i) for i in item_ids],
            "user_id": [int(user_id)] * b,
            TARGET_CATEGORY_KEY: [int(c) for c in (category_ids if category_ids is not None
                                                    else [-1] * b)],
            TARGET_BRAND_KEY: [int(c) for c in (brand_ids if brand_ids is not None
                                                 else [-1] * b)],
        }
        got: dict[str, list[Any]] = {}
        if self.item_refs:
            columns = (self._item_values(self.item_refs, per_key["item_id"])
                       if self.item_cache_s > 0 else
                       self._distinct_rows(("item_id",), self.item_refs,
                                           [(i,) for i in per_key["item_id"]]))
            got |= dict(zip(self.item_refs, columns, strict=True))
        if self.request_refs:
            keys = self.request_keys
            n = 1 if keys == ("user_id",) else b
            columns = self._distinct_rows(keys, self.request_refs, [
                tuple(per_key[k][i] for k in keys) for i in range(n)])
            got |= {ref: vals * b if n == 1 else vals
                    for ref, vals in zip(self.request_refs, columns, strict=True)}
        out: dict[str, np.ndarray] = {}
        for e in self.spec.extras():
            vals = got[e.source]
            if e.kind == "categorical" and e.dtype == "string":
                out[e.column] = np.array(vals, dtype=object)
            elif e.kind == "categorical":
                out[e.column] = np.array([-1 if v is None else v for v in vals], np.int64)
            elif "since" in e.transform:  # a time: microseconds since the epoch
                out[e.column] = np.array([np.nan if v is None else _micros(v) for v in vals],
                                         np.float64)
            else:
                out[e.column] = np.array([np.nan if v is None else v for v in vals], np.float64)
        return out

    def _distinct_rows(self, keys: tuple[str, ...], refs: list[str],
                       rows: list[tuple[int, ...]]) -> list[list[Any]]:
        """Values per ref [len(rows)], each distinct entity row read once."""
        distinct = list(dict.fromkeys(rows))
        values = self.client.online_rows(refs, [dict(zip(keys, r, strict=True))
                                                for r in distinct])
        at = {r: i for i, r in enumerate(distinct)}
        index = [at[r] for r in rows]
        out = []
        for ref in refs:
            vals = list(values[ref.split(":", 1)[1]])
            out.append([vals[i] for i in index])
        return out

    def _item_values(self, refs: list[str], item_ids: list[int]) -> list[list[Any]]:
        """Values per ref [len(item_ids)] of the item-keyed views: the cache's, the
        misses read in one call (items the store holds are cached for ``item_cache_s``)."""
        now = time.monotonic()
        with self._lock:
            cached = {i: hit[1] for i in dict.fromkeys(item_ids)
                      if (hit := self._items.get(i)) is not None and hit[0] > now}
        misses = [i for i in dict.fromkeys(item_ids) if i not in cached]
        if misses:
            read = self._distinct_rows(("item_id",), refs, [(i,) for i in misses])
            fresh = {i: tuple(col[j] for col in read) for j, i in enumerate(misses)}
            cached |= fresh
            with self._lock:
                if len(self._items) + len(fresh) > self.max_cached_items:
                    self._items = {k: v for k, v in self._items.items() if v[0] > now}
                    if len(self._items) + len(fresh) > self.max_cached_items:
                        self._items = {}
                expiry = now + self.item_cache_s
                for i, vals in fresh.items():
                    if any(v is not None for v in vals):  # held by the store
                        self._items[i] = (expiry, vals)
        return [[cached[i][k] for i in item_ids] for k in range(len(refs))]
