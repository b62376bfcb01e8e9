"""The look head: a small MLP on the frozen MOON vectors, post-trained on what users engage
with, whose output is the content the behaviour module compares.

Why: the MOON encoder is trained to find items (image search, query -> product), and its
vectors carry the look in a form a ranker's linear taste term reads poorly (on the small
world the style probe's linear R^2 is 0.37 from ``emb_64`` while colour, pattern and shape
are all there for a non-linear reader). The head learns, from the training set's clicks,
which parts of the vector predict what a user engages with next: a user-history -> next-item
contrastive objective (MOON's post-training signal, users' behaviour, applied to a head on
top of the frozen vectors), so items a user would click next come out close to the items
the user engaged with before. It is a function of the content vector only, so a new item
(no behaviour) gets its look vector from its MOON vector, in training and at serving alike.

Objective, per clicked train impression with a non-empty history h_1..h_n (most recent
``history`` behaviours) and target t: u = normalize(sum_b z(h_b)), z(.) = normalize(MLP(.)),
and InfoNCE of u against z(t) over the batch's other targets plus ``negatives`` random
items of t's category (so the head must tell looks apart within a category, not only
categories), at temperature ``temperature``. Every step embeds the whole catalog once
(cheaper than the ~27 rows per pair a per-row lookup would need).

Example::

    head = LookHead(256, LookHeadConfig(dim=64))
    stats = pretrain_look_head(head, vectors, pairs, item_category, LookHeadConfig(), seed=0)
    look = head(vectors)   # [N, 64], unit norm (rows of zeros stay zeros)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from moon_rec.data.embeddings import MoonEmbeddings
from moon_rec.ranking.config import LookHeadConfig


class LookHead(nn.Module):
    """content [..., C] -> look [..., dim], L2-normalised; all-zero rows (items without a
    MOON vector) map to zeros.

    Args:
        content_dim: C.
        config: dim, hidden.
    """

    def __init__(self, content_dim: int, config: LookHeadConfig) -> None:
        super().__init__()
        self.dim = config.dim
        self.net = nn.Sequential(
            nn.Linear(content_dim, config.hidden), nn.GELU(), nn.Linear(config.hidden, config.dim)
        )

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        known = (content.abs().sum(-1, keepdim=True) > 0).to(content.dtype)
        return F.normalize(self.net(content), dim=-1) * known


@dataclass(frozen=True)
class BehaviourPairs:
    """History -> next-item pairs, as rows of the catalog vector matrix.

    Args:
        history: [P, H] catalog rows of the most recent behaviours (-1: padding).
        target: [P] catalog row of the engaged item.
    """

    history: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return int(self.target.shape[0])


def behaviour_pairs(
    embeddings: MoonEmbeddings,
    target_item: np.ndarray,
    behaviour_items: np.ndarray,
    clicked: np.ndarray,
    train: np.ndarray,
    history: int,
) -> BehaviourPairs:
    """The pairs of a training set's clicked train rows whose target and at least one
    behaviour have a MOON vector.

    Args:
        embeddings: the catalog's MOON vectors (pairs hold rows of them).
        target_item: [R] each row's target item id; behaviour_items [R, L] (most recent first,
            -1 padding); clicked [R] labels; train [R] bool, the rows that may be used.
        history: behaviours kept per pair (the most recent).
    """
    keep = np.flatnonzero(train & (clicked > 0))
    target = embeddings.item_rows(target_item[keep])
    hist = embeddings.item_rows(behaviour_items[keep, :history])
    use = (target >= 0) & (hist >= 0).any(1)
    return BehaviourPairs(hist[use].astype(np.int64), target[use].astype(np.int64))


def pretrain_look_head(
    head: LookHead,
    vectors: torch.Tensor,
    pairs: BehaviourPairs,
    item_category: np.ndarray,
    config: LookHeadConfig,
    seed: int,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``head`` on ``pairs`` (rows of ``vectors`` [N, C], the catalog's MOON vectors;
    ``item_category`` [N] each row's category, -1 unknown) and return what the run did.

    Deterministic for a seed. With no pairs the head keeps its initial weights."""
    started = time.perf_counter()
    stats: dict[str, Any] = {"pairs": len(pairs), "epochs": config.epochs}
    if len(pairs) == 0:
        return {**stats, "first_loss": None, "last_loss": None, "seconds": 0.0}
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for p in head.parameters():  # a seeded start, independent of the ranker's RNG use
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)
    log_tau = torch.tensor(float(np.log(config.temperature)))
    opt = torch.optim.Adam(head.parameters(), lr=config.lr)
    # same-category negatives: for each category, the rows of its items
    cats = np.asarray(item_category, np.int64)
    order = np.argsort(cats, kind="stable")
    uniq, start, count = np.unique(cats[order], return_index=True, return_counts=True)
    hist = torch.from_numpy(pairs.history)
    target = torch.from_numpy(pairs.target)
    tgt_cat = cats[pairs.target]
    slot = np.searchsorted(uniq, tgt_cat)
    n = len(pairs)
    batch = min(config.batch_size, n)
    steps = -(-n // batch)
    losses: list[float] = []
    head.train()
    bar = tqdm(total=config.epochs * steps, disable=not progress, desc="look head")
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=gen)
        epoch_loss = 0.0
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            z = head(vectors)  # [N, d], the whole catalog once per step
            h = hist[idx]
            zh = z[h.clamp(min=0)] * (h >= 0).unsqueeze(-1).to(z.dtype)
            u = F.normalize(zh.sum(1), dim=-1)
            logits = u @ z[target[idx]].T  # [b, b]: the batch's other targets
            if config.negatives > 0:
                i = idx.numpy()
                offs = rng.integers(0, np.iinfo(np.int64).max, (len(i), config.negatives))
                neg = order[start[slot[i], None] + offs % count[slot[i], None]]
                zn = z[torch.from_numpy(neg)]  # [b, K, d]
                logits = torch.cat([logits, torch.einsum("bd,bkd->bk", u, zn)], dim=1)
            loss = F.cross_entropy(logits / log_tau.exp(), torch.arange(len(idx)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            epoch_loss += float(loss.detach()) * len(idx)
            bar.update(1)
        losses.append(epoch_loss / n)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    head.eval()
    return {**stats, "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4),
            "seconds": round(time.perf_counter() - started, 1)}
