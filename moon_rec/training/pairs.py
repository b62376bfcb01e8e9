"""Training pairs of MOON's pretraining and post-training, built from a world.

A pair is (query, positive item) with a query modality and a target modality:

    kind            query                                   target    source
    title_image     the item's title                        image     catalog (pretraining)
    attributes_image  the item's stated attributes           image     catalog: "color: navy;
                                                                      pattern: dots; fit: mini"
                                                                      -> its photo, so the
                                                                      image keeps the look in
                                                                      a readable form
    text_product    behaviour query text                    product   click/cart/buy
    text_image      behaviour query text                    image     click/cart/buy
    text_title      behaviour query text                    title     click/cart/buy
    photo_product   user photo (image_queries, train split) product   the item it shows
    photo_image     user photo                              image     the item it shows
    photo_click     user photo of an image-query request    product   the item then clicked
    aug_product     simulated user photo of the catalog one product   the same item
    aug_image       simulated user photo                    image     the same item
    item_item       product                                 product   next item of the session
    co_engaged      product                                 product   another item the same user
                                                                      engaged with, at most
                                                                      ``co_engaged_window``
                                                                      behaviours apart

(``product`` = title + image; in a text-only world, which has only the kinds without an
image or photo -- text_product, text_title, item_item, co_engaged -- its title and
attributes.) ``co_engaged`` is the behaviour signal about the look: what one user engages
with follows their taste, so two items of one user's history share more of their look than
two items of one category do (item2vec's signal, learned by the content tower). Only
what was known before ``train_end_ts`` is used: warm
items, behaviours and image queries before it. Stage 2 adds data processing: purchase pairs
only, short texts dropped, hardest-pair deduplication under the previous model and
category resampling to the online exposure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from moon_rec.training.data import WorldData

# kind -> (query modality, target modality)
KINDS: dict[str, tuple[str, str]] = {
    "title_image": ("title", "image"),
    "text_product": ("text", "product"),
    "text_image": ("text", "image"),
    "text_title": ("text", "title"),
    "photo_product": ("photo", "product"),
    "photo_image": ("photo", "image"),
    "photo_click": ("photo", "product"),
    "aug_product": ("aug", "product"),
    "aug_image": ("aug", "image"),
    "item_item": ("product", "product"),
    "co_engaged": ("product", "product"),
    "attributes_image": ("attributes", "image"),
}  # append new kinds: a saved trainer state keeps kinds by index
KIND_NAMES: tuple[str, ...] = tuple(KINDS)
TEXT_QUERIES = ("text", "title")
# Modalities that need a photo: a text-only world has no pairs of these kinds.
IMAGE_MODALITIES = ("image", "photo", "aug")
TEXT_ONLY_KINDS: tuple[str, ...] = tuple(
    k for k, (q, t) in KINDS.items() if q not in IMAGE_MODALITIES and t not in IMAGE_MODALITIES
)


@dataclass
class PairSet:
    """Row-aligned arrays of pairs.

    Args:
        kind: [P] int index into KIND_NAMES.
        query_ref: [P] what the query is: a behaviour row (text), an image-query row
            (photo) or a catalog row (title / aug / product).
        target_row: [P] catalog row of the positive item.
    """

    kind: np.ndarray
    query_ref: np.ndarray
    target_row: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)

    def subset(self, idx: np.ndarray) -> PairSet:
        return PairSet(self.kind[idx], self.query_ref[idx], self.target_row[idx])

    @staticmethod
    def concat(parts: list[PairSet]) -> PairSet:
        parts = [p for p in parts if len(p)] or [PairSet.empty()]
        return PairSet(np.concatenate([p.kind for p in parts]),
                       np.concatenate([p.query_ref for p in parts]),
                       np.concatenate([p.target_row for p in parts]))

    @staticmethod
    def empty() -> PairSet:
        z = np.zeros(0, np.int64)
        return PairSet(z.copy(), z.copy(), z.copy())

    def counts(self) -> dict[str, int]:
        ks, cs = np.unique(self.kind, return_counts=True)
        return {KIND_NAMES[int(k)]: int(c) for k, c in zip(ks, cs, strict=True)}


def _make(kind: str, query_ref: np.ndarray, target_row: np.ndarray) -> PairSet:
    k = np.full(len(query_ref), KIND_NAMES.index(kind), np.int64)
    return PairSet(k, np.asarray(query_ref, np.int64), np.asarray(target_row, np.int64))


def _train_behaviours(w: WorldData, actions: set[str] | None) -> np.ndarray:
    keep = w.beh_us < w.train_end_us
    if actions is not None:
        keep &= np.isin(w.beh_action, list(actions))
    return np.flatnonzero(keep)


def session_next_items(w: WorldData, rows: np.ndarray, gap_s: float = 1800.0) -> tuple[np.ndarray, np.ndarray]:
    """(item row a, item row b): b followed a in one user's session (same user, at most
    ``gap_s`` later, a different item), among behaviour rows ``rows``."""
    if len(rows) < 2:
        z = np.zeros(0, np.int64)
        return z, z
    order = rows[np.lexsort((w.beh_us[rows], w.beh_user[rows]))]
    u, t, it = w.beh_user[order], w.beh_us[order], w.beh_item[order]
    ok = (u[1:] == u[:-1]) & (t[1:] - t[:-1] <= gap_s * 1e6) & (it[1:] != it[:-1])
    a, b = it[:-1][ok], it[1:][ok]
    return w.rows_of(a), w.rows_of(b)


def co_engaged_items(w: WorldData, rows: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(item row a, item row b): one user engaged with a and then, at most ``window``
    behaviours later (any time apart), with a different item b, among behaviour rows
    ``rows``. Repeated (a, b) pairs are kept once."""
    if window < 1:
        raise ValueError(f"co_engaged_window must be >= 1 (got {window})")
    order = rows[np.lexsort((w.beh_us[rows], w.beh_user[rows]))]
    u, it = w.beh_user[order], w.beh_item[order]
    a_parts, b_parts = [], []
    for lag in range(1, min(window, max(len(order) - 1, 0)) + 1):
        ok = (u[lag:] == u[:-lag]) & (it[lag:] != it[:-lag])
        a_parts.append(it[:-lag][ok])
        b_parts.append(it[lag:][ok])
    if not a_parts:
        z = np.zeros(0, np.int64)
        return z, z
    ab = np.unique(np.stack([np.concatenate(a_parts), np.concatenate(b_parts)], 1), axis=0)
    return w.rows_of(ab[:, 0]), w.rows_of(ab[:, 1])


