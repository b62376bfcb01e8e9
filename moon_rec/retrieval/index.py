"""Exact inner-product search over item embeddings with faiss (the recall reference)."""

from __future__ import annotations

import faiss
import numpy as np


class ExactIndex:
    """faiss ``IndexFlatIP`` over L2-normalised vectors (inner product = cosine) with the
    item ids of its rows.

    Args:
        vectors: [N, d] float, one row per item (normalised here).
        ids: [N] int64 item ids.

    Example:
        >>> idx = ExactIndex(np.eye(3, dtype=np.float32), np.array([7, 8, 9]))
        >>> idx.search(np.array([[0.0, 1.0, 0.0]], np.float32), k=1)[1].tolist()
        [[8]]
    """

    def __init__(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        v = normalize(vectors)
        if v.shape[0] != len(ids):
            raise ValueError(f"{v.shape[0]} vectors but {len(ids)} ids")
        self.ids = np.asarray(ids, dtype=np.int64)
        self.index = faiss.IndexFlatIP(v.shape[1])
        self.index.add(v)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine: (scores [Q, k], item ids [Q, k]); -1 ids past the catalog size."""
        k = max(1, min(k, len(self)))
        scores, rows = self.index.search(normalize(queries), k)
        ids = np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)
        return scores, ids


def normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation, float32 C-contiguous (what faiss wants)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(n, 1e-12))
