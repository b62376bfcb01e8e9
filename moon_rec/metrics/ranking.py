"""Ranking metrics of DESIGN section 6: AUC, GAUC (per user, impression-weighted), logloss,
and the gap closed between an ID-only baseline and the oracle.

All functions take numpy-compatible 1-D arrays and return ``None`` where the metric is
undefined (e.g. AUC on a subset with one class), so JSON reports stay valid.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

EPS = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of ``scores`` [N] for binary ``labels`` [N]; None with fewer than two classes.

    Example::

        auc(np.array([0, 1, 1]), np.array([0.1, 0.8, 0.4]))  # 1.0
    """
    y = np.asarray(labels).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    keep = np.isfinite(s)
    y, s = y[keep], s[keep]
    if y.size == 0 or y.min() == y.max():
        return None
    return float(roc_auc_score(y, s))


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float | None:
    """Group AUC: the AUC per group (user), averaged with weights = the group's number of
    impressions, over groups that have both classes; None when no group has.

    Args:
        labels, scores, groups: [N] arrays; ``groups`` holds the user ids.
    """
    y = np.asarray(labels).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(groups)
    order = np.argsort(g, kind="stable")
    y, s, g = y[order], s[order], g[order]
    bounds = np.flatnonzero(np.r_[True, g[1:] != g[:-1], True])
    total, weight = 0.0, 0
    for a, b in pairwise(bounds):
        value = auc(y[a:b], s[a:b])
        if value is not None:
            total += value * int(b - a)
            weight += int(b - a)
    return total / weight if weight else None


def logloss(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Mean binary cross-entropy of ``probabilities`` (clipped to [1e-7, 1 - 1e-7])."""
    y = np.asarray(labels).astype(np.int64)
    if y.size == 0:
        return None
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1 - EPS)
    return float(log_loss(y, p, labels=[0, 1]))


def gap_closed(value: float | None, baseline: float | None, oracle: float | None) -> float | None:
    """(value - baseline) / (oracle - baseline); None when undefined."""
    if value is None or baseline is None or oracle is None:
        return None
    den = oracle - baseline
    if abs(den) < 1e-12 or any(math.isnan(x) for x in (value, baseline, oracle)):
        return None
    return (value - baseline) / den
