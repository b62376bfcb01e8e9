"""The in-memory embedding center: every item's MOON embedding (one Matryoshka size), its
semantic-ID code (when the snapshot has codes) and the item attributes the ranker reads
(category_id, brand_id), in process memory.

MOON's infrastructure splits memory (a lookup service holding representations) from
computation (the ranking model); here both live in the ranking process, and a request
reads item vectors from arrays instead of the online store. The online store stays the
source of truth: the center is loaded from the embedding parquet of the store's offline
source (the embed job's snapshot, the same rows ``materialize`` wrote online) and item
features, misses are looked up online (items pushed by another process), and new items
are written to both.

Layout: a sorted base (ids, vectors, codes, categories, brands) plus a small sorted delta of
items added since; the delta is merged into the base when it grows past ``merge_at``.
Readers take one immutable ``_Snapshot``; writers build a new one and swap the reference,
so lookups never lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import nn

from moon_rec.data.errors import DataError
from moon_rec.data.rows import sorted_rows


@dataclass(frozen=True)
class _Part:
    ids: np.ndarray  # [N] int64 sorted unique
    vectors: np.ndarray  # [N + 1, C] float32, last row zeros (not found)
    category: np.ndarray  # [N] int64 (-1 unknown)
    brand: np.ndarray  # [N] int64
    codes: np.ndarray  # [N + 1, L] int32 semantic-ID codes (-1: none), last row -1; L may be 0

    @classmethod
    def empty(cls, dim: int, levels: int = 0) -> _Part:
        z = np.zeros(0, np.int64)
        return cls(z, np.zeros((1, dim), np.float32), z, z, np.full((1, levels), -1, np.int32))

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row [...] of the padded arrays (N, the zero row, where absent), found [...])."""
        rows = sorted_rows(self.ids, ids)
        found = rows >= 0
        return np.where(found, rows, len(self)), found


@dataclass(frozen=True)
class _Snapshot:
    base: _Part
    delta: _Part
    base_t: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # ids, vectors, codes (zero-copy)
    delta_t: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _part(
    ids: np.ndarray, vecs: np.ndarray, cat: np.ndarray, brand: np.ndarray, codes: np.ndarray
) -> _Part:
    order = np.argsort(ids, kind="stable")
    dim, levels = vecs.shape[1], codes.shape[1]
    padded = np.concatenate([vecs[order], np.zeros((1, dim), np.float32)]).astype(np.float32)
    padded_codes = np.concatenate([codes[order], np.full((1, levels), -1, np.int32)])
    return _Part(ids[order].astype(np.int64), padded, cat[order].astype(np.int64),
                 brand[order].astype(np.int64), padded_codes.astype(np.int32))


def _tensors(p: _Part) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.from_numpy(p.ids), torch.from_numpy(p.vectors), torch.from_numpy(p.codes)


