"""The ranker's item-keyed lookups: raw item_id -> a row of a per-item table built from
the embedding snapshot (frozen: nothing here trains).

One convention for "absent" (:class:`ItemRows`): the tables have N + 1 rows, the last one
empty (zeros, or code -1), and an id that is not among the N known items (unknown,
negative, a new item) maps to that row N with ``found`` False. Nothing raises on an
unknown id: a ranker must score a brand-new item.

- :class:`ItemRows` is the one id -> row lookup of these tables (sorted ids, searchsorted).
- :class:`FrozenContentTable` is the frozen MOON content lookup (item_id -> vector) that
  training uses: an EmbeddingCollection table initialised from the embedding snapshot,
  sharded row-wise by the planner and never updated (no autograd path, no optimizer), so
  no rank holds every vector. :class:`MoonContentArch` is the same lookup as one
  replicated buffer (for small catalogs, benchmarks and tests); serving passes its own
  lookup over its center. All three return the same (vectors, found) for the same
  snapshot.
- :class:`SemanticIdTable` maps item_id -> semantic-ID code (the embed job's codes).
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

CONTENT_TABLE = "moon_content"
CONTENT_FEATURE = "moon_item"


class ItemRows(nn.Module):
    """Raw item ids -> rows of a per-item table of N + 1 rows: ``item_ids`` [N] sorted
    unique; an id that is not there (unknown, negative, new) gets row N, the table's empty
    last row, and ``found`` False (the module's one "absent" convention; never raises).

    Example::

        rows = ItemRows(torch.tensor([3, 7]))
        rows(torch.tensor([7, 5]))  # (tensor([1, 2]), tensor([True, False]))
    """

    item_ids: torch.Tensor

    def __init__(self, item_ids: torch.Tensor) -> None:
        super().__init__()
        if item_ids.ndim != 1:
            raise ValueError(f"item table: item_ids must be [N], got {tuple(item_ids.shape)}")
        self.register_buffer("item_ids", item_ids.long().contiguous())

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows [...] int64 in [0, N], found [...] bool) of raw ids [...]."""
        n = self.item_ids.shape[0]
        if n == 0:
            return torch.zeros_like(ids, dtype=torch.long), torch.zeros_like(ids, dtype=torch.bool)
        pos = torch.searchsorted(self.item_ids, ids.contiguous()).clamp(max=n - 1)
        found = self.item_ids[pos] == ids
        return torch.where(found, pos, torch.full_like(pos, n)), found


def content_rows(item_ids: torch.Tensor, vectors: torch.Tensor) -> ItemRows:
    """The row map of a content table of ``vectors`` [N, C] keyed by ``item_ids`` [N];
    shapes that do not match are an error naming both."""
    if item_ids.ndim != 1 or vectors.ndim != 2 or vectors.shape[0] != item_ids.shape[0]:
        raise ValueError(f"content table: item_ids {tuple(item_ids.shape)} and vectors "
                         f"{tuple(vectors.shape)} do not match")
    return ItemRows(item_ids)


class FrozenContentTable(nn.Module):
    """Frozen MOON content embeddings of items, looked up by raw item_id through a TorchRec
    EmbeddingCollection table (``moon_content``, N + 1 rows: the snapshot's vectors and a
    zero row for items without one).

    The table's weight is initialised from the snapshot and has ``requires_grad`` False;
    under DistributedModelParallel :func:`moon_rec.ranking.train.shard_model` shards it
    row-wise and keeps it out of both optimizers, and the lookup runs under ``no_grad``,
    so no gradient ever reaches the table's kernel and it never changes while the ID
    tables train. (TorchRec 1.8 offers its dense kernel only to data-parallel, i.e.
    replicated, tables, so the shards use the fused kernel, whose default optimizer,
    EXACT_SGD, keeps no state and only runs in a backward that never comes.) Only the id -> row map (``rows``, 8
    bytes per item) is replicated. Unsharded it computes what :class:`MoonContentArch`
    computes on the same vectors (the lookup of a row of the same matrix).

    Args:
        item_ids: [N] int64 item ids, sorted ascending, unique.
        vectors: [N, C] float32, L2-normalised rows (zero rows allowed).

    Example::

        table = FrozenContentTable(torch.tensor([3, 7]), torch.eye(2))
        vec, found = table(torch.tensor([[7, 5]]))  # vec [1, 2, 2], found [[True, False]]
    """

    def __init__(self, item_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        super().__init__()
        self.rows = content_rows(item_ids, vectors)
        self.dim = int(vectors.shape[1])
        # The table's random init is overwritten below; fork the RNG so building it leaves
        # every other module's init as it was (same seeds, same rankers as before).
        with torch.random.fork_rng(devices=[]):
            self.embedding_collection = EmbeddingCollection(
                tables=[
                    EmbeddingConfig(
                        name=CONTENT_TABLE,
                        embedding_dim=self.dim,
                        num_embeddings=int(vectors.shape[0]) + 1,
                        feature_names=[CONTENT_FEATURE],
                    )
                ]
            )
        weight = self.embedding_collection.embeddings[CONTENT_TABLE].weight
        with torch.no_grad():
            weight[:-1].copy_(vectors.float())
            weight[-1].zero_()
        weight.requires_grad_(False)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            ids: raw item ids [B, ...] (negatives and unknowns allowed).

        Returns:
            (vectors [B, ..., C], found [B, ...] bool).
        """
        rows, found = self.rows(ids)
        if ids.ndim == 0 or ids.numel() == 0:
            flat = rows.reshape(-1)
            weight = self.embedding_collection.embeddings[CONTENT_TABLE].weight
            return weight[flat].reshape(*ids.shape, self.dim), found
        b = ids.shape[0]
        per = ids.numel() // b
        kjt = KeyedJaggedTensor(
            keys=[CONTENT_FEATURE],
            values=rows.reshape(-1),
            lengths=torch.full((b,), per, dtype=torch.int32, device=ids.device),
        )
        # No autograd path into the table: its kernel never runs a backward (and so never
        # an optimizer update), whatever kernel the planner gives it.
        with torch.no_grad():
            vectors = self.embedding_collection(kjt)[CONTENT_FEATURE].values()
        return vectors.reshape(*ids.shape, self.dim), found


class SemanticIdTable(nn.Module):
    """Semantic-ID codes of items, looked up by raw item_id (a replicated buffer: L int32
    per item). Items without a code get -1 at every level.

    Args:
        item_ids: [N] int64, sorted ascending, unique.
        codes: [N, L] int codes in [0, K).

    Example::

        table = SemanticIdTable(torch.tensor([3, 7]), torch.tensor([[0, 1], [2, 3]]))
        table(torch.tensor([[7, 5]]))  # tensor([[[2, 3], [-1, -1]]])
    """

    codes: torch.Tensor

    def __init__(self, item_ids: torch.Tensor, codes: torch.Tensor) -> None:
        super().__init__()
        if codes.ndim != 2 or codes.shape[0] != item_ids.shape[0]:
            raise ValueError(
                f"semantic-ID table: item_ids {tuple(item_ids.shape)} and codes "
                f"{tuple(codes.shape)} do not match"
            )
        self.rows = ItemRows(item_ids)
        self.levels = int(codes.shape[1])
        padded = torch.cat([codes.int(), codes.new_full((1, self.levels), -1).int()], dim=0)
        self.register_buffer("codes", padded.contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Codes [..., L] int64 of raw ids [...] (-1 where the item has none)."""
        rows, _ = self.rows(ids)
        return self.codes[rows].long()


class MoonContentArch(nn.Module):
    """Frozen MOON content embeddings of items, looked up by raw item_id through
    :class:`ItemRows` (so absent items follow its convention: the zero row N, ``found``
    False).

    The vectors are a buffer of N + 1 rows (saved with the model, never trained), the last
    one zeros.

    Args:
        item_ids: [N] int64 item ids, sorted ascending, unique.
        vectors: [N, C] float32, L2-normalised rows (zero rows allowed).

    Example::

        arch = MoonContentArch(torch.tensor([3, 7]), torch.eye(2))
        vec, found = arch(torch.tensor([[7, 5]]))  # vec [1, 2, 2], found [[True, False]]
    """

    vectors: torch.Tensor

    def __init__(self, item_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        super().__init__()
        self.rows = content_rows(item_ids, vectors)
        padded = torch.cat([vectors.float(), vectors.new_zeros(1, vectors.shape[1])], dim=0)
        self.register_buffer("vectors", padded.contiguous())
        self.dim = int(vectors.shape[1])

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            ids: any shape [...] of raw item ids (negatives and unknowns allowed).

        Returns:
            (vectors [..., C], zeros where absent; found [...] bool).
        """
        rows, found = self.rows(ids)
        return self.vectors[rows], found
