"""Semantic IDs: a residual k-means quantiser (RQ-k-means, as Kuaishou's QARM and YouTube's
semantic-ID ranking) that maps an item's MOON vector to a short code of L levels, each a
codeword index in [0, K).

Level 1 clusters the vectors (at one Matryoshka size) into K centroids; level l clusters
what is left after subtracting the centroids of levels 1..l-1. Items that look alike share
code prefixes, so a ranker that memorises user x code learns user x look, and a new item
inherits what its code learned.

The k-means is faiss's (``faiss.Kmeans``), started from a seeded k-means++ choice of
centroids, so a fit is deterministic: the same vectors, ``model_version`` and config give
the same codebooks and the same codes. The quantiser is fitted once per encoder version
and saved next to the embedding snapshot (``semantic_ids.npz``, this module owns the
format); incremental embed runs and ``POST /items`` load it and encode new items with the
same codebooks, never refitting.

Example::

    q = fit_semantic_ids(vectors, "moon-abc", SemanticIdConfig(levels=3, codebook=256, dim=64))
    codes = q.encode_codes(vectors)        # [N, 3] int32 in [0, 256)
    q.save(snapshot / SEMANTIC_IDS_FILE)
    same = load_semantic_ids(snapshot)     # the same codebooks
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from moon_rec import runtime
from moon_rec.data.embeddings import matryoshka_prefix
from moon_rec.data.errors import DataError

SEMANTIC_IDS_FILE = "semantic_ids.npz"
FORMAT = "moon_rec.semantic_ids/1"
# Codebook rows past the centroids a small fit could make (fewer items than codewords)
# sit this far out, so no vector is ever assigned to them.
_FAR = np.float32(1e4)


class SemanticIdConfig(BaseModel):
    """The quantiser.

    Args:
        levels: L, codewords per item.
        codebook: K, codewords per level (codes are in [0, K)).
        dim: the Matryoshka size quantised (column ``emb_{dim}``).
        niter: Lloyd iterations per level.
        max_train_points: the fit uses at most this many items (a seeded sample).
        seed: seeds the sample and the k-means++ start (with the model_version).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    levels: int = Field(default=3, gt=0)
    codebook: int = Field(default=256, gt=1)
    dim: int = Field(default=64, gt=0)
    niter: int = Field(default=20, gt=0)
    max_train_points: int = Field(default=262_144, gt=0)
    seed: int = 0


def _level_seed(model_version: str, seed: int, level: int) -> int:
    return zlib.crc32(f"{model_version}\0{seed}\0{level}".encode()) & 0x7FFFFFFF


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ starting centroids [k, d] among the rows of ``x`` [N, d] (N >= k):
    each step draws 2 + log k candidates by squared distance and keeps the one that lowers
    the potential most (plain k-means++ often starts two centroids in one cluster)."""
    n = x.shape[0]
    trials = 2 + int(np.log(k))
    xx = (x.astype(np.float64) ** 2).sum(1)

    def sq_dist(rows: np.ndarray) -> np.ndarray:  # [len(rows), N], no [., N, d] temporary
        c = x[rows].astype(np.float64)
        return np.maximum(xx[None, :] - 2.0 * (c @ x.T.astype(np.float64)) + xx[rows][:, None], 0)

    chosen = [int(rng.integers(n))]
    d2 = sq_dist(np.array(chosen))[0]
    for _ in range(1, k):
        total = d2.sum()
        # every point coinciding with a chosen one (total 0): any row will do
        cand = rng.integers(n, size=1) if total <= 0 else rng.choice(n, trials, p=d2 / total)
        dist = sq_dist(np.asarray(cand))  # [trials, N]
        pot = np.minimum(d2[None, :], dist).sum(1)
        best = int(np.argmin(pot))
        chosen.append(int(cand[best]))
        d2 = np.minimum(d2, dist[best])
    return np.ascontiguousarray(x[chosen], np.float32)


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The row of ``centroids`` [K, d] nearest to each row of ``x`` [N, d] (L2): [N] int64."""
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    _, rows = index.search(np.ascontiguousarray(x, np.float32), 1)
    return rows[:, 0].astype(np.int64)


