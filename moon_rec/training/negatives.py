"""Negatives of MOON's stage-2 post-training.

- ``TemporalNegativeQueue``: a FIFO memory bank of item embeddings from earlier steps
  (temporal negatives), with the item and SPU ids of every slot.
- ``gather_with_local_grad``: all-gather across ranks (spatial negatives); the local shard
  keeps its autograd graph, the other ranks' shards are constants.
- ``CategoryHardNegatives``: other items of the positive's category (hard negatives).
- ``same_product_mask``: which candidates are the positive's own product (same item or SPU)
  so that no positive appears among its own negatives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist


class TemporalNegativeQueue:
    """A ring buffer of the last ``size`` item embeddings (detached), with their ids.

    Args:
        dim: embedding dimension D.
        size: capacity (0 disables the queue).

    Example:
        >>> q = TemporalNegativeQueue(dim=4, size=3)
        >>> q.push(torch.eye(4)[:2], torch.tensor([10, 11]), torch.tensor([1, 1]))
        >>> q.embeddings().shape, q.item_ids().tolist()
        (torch.Size([2, 4]), [10, 11])
    """

    def __init__(self, dim: int, size: int) -> None:
        self.dim, self.size = dim, size
        self._emb = torch.zeros((size, dim))
        self._ids = torch.full((size,), -1, dtype=torch.long)
        self._spu = torch.full((size,), -1, dtype=torch.long)
        self._ptr = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @torch.no_grad()
    def push(self, emb: torch.Tensor, item_ids: torch.Tensor, spu_ids: torch.Tensor) -> None:
        """Enqueue [n, D] embeddings (oldest entries are overwritten when full)."""
        if self.size == 0:
            return
        emb = emb.detach().float().cpu()
        item_ids, spu_ids = item_ids.detach().cpu().long(), spu_ids.detach().cpu().long()
        n = emb.shape[0]
        if n >= self.size:
            emb, item_ids, spu_ids, n = emb[-self.size:], item_ids[-self.size:], spu_ids[-self.size:], self.size
        idx = (self._ptr + torch.arange(n)) % self.size
        self._emb[idx] = emb
        self._ids[idx] = item_ids
        self._spu[idx] = spu_ids
        self._ptr = int((self._ptr + n) % self.size)
        self._count = min(self.size, self._count + n)

    def _order(self) -> torch.Tensor:
        """Slot indices from oldest to newest."""
        if self._count < self.size:
            return torch.arange(self._count)
        return (self._ptr + torch.arange(self.size)) % self.size

    def embeddings(self) -> torch.Tensor:
        """[len, D], oldest first."""
        return self._emb[self._order()]

    def item_ids(self) -> torch.Tensor:
        return self._ids[self._order()]

    def spu_ids(self) -> torch.Tensor:
        return self._spu[self._order()]

    def state_dict(self) -> dict[str, Any]:
        return {"emb": self._emb.clone(), "ids": self._ids.clone(), "spu": self._spu.clone(),
                "ptr": self._ptr, "count": self._count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._emb, self._ids, self._spu = state["emb"], state["ids"], state["spu"]
        self._ptr, self._count = int(state["ptr"]), int(state["count"])


def gather_with_local_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather [B, ...] from every rank -> [world * B, ...] in rank order.

    Only the local shard carries gradient (the other ranks' rows are constants here; their
    own rank back-propagates through them). Without an initialised process group this is
    the identity. All ranks must pass the same B.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, 0)


def gather_ids(x: torch.Tensor) -> torch.Tensor:
    """All-gather an id tensor [B] (no gradient); identity without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)