def _hits(t_ids: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [...] (N where absent), hit [...]) of raw ``ids`` in sorted ``t_ids`` [N > 0]."""
    n = int(t_ids.shape[0])
    pos = torch.searchsorted(t_ids, ids.contiguous()).clamp(max=n - 1)
    hit = t_ids[pos] == ids
    return torch.where(hit, pos, torch.full_like(pos, n)), hit


class EmbeddingCenter:
    """Item embeddings and attributes in memory (see the module docstring).

    Args:
        dim: the Matryoshka size held (the ranker's ``moon_dim``).
        model_version: the encoder version of every vector held.
        merge_at: delta size that triggers a merge into the base.
        levels: L, semantic-ID codewords per item (0: the center holds no codes).
    """

    def __init__(
        self, dim: int, model_version: str, merge_at: int = 4096, levels: int = 0
    ) -> None:
        self.dim = int(dim)
        self.model_version = model_version
        self.merge_at = merge_at
        self.levels = int(levels)
        self._write = threading.Lock()
        self._snap = self._make(_Part.empty(dim, self.levels), _Part.empty(dim, self.levels))

    @staticmethod
    def _make(base: _Part, delta: _Part) -> _Snapshot:
        return _Snapshot(base, delta, _tensors(base), _tensors(delta))

    def __len__(self) -> int:
        s = self._snap
        return len(s.base) + len(s.delta)

    # -- loading -----------------------------------------------------------------------
    @classmethod
    def from_parquet(
        cls, embeddings: str | Path, item_features: str | Path | None, dim: int
    ) -> EmbeddingCenter:
        """Load the embed job's snapshot (``emb_{dim}``, and the ``semantic_ids`` codes
        when it has them) and the latest category / brand of each item from the
        item-features parquet (-1 where absent)."""
        from moon_rec.data.embeddings import EmbeddingSnapshot

        emb = EmbeddingSnapshot.open(embeddings).vectors(dim)
        codes = emb.semantic_ids
        levels = 0 if codes is None else int(codes.shape[1])
        if codes is None:
            codes = np.zeros((len(emb.item_ids), 0), np.int32)
        center = cls(dim, emb.model_version, levels=levels)
        cat = np.full(len(emb.item_ids), -1, np.int64)
        brand = np.full(len(emb.item_ids), -1, np.int64)
        if item_features is not None and Path(item_features).is_file():
            f_ids, f_cat, f_brand = latest_item_attributes(item_features)
            rows = sorted_rows(f_ids, emb.item_ids)
            hit = rows >= 0
            cat[hit], brand[hit] = f_cat[rows[hit]], f_brand[rows[hit]]
        center._snap = cls._make(
            _part(emb.item_ids, emb.item_vectors, cat, brand, codes), _Part.empty(dim, levels)
        )
        return center

    # -- reads -------------------------------------------------------------------------
    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(vectors [N, C], category [N], brand [N], found [N]) of item ``ids`` [N]."""
        s = self._snap
        ids = np.asarray(ids, dtype=np.int64)
        rb, fb = s.base.rows(ids)
        rd, fd = s.delta.rows(ids)
        use_d = fd  # the delta is newer than the base
        vecs = np.where(use_d[:, None], s.delta.vectors[rd], s.base.vectors[rb])
        cat = np.full(len(ids), -1, np.int64)
        brand = np.full(len(ids), -1, np.int64)
        okb = fb & ~use_d
        cat[okb], brand[okb] = s.base.category[rb[okb]], s.base.brand[rb[okb]]
        cat[use_d], brand[use_d] = s.delta.category[rd[use_d]], s.delta.brand[rd[use_d]]
        return vecs, cat, brand, fb | fd

    def all_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids [N], vectors [N, C]) of every item (delta rows replace base rows)."""
        s = self._snap
        keep = ~np.isin(s.base.ids, s.delta.ids)
        ids = np.concatenate([s.base.ids[keep], s.delta.ids])
        vecs = np.concatenate([s.base.vectors[:-1][keep], s.delta.vectors[:-1]])
        return ids, vecs

    def torch_lookup(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The MoonContentArch contract: (vectors [..., C], found [...])."""
        s = self._snap
        out = None
        found = torch.zeros(ids.shape, dtype=torch.bool)
        for t_ids, t_vecs, _ in (s.base_t, s.delta_t):  # delta last: it wins
            if int(t_ids.shape[0]) == 0:
                continue
            rows, hit = _hits(t_ids, ids)
            v = t_vecs[rows]
            out = v if out is None else torch.where(hit.unsqueeze(-1), v, out)
            found |= hit
        if out is None:
            out = torch.zeros((*ids.shape, self.dim), dtype=torch.float32)
        return out, found

    def torch_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """The SemanticIdLookup contract: codes [..., L] int64 of raw ids [...] (-1 where
        the item is absent or has no code)."""
        s = self._snap
        out = torch.full((*ids.shape, self.levels), -1, dtype=torch.long)
        for t_ids, _, t_codes in (s.base_t, s.delta_t):  # delta last: it wins
            if int(t_ids.shape[0]) == 0:
                continue
            rows, hit = _hits(t_ids, ids)
            out = torch.where(hit.unsqueeze(-1), t_codes[rows].long(), out)
        return out

    # -- writes ------------------------------------------------------------------------
    def upsert(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        category: np.ndarray,
        brand: np.ndarray,
        codes: np.ndarray | None = None,
    ) -> None:
        """Add or replace items [N] (their vectors [N, dim] must be of this center's
        model_version; ``codes`` [N, L] their semantic-ID codes, None or -1 rows: none)."""
        ids = np.asarray(ids, np.int64)
        vectors = np.asarray(vectors, np.float32).reshape(len(ids), self.dim)
        if not np.isfinite(vectors).all():
            raise DataError("embedding with NaN/inf", column="embedding")
        if codes is None:
            codes = np.full((len(ids), self.levels), -1, np.int32)
        codes = np.asarray(codes, np.int32)
        if codes.shape != (len(ids), self.levels):
            raise DataError(
                f"codes of shape {codes.shape}, the center holds {self.levels} levels",
                column="semantic_ids",
            )
        with self._write:
            s = self._snap
            old = s.delta
            keep = ~np.isin(old.ids, ids)
            # last occurrence of a repeated id wins
            _, last = np.unique(ids[::-1], return_index=True)
            sel = len(ids) - 1 - last
            delta = _part(
                np.concatenate([old.ids[keep], ids[sel]]),
                np.concatenate([old.vectors[:-1][keep], vectors[sel]]),
                np.concatenate([old.category[keep], np.asarray(category, np.int64)[sel]]),
                np.concatenate([old.brand[keep], np.asarray(brand, np.int64)[sel]]),
                np.concatenate([old.codes[:-1][keep], codes[sel]]),
            )
            base = s.base
            if len(delta) >= self.merge_at:
                bk = ~np.isin(base.ids, delta.ids)
                base = _part(
                    np.concatenate([base.ids[bk], delta.ids]),
                    np.concatenate([base.vectors[:-1][bk], delta.vectors[:-1]]),
                    np.concatenate([base.category[bk], delta.category]),
                    np.concatenate([base.brand[bk], delta.brand]),
                    np.concatenate([base.codes[:-1][bk], delta.codes[:-1]]),
                )
                delta = _Part.empty(self.dim, self.levels)
            self._snap = self._make(base, delta)

    def replace_base(self, other: EmbeddingCenter) -> None:
        """Take ``other``'s items as the new base, keeping this center's delta items that
        ``other`` lacks (a refreshed snapshot of the same model_version, size and code
        levels)."""
        if (other.model_version, other.dim, other.levels) != (
            self.model_version, self.dim, self.levels
        ):
            raise ValueError(
                f"cannot refresh a center of {self.model_version} ({self.dim} dims, "
                f"{self.levels} code levels) with {other.model_version} ({other.dim} dims, "
                f"{other.levels} code levels)"
            )
        with self._write:
            s = self._snap
            d = s.delta
            keep = ~np.isin(d.ids, other._snap.base.ids)
            delta = _Part(d.ids[keep], np.concatenate([d.vectors[:-1][keep], d.vectors[-1:]]),
                          d.category[keep], d.brand[keep],
                          np.concatenate([d.codes[:-1][keep], d.codes[-1:]]))
            self._snap = self._make(other._snap.base, delta)