@dataclass(frozen=True)
class SemanticIdQuantiser:
    """A fitted residual quantiser.

    Args:
        codebooks: [L, K, dim] float32, the centroids of each level.
        model_version: the encoder version whose vectors it was fitted on.
        config: the fit's config (levels, codebook, dim, ...).
        n_train: items the fit used.
    """

    codebooks: np.ndarray
    model_version: str
    config: SemanticIdConfig
    n_train: int

    @property
    def levels(self) -> int:
        return int(self.codebooks.shape[0])

    @property
    def codebook(self) -> int:
        return int(self.codebooks.shape[1])

    @property
    def dim(self) -> int:
        return int(self.codebooks.shape[2])

    def encode_codes(self, vectors: np.ndarray) -> np.ndarray:
        """Codes [N, L] int32 in [0, K) of item vectors [N, D] (D >= dim: the Matryoshka
        prefix of size ``dim`` is taken and renormalised, so full vectors and ``emb_{dim}``
        columns give the same codes). Zero rows (items whose vector was NaN) get codes too.
        """
        v = np.asarray(vectors, np.float32)
        if v.ndim != 2 or v.shape[1] < self.dim:
            raise ValueError(
                f"semantic ids: vectors of shape {v.shape}, expected [N, >= {self.dim}]"
            )
        residual = matryoshka_prefix(v, self.dim)
        codes = np.zeros((v.shape[0], self.levels), np.int32)
        if v.shape[0] == 0:
            return codes
        for level in range(self.levels):
            rows = _nearest(residual, self.codebooks[level])
            codes[:, level] = rows
            residual = residual - self.codebooks[level][rows]
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """The reconstruction [N, dim] of codes [N, L] (the sum of their centroids)."""
        c = np.asarray(codes, np.int64)
        return sum(
            (self.codebooks[level][c[:, level]] for level in range(self.levels)),
            np.zeros((c.shape[0], self.dim), np.float32),
        )

    def describe(self) -> dict[str, Any]:
        """What a manifest records of the quantiser."""
        return {
            "levels": self.levels,
            "codebook": self.codebook,
            "dim": self.dim,
            "model_version": self.model_version,
            "seed": self.config.seed,
            "n_train": self.n_train,
            "file": SEMANTIC_IDS_FILE,
        }

    def save(self, path: str | Path) -> Path:
        """Write the quantiser to ``path`` (an ``.npz``) atomically."""
        meta = {
            "format": FORMAT,
            "model_version": self.model_version,
            "config": self.config.model_dump(),
            "n_train": self.n_train,
        }
        buf = io.BytesIO()
        np.savez(buf, codebooks=self.codebooks.astype(np.float32), meta=np.array(json.dumps(meta)))
        return runtime.atomic_write_bytes(path, buf.getvalue())


def load_semantic_ids(path: str | Path) -> SemanticIdQuantiser:
    """The quantiser saved at ``path``: a ``semantic_ids.npz`` file, or the embedding
    snapshot folder holding one.

    Raises:
        FileNotFoundError: no quantiser there.
        DataError: not a quantiser file (naming it).
    """
    p = Path(path)
    if p.is_dir():
        p = p / SEMANTIC_IDS_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found (no semantic-ID quantiser)")
    try:
        with np.load(p, allow_pickle=False) as z:
            codebooks = np.asarray(z["codebooks"], np.float32)
            meta = json.loads(str(z["meta"]))
        if meta.get("format") != FORMAT or codebooks.ndim != 3:
            raise ValueError(f"format {meta.get('format')!r}, codebooks {codebooks.shape}")
        config = SemanticIdConfig.model_validate(meta["config"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"not a semantic-ID quantiser ({exc})", file=str(p)) from exc
    return SemanticIdQuantiser(codebooks, str(meta["model_version"]), config, int(meta["n_train"]))


def fit_semantic_ids(
    vectors: np.ndarray, model_version: str, config: SemanticIdConfig | None = None
) -> SemanticIdQuantiser:
    """Fit the residual quantiser on item vectors [N, D] (D >= ``config.dim``).

    Deterministic: the training sample, the k-means++ start and faiss's k-means are seeded
    from ``config.seed``, ``model_version`` and the level. With fewer distinct items than
    codewords, the spare codewords are never assigned.

    Raises:
        ValueError: no vectors, or vectors narrower than ``config.dim``.
    """
    config = config or SemanticIdConfig()
    v = np.asarray(vectors, np.float32)
    if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] < config.dim:
        raise ValueError(
            f"semantic ids: need item vectors [N > 0, >= {config.dim}], got {v.shape}"
        )
    x = matryoshka_prefix(v, config.dim)
    rng0 = np.random.default_rng(_level_seed(model_version, config.seed, -1))
    if x.shape[0] > config.max_train_points:
        x = x[np.sort(rng0.choice(x.shape[0], config.max_train_points, replace=False))]
    k = config.codebook
    codebooks = np.full((config.levels, k, config.dim), _FAR, np.float32)
    residual = x.copy()
    for level in range(config.levels):
        seed = _level_seed(model_version, config.seed, level)
        k_fit = min(k, residual.shape[0])
        start = _kmeans_pp(residual, k_fit, np.random.default_rng(seed))
        if k_fit > 1:
            km = faiss.Kmeans(
                config.dim,
                k_fit,
                niter=config.niter,
                seed=seed,
                verbose=False,
                # the sample is already bounded; faiss must not subsample it again
                max_points_per_centroid=max(256, -(-residual.shape[0] // k_fit)),
                min_points_per_centroid=1,
            )
            km.train(residual, init_centroids=start)
            centroids = np.asarray(km.centroids, np.float32)
        else:
            centroids = residual.mean(0, keepdims=True).astype(np.float32)
        codebooks[level, :k_fit] = centroids
        residual = residual - centroids[_nearest(residual, centroids)]
    return SemanticIdQuantiser(codebooks, model_version, config, int(x.shape[0]))
