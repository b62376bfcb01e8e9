"""MOON's contrastive objectives: InfoNCE with in-batch (and extra) negatives, its circle-loss
variant, and the Matryoshka wrapper that trains every prefix to work alone.

Conventions: ``query`` [B, d] and ``keys`` [B, d] are row-aligned positive pairs (row i of
``keys`` is the positive of query i); ``extra`` [M, d] are additional negatives (hard
negatives, a queue of past item embeddings, other ranks' keys). ``same`` [B, B + M] is True
where a candidate is the *same product* as query i's positive (the same item, or a variant
of the same SPU) and must therefore not be treated as a negative; the diagonal is the
positive itself. All embeddings are expected L2-normalised (the Matryoshka wrapper
renormalises each prefix).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

ContrastiveLoss = Callable[..., torch.Tensor]


def _candidates(keys: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
    return keys if extra is None or extra.numel() == 0 else torch.cat([keys, extra], 0)


def _negative_mask(b: int, n: int, same: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """[B, N] True where candidate j is a valid negative of query i."""
    valid = torch.ones((b, n), dtype=torch.bool, device=device)
    if same is not None:
        valid &= ~same.to(device)
    idx = torch.arange(b, device=device)
    valid[idx, idx] = False  # the positive itself
    return valid


def info_nce(
    query: torch.Tensor,
    keys: torch.Tensor,
    *,
    temperature: float | torch.Tensor = 0.05,
    extra: torch.Tensor | None = None,
    same: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE: -log softmax of the positive among the positive and the valid negatives.

    Args:
        query: [B, d]; keys: [B, d] (row i is query i's positive).
        temperature: tau of exp(cos / tau) (a float, or a 0-dim tensor when learned).
        extra: [M, d] extra negatives shared by every query.
        same: [B, B + M] bool, True for candidates that are the same product as the
            positive (excluded from the negatives; the diagonal is handled already).

    Returns:
        the mean loss over queries (scalar).
    """
    cand = _candidates(keys, extra)
    b, n = query.shape[0], cand.shape[0]
    logits = query @ cand.T / temperature
    valid = _negative_mask(b, n, same, logits.device)
    target = torch.arange(b, device=logits.device)
    valid[target, target] = True  # keep the positive in the softmax
    logits = logits.masked_fill(~valid, float("-inf"))
    return F.cross_entropy(logits, target)


def circle_loss(
    query: torch.Tensor,
    keys: torch.Tensor,
    *,
    margin: float = 0.25,
    gamma: float = 32.0,
    extra: torch.Tensor | None = None,
    same: torch.Tensor | None = None,
) -> torch.Tensor:
    """Circle loss (Sun et al., CVPR 2020) with one positive per query.

    For query i with positive similarity s_p and negative similarities s_n:
        L_i = softplus( logsumexp_n( gamma * a_n * (s_n - m) ) - gamma * a_p * (s_p - (1 - m)) )
    with the self-paced weights a_p = relu(1 + m - s_p), a_n = relu(s_n + m) (no gradient).

    Args: as ``info_nce``; ``margin`` m and scale ``gamma``.

    Returns:
        the mean loss over queries (scalar).
    """
    cand = _candidates(keys, extra)
    b, n = query.shape[0], cand.shape[0]
    sim = query @ cand.T
    idx = torch.arange(b, device=sim.device)
    sp = sim[idx, idx]
    valid = _negative_mask(b, n, same, sim.device)
    ap = torch.clamp_min(1 + margin - sp.detach(), 0.0)
    an = torch.clamp_min(sim.detach() + margin, 0.0)
    logit_p = -gamma * ap * (sp - (1 - margin))
    logit_n = (gamma * an * (sim - margin)).masked_fill(~valid, float("-inf"))
    lse_n = torch.logsumexp(logit_n, dim=1)
    return F.softplus(lse_n + logit_p).mean()


def matryoshka_loss(
    query: torch.Tensor,
    keys: torch.Tensor,
    dims: Sequence[int],
    loss: ContrastiveLoss = info_nce,
    *,
    weights: Sequence[float] | None = None,
    extra: torch.Tensor | None = None,
    same: torch.Tensor | None = None,
    **kwargs: float | torch.Tensor,
) -> torch.Tensor:
    """Sum over Matryoshka prefixes of ``loss`` on the renormalised prefixes.

    Args:
        query / keys / extra: full-dim embeddings [*, D].
        dims: the prefixes, e.g. (32, 64, 128, 256).
        loss: ``info_nce`` or ``circle_loss``.
        weights: per-prefix weights (default 1 each).

    Returns:
        sum_k w_k * loss(query[:, :d_k], keys[:, :d_k], ...) (scalar).
    """
    weights = list(weights) if weights is not None else [1.0] * len(dims)
    if len(weights) != len(dims):
        raise ValueError(f"{len(weights)} weights for {len(dims)} dims")
    total = query.new_zeros(())
    for d, w in zip(dims, weights, strict=True):
        q = F.normalize(query[:, :d], dim=-1)
        k = F.normalize(keys[:, :d], dim=-1)
        e = F.normalize(extra[:, :d], dim=-1) if extra is not None and extra.numel() else None
        total = total + w * loss(q, k, extra=e, same=same, **kwargs)
    return total


LOSSES: dict[str, ContrastiveLoss] = {"infonce": info_nce, "circle": circle_loss}