class CenterContentArch(nn.Module):
    """The ranker's content lookup (``MoonContentArch``'s interface) served from an
    ``EmbeddingCenter``: new items are visible to the model at once."""

    def __init__(self, center: EmbeddingCenter) -> None:
        super().__init__()
        self.center = center
        self.dim = center.dim

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.center.torch_lookup(ids)


class CenterSemanticIds(nn.Module):
    """The ranker's semantic-ID lookup (``SemanticIdTable``'s interface) served from an
    ``EmbeddingCenter``: the codes of the snapshot's items (those training read) and of
    items added since (``POST /items``, other processes), visible to the model at once.

    Example::

        model, _ = load_ranker(ranker_dir, semantic_ids=CenterSemanticIds(center))
    """

    def __init__(self, center: EmbeddingCenter) -> None:
        super().__init__()
        self.center = center
        self.levels = center.levels

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.center.torch_codes(ids)


def latest_item_attributes(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item_id sorted, category_id, brand_id) of the newest row per item of an
    item-features parquet (``moon features build``'s ``item_features.parquet``)."""
    t = pq.read_table(path, columns=["item_id", "event_timestamp", "category_id", "brand_id"])
    ids = t.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)
    ts = pc.cast(t.column("event_timestamp"), pa.int64()).to_numpy(zero_copy_only=False)
    order = np.lexsort((ts, ids))
    last = np.ones(len(order), bool)
    last[:-1] = ids[order][1:] != ids[order][:-1]
    keep = order[last]

    def col(name: str) -> np.ndarray:
        return t.column(name).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)[keep]

    return ids[keep], col("category_id"), col("brand_id")