def build_pairs(
    w: WorldData,
    kinds: Mapping[str, float],
    *,
    actions: set[str] | None = None,
    items_bought_only: bool = False,
    session_gap_s: float = 1800.0,
    co_engaged_window: int = 5,
) -> PairSet:
    """All pairs of the kinds with a positive ratio in ``kinds`` (see module docstring).

    Args:
        w: the world.
        kinds: kind -> mixing ratio (kinds with ratio 0 are skipped; the ratio itself is
            used by the batch sampler).
        actions: behaviours kept (None: click, cart and buy).
        items_bought_only: keep catalog/photo pairs only for items bought before the end of
            training (stage 2's "purchase pairs only").
        co_engaged_window: how many behaviours apart a ``co_engaged`` pair may be.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown pair kinds {sorted(unknown)} (known: {', '.join(KINDS)})")
    warm = np.flatnonzero(w.warm_item_mask)
    beh = _train_behaviours(w, actions)
    if items_bought_only:
        bought = np.unique(w.beh_item[_train_behaviours(w, {"buy"})])
        warm = np.intersect1d(warm, w.rows_of(bought))
    text_rows = np.array([r for r in beh if w.beh_text[r].strip()], np.int64)
    photo_beh = beh[w.beh_image_query[beh] >= 0]
    train_q = np.flatnonzero(~w.eval_query_mask)
    q_item_rows = w.rows_of(w.query_item_id[train_q]) if len(train_q) else np.zeros(0, np.int64)
    if items_bought_only:
        keep = np.isin(q_item_rows, warm)
        train_q, q_item_rows = train_q[keep], q_item_rows[keep]
    parts: list[PairSet] = []
    for kind, ratio in kinds.items():
        if ratio <= 0 or (w.text_only and kind not in TEXT_ONLY_KINDS):
            continue
        if kind in ("title_image", "aug_product", "aug_image"):
            parts.append(_make(kind, warm, warm))
        elif kind == "attributes_image":
            stated = warm[np.array([bool(w.attributes[r].strip()) for r in warm], bool)]
            parts.append(_make(kind, stated, stated))
        elif kind in ("text_product", "text_image", "text_title"):
            if len(text_rows):
                parts.append(_make(kind, text_rows, w.rows_of(w.beh_item[text_rows])))
        elif kind in ("photo_product", "photo_image"):
            parts.append(_make(kind, train_q, q_item_rows))
        elif kind == "photo_click":
            qids = w.beh_image_query[photo_beh]
            known = np.isin(qids, w.query_id[train_q])
            if known.any():
                parts.append(_make(kind, w.query_rows(qids[known]),
                                   w.rows_of(w.beh_item[photo_beh[known]])))
        elif kind == "item_item":
            a, b = session_next_items(w, beh, session_gap_s)
            parts.append(_make(kind, a, b))
        elif kind == "co_engaged":
            a, b = co_engaged_items(w, beh, co_engaged_window)
            parts.append(_make(kind, a, b))
    return PairSet.concat(parts)


# -- stage 2 data processing ------------------------------------------------------------


def drop_short_texts(w: WorldData, pairs: PairSet, min_tokens: int) -> PairSet:
    """Drop text-query pairs whose query has fewer than ``min_tokens`` words."""
    if min_tokens <= 1:
        return pairs
    text_kinds = [KIND_NAMES.index(k) for k, (q, _t) in KINDS.items() if q == "text"]
    keep = np.ones(len(pairs), bool)
    for i in np.flatnonzero(np.isin(pairs.kind, text_kinds)):
        keep[i] = len(w.beh_text[int(pairs.query_ref[i])].split()) >= min_tokens
    return pairs.subset(np.flatnonzero(keep))


def dedup_hardest(pairs: PairSet, similarity: np.ndarray, keep: int = 1) -> PairSet:
    """Per (kind, target item), keep the ``keep`` pairs with the lowest query-target
    similarity under the previous model (the hardest positives).

    Args:
        similarity: [P] cosine of each pair's query and target under the previous model.
    """
    if len(pairs) == 0:
        return pairs
    order = np.lexsort((similarity, pairs.target_row, pairs.kind))
    k, t = pairs.kind[order], pairs.target_row[order]
    new_group = np.ones(len(order), bool)
    new_group[1:] = (k[1:] != k[:-1]) | (t[1:] != t[:-1])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(order)), 0))
    rank = np.arange(len(order)) - group_start
    return pairs.subset(np.sort(order[rank < keep]))


def resample_categories(
    w: WorldData, pairs: PairSet, n: int, rng: np.random.Generator
) -> PairSet:
    """Draw ``n`` pairs (with replacement) so that the targets' category distribution
    matches the online exposure (impressions per category); uniform over categories when
    the world has no impressions."""
    if len(pairs) == 0:
        return pairs
    cats = w.category_id[pairs.target_row]
    uniq, inv, counts = np.unique(cats, return_inverse=True, return_counts=True)
    want = np.array([w.exposure.get(int(c), 0.0) for c in uniq], np.float64)
    if want.sum() <= 0:
        want = np.ones(len(uniq))
    want = want / want.sum()
    weight = want[inv] / counts[inv]
    weight = weight / weight.sum()
    return pairs.subset(rng.choice(len(pairs), size=n, replace=True, p=weight))


def sample_batch(
    pairs: PairSet, ratios: Mapping[str, float], batch_size: int, rng: np.random.Generator,
    *, groups: np.ndarray | None = None, n_groups: int = 0,
) -> np.ndarray:
    """Indices of one batch: kinds drawn by the mixing ratios (renormalised over the kinds
    present), pairs uniformly within a kind, no repeated pair in a batch when avoidable.

    Args:
        groups / n_groups: with ``groups`` [P] (e.g. the target's category) and
            ``n_groups`` > 0, the batch is drawn from ``n_groups`` groups only (picked in
            proportion to their pairs), so that the in-batch negatives are hard (look-alike
            items of the same category) at no extra encoding cost.
    """
    present = {KIND_NAMES[k] for k in np.unique(pairs.kind).tolist()}
    names = [k for k, r in ratios.items() if r > 0 and k in present]
    if not names:
        raise ValueError("no training pairs for the configured kinds")
    p = np.array([ratios[k] for k in names], np.float64)
    counts = rng.multinomial(batch_size, p / p.sum())
    chosen: np.ndarray | None = None
    if groups is not None and n_groups > 0:
        uniq, gc = np.unique(groups, return_counts=True)
        if len(uniq) > n_groups:
            chosen = rng.choice(uniq, size=n_groups, replace=False, p=gc / gc.sum())
    out = []
    for name, c in zip(names, counts, strict=True):
        if c == 0:
            continue
        pool = np.flatnonzero(pairs.kind == KIND_NAMES.index(name))
        if chosen is not None and groups is not None:
            sub = pool[np.isin(groups[pool], chosen)]
            pool = sub if len(sub) else pool
        out.append(rng.choice(pool, size=c, replace=c > len(pool)))
    return np.concatenate(out)
