"""Implicit feedback to CTR impressions: seeded negative sampling among live items.

A log of positives only (purchases, likes, ratings kept as implicit feedback) has no
impressions, so there is no CTR task until negatives are drawn. The standard construction
(the one BARS uses for its Amazon and MovieLens CTR sets) pairs every positive with K
sampled items the user did not interact with, each one impression of the same request. Here
a negative of a positive (user u, item i, time t) is:

- an item *live* at t (launched at or before t: nothing is shown before it exists);
- never a positive of u (at t or at any other time in the log);
- not a repeat inside the request;
- drawn ``uniform``ly among those, by ``popularity`` (proportional to 1 + the item's
  number of positives) or among the items of i's category (``category``).

The draw is seeded (same log, K, strategy and seed: the same negatives), and the world
stores them: the test period's negatives are fixed, so every ranker scores the same set.
AUC on such a set measures how well a ranker tells a positive from a random (or popular, or
same-category) live item, not from what a real feed showed: it is comparable between
rankers on the same world, not with an AUC on logged impressions (uniform negatives are the
easiest; same-category the hardest).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["uniform", "popularity", "category"]
MAX_ROUNDS = 64  # redraws of a rejected candidate before the slot stays empty


class NegativeSampling(BaseModel):
    """``negatives:`` of a logs mapping: K negatives per positive.

    Args:
        k: negatives per positive (the request then shows k + 1 items).
        strategy: ``uniform`` | ``popularity`` | ``category`` (same category as the positive).
        seed: the draw's seed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(default=4, ge=1, le=1000)
    strategy: Strategy = "uniform"
    seed: int = 0


def sample_negatives(
    user: np.ndarray,
    item: np.ndarray,
    ts: np.ndarray,
    *,
    item_ids: np.ndarray,
    item_launch: np.ndarray,
    item_category: np.ndarray,
    spec: NegativeSampling,
) -> np.ndarray:
    """[N, k] int64 negative item ids for N positives (user [N], item [N], ts [N] us), -1
    where no item qualifies (the user has a positive of every live candidate).

    Args:
        item_ids: [M] the catalog's ids; ``item_launch`` [M] their launch times (us);
            ``item_category`` [M] their categories. Every positive's item is among them.
    """
    n, k = user.size, spec.k
    out = np.full((n, k), -1, np.int64)
    if n == 0:
        return out
    rng = np.random.default_rng(spec.seed)
    by_id = np.argsort(item_ids, kind="stable")
    sorted_ids = item_ids[by_id]
    m = item_ids.size
    pos_item = by_id[np.searchsorted(sorted_ids, item)]  # dense index of the positive's item
    _, user_idx = np.unique(user, return_inverse=True)
    positives = np.unique(user_idx.astype(np.int64) * m + pos_item)
    count = np.bincount(pos_item, minlength=m).astype(np.float64)

    def is_positive(rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
        keys = user_idx[rows].astype(np.int64) * m + cand
        at = np.minimum(np.searchsorted(positives, keys), positives.size - 1)
        return positives[at] == keys

    # the candidate pools: one for all items, or one per category; each in launch order
    if spec.strategy == "category":
        groups = [(np.flatnonzero(item_category[pos_item] == c), np.flatnonzero(item_category == c))
                  for c in np.unique(item_category[pos_item])]
    else:
        groups = [(np.arange(n), np.arange(m))]
    chosen = np.full((n, k), -1, np.int64)  # dense indices
    for rows, pool in groups:
        pool = pool[np.argsort(item_launch[pool], kind="stable")]
        launch = item_launch[pool]
        n_live = np.searchsorted(launch, ts[rows], side="right")
        weights = np.cumsum(count[pool] + 1.0) if spec.strategy == "popularity" else None
        for j in range(k):
            todo = np.flatnonzero(n_live > 0)
            for _ in range(MAX_ROUNDS):
                if todo.size == 0:
                    break
                live = n_live[todo]
                if weights is None:
                    at = np.minimum((rng.random(todo.size) * live).astype(np.int64), live - 1)
                else:
                    x = rng.random(todo.size) * weights[live - 1]
                    at = np.minimum(np.searchsorted(weights, x, side="right"), live - 1)
                cand = pool[at]
                r = rows[todo]
                bad = is_positive(r, cand)
                for jj in range(j):
                    bad |= chosen[r, jj] == cand
                good = ~bad
                chosen[r[good], j] = cand[good]
                todo = todo[bad]
    found = chosen >= 0
    out[found] = item_ids[chosen[found]]
    return out