class CategoryHardNegatives:
    """Samples hard negatives: other items of the positive's category, never its own SPU.

    Args:
        item_ids: [N] catalog item ids.
        category_ids: [N] their categories.
        spu_ids: [N] their SPUs (variants of one product share it).

    Example:
        >>> s = CategoryHardNegatives(np.array([1, 2, 3]), np.array([7, 7, 8]), np.array([1, 2, 3]))
        >>> s.sample(np.array([1]), k=1, rng=np.random.default_rng(0)).tolist()
        [[2]]
    """

    def __init__(self, item_ids: np.ndarray, category_ids: np.ndarray, spu_ids: np.ndarray) -> None:
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.category_ids = np.asarray(category_ids, dtype=np.int64)
        self.spu_ids = np.asarray(spu_ids, dtype=np.int64)
        self._row = {int(i): r for r, i in enumerate(self.item_ids)}
        order = np.argsort(self.category_ids, kind="stable")
        cats, starts = np.unique(self.category_ids[order], return_index=True)
        ends = np.append(starts[1:], len(order))
        self._members = {int(c): order[s:e] for c, s, e in zip(cats, starts, ends, strict=True)}

    @classmethod
    def sharing(cls, item_ids: np.ndarray, category_ids: np.ndarray, spu_ids: np.ndarray,
                values: np.ndarray) -> CategoryHardNegatives:
        """Negatives from the positive's category that also share its attribute value
        (``values`` [N], e.g. the colour from ``attributes``; ``""`` = not stated, a value
        of its own): look-alikes in that attribute that differ in the rest of the look."""
        keys = np.stack([np.asarray(category_ids).astype(str), np.asarray(values).astype(str)], 1)
        _, group = np.unique(keys, axis=0, return_inverse=True)
        return cls(item_ids, group.reshape(-1), spu_ids)

    def sample(self, positive_ids: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """[B, k] item ids from each positive's category, excluding items of its SPU;
        -1 where the category has fewer than k such items."""
        out = np.full((len(positive_ids), k), -1, dtype=np.int64)
        for b, pid in enumerate(np.asarray(positive_ids).tolist()):
            r = self._row.get(int(pid), -1)
            if r < 0:
                continue
            rows = self._members[int(self.category_ids[r])]
            rows = rows[self.spu_ids[rows] != self.spu_ids[r]]
            if len(rows) == 0:
                continue
            pick = rng.choice(rows, size=min(k, len(rows)), replace=False)
            out[b, : len(pick)] = self.item_ids[pick]
        return out


class MinedHardNegatives:
    """Samples hard negatives mined with a model: each item's nearest catalog neighbours
    under the previous stage's product embeddings (look-alikes: same category and shape,
    often the other colour variants of its SPU). Same interface as CategoryHardNegatives;
    SPU variants stay in the pool (the trainer's ``same`` mask keeps them from being
    negatives of text queries under ``merge_spu``).

    Args:
        item_ids: [N] catalog item ids.
        neighbours: [N, K] item ids of each item's nearest other items, best first.

    Example:
        >>> s = MinedHardNegatives(np.array([1, 2, 3]), np.array([[2, 3], [1, 3], [2, 1]]))
        >>> s.sample(np.array([3, 9]), k=1, rng=np.random.default_rng(0)).tolist()
        [[2], [-1]]
    """

    def __init__(self, item_ids: np.ndarray, neighbours: np.ndarray) -> None:
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.neighbours = np.asarray(neighbours, dtype=np.int64)
        self._row = {int(i): r for r, i in enumerate(self.item_ids)}

    @staticmethod
    def mine(item_ids: np.ndarray, emb: torch.Tensor, k: int, chunk: int = 1024) -> np.ndarray:
        """[N, k] ids of each row's k most cosine-similar other rows of ``emb`` [N, D]."""
        emb = torch.nn.functional.normalize(emb.float(), dim=-1)
        n = emb.shape[0]
        k = max(0, min(k, n - 1))
        out = np.zeros((n, k), np.int64)
        ids = np.asarray(item_ids, dtype=np.int64)
        for s in range(0, n, chunk):
            sim = emb[s:s + chunk] @ emb.T
            rows = torch.arange(sim.shape[0], device=sim.device)
            sim[rows, rows + s] = -float("inf")
            out[s:s + chunk] = ids[sim.topk(k, dim=1).indices.cpu().numpy()]
        return out

    def sample(self, positive_ids: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """[B, k] item ids among each positive's mined neighbours; -1 where unknown."""
        out = np.full((len(positive_ids), k), -1, dtype=np.int64)
        pool = self.neighbours.shape[1]
        if pool == 0:
            return out
        for b, pid in enumerate(np.asarray(positive_ids).tolist()):
            r = self._row.get(int(pid), -1)
            if r < 0:
                continue
            pick = rng.choice(pool, size=min(k, pool), replace=False)
            out[b, : len(pick)] = self.neighbours[r, pick]
        return out


def same_product_mask(
    positive_ids: torch.Tensor,
    positive_spu: torch.Tensor,
    candidate_ids: torch.Tensor,
    candidate_spu: torch.Tensor,
    *,
    merge_spu: bool = True,
) -> torch.Tensor:
    """[B, N] True where candidate j is query i's positive product: the same item, or (with
    ``merge_spu``) a variant of the same SPU. Such candidates are not negatives."""
    same = positive_ids[:, None] == candidate_ids[None, :]
    if merge_spu:
        same |= positive_spu[:, None] == candidate_spu[None, :]
    return same
