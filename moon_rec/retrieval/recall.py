"""Intermediate metrics of an encoder (DESIGN section 6), with two same-run baselines.

- Image-based search recall@K (``ImageSearchRecall``): every evaluation image query (a user
  photo with ts >= train_end_ts) is embedded with ``encode_image``; all catalog items are
  embedded with ``encode_product`` (title + catalog photo); exact faiss search ranks the
  catalog by cosine; a hit when the photographed item is in the top K. K = 1, 10, 100, at
  every Matryoshka dim (renormalised prefixes).
- Text-query recall@10: held-out behaviours (ts >= train_end_ts) with a query text, the
  item clicked / carted / bought as the truth, the same product index. A world without
  search logs (MovieLens) gets known-item title search instead: each catalog item's title
  alone, a trailing "(year)" removed, is the query and that item the truth
  (``text_recall_queries`` says which: ``searches`` or ``titles``).
- Next-item recall@10 (``next_item_recall``; every world, MovieLens included, which has no
  query texts): for each user with behaviours on both sides of train_end_ts, the query is
  the L2-normalised mean product embedding of the user's last ``history`` (10) distinct
  train-period behaviour items (most recent last behaviour first); the catalog (cold items
  included) is ranked by cosine with it, leaving out every item the user had a
  train-period behaviour on; each distinct item of the user's test-period behaviours
  that is not among those is one target, a hit when it is in the top 10. The value is
  hits / targets over all users' targets (at most ``max_users`` users, a seeded sample).
  A behaviour is any logged engagement (click, cart, buy; MovieLens: a rating >= 4).
- Category linear probe: logistic regression from product embeddings to category, on a
  seeded 80/20 split of the catalog; test accuracy.
- Image-title alignment: mean cosine of a catalog photo with its own title minus that with
  another item's title (``image_title_alignment``).
Baselines in the same run: an untrained encoder of the same architecture, and a colour
histogram of the image (query photo vs catalog photo).

A text-only world (no catalog photos, such as MovieLens) has no image queries and nothing to
align: image-search recall and image-title alignment are reported as "n/a" (None in JSON,
with the same keys), products are encoded from their title and attributes, and the other
metrics are computed as usual.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from moon_rec.encoders import MoonEncoder, build_encoder, matryoshka
from moon_rec.encoders.inference import (
    embed_images,
    embed_products,
    embed_texts,
    resolve_checkpoint,
)
from moon_rec.retrieval.index import ExactIndex, normalize
from moon_rec.training.data import WorldData, load_world

KS: tuple[int, ...] = (1, 10, 100)


def recall_at_k(ranked_ids: np.ndarray, true_ids: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Fraction of queries whose true id is in the first K ranked ids.

    Args:
        ranked_ids: [Q, >= max(ks)] ids, best first.
        true_ids: [Q] the id each query looks for.

    Returns:
        {"recall@K": value} for every K.
    """
    ranked_ids = np.asarray(ranked_ids)
    true_ids = np.asarray(true_ids)
    if len(true_ids) == 0:
        return {f"recall@{k}": float("nan") for k in ks}
    hit = ranked_ids == true_ids[:, None]
    return {f"recall@{k}": float(hit[:, :k].any(1).mean()) for k in ks}


class ImageSearchRecall:
    """Image-based search recall over a catalog, per Matryoshka dim.

    Args:
        item_ids: [N] catalog ids; item_emb: [N, D] product embeddings.
        dims: the prefixes to report (each renormalised).
        ks: the cut-offs.
    """

    def __init__(self, item_ids: np.ndarray, item_emb: np.ndarray, dims: Sequence[int],
                 ks: Sequence[int] = KS) -> None:
        self.item_ids = np.asarray(item_ids, np.int64)
        self.item_emb = np.asarray(item_emb, np.float32)
        self.dims, self.ks = tuple(dims), tuple(ks)

    def __call__(self, query_emb: np.ndarray, query_item_ids: np.ndarray) -> dict[str, Any]:
        """{"recall@K" (full dim), ..., "by_dim": {dim: {"recall@K": ...}}}."""
        by_dim: dict[str, dict[str, float]] = {}
        for d in self.dims:
            index = ExactIndex(self.item_emb[:, :d], self.item_ids)
            _s, ranked = index.search(np.asarray(query_emb)[:, :d], max(self.ks))
            by_dim[str(d)] = recall_at_k(ranked, query_item_ids, self.ks)
        return {**by_dim[str(self.dims[-1])], "by_dim": by_dim}


# -- embedding the world ----------------------------------------------------------------


def color_histogram(images: torch.Tensor, bins: int = 8) -> np.ndarray:
    """uint8 images [N, 3, S, S] -> joint RGB histograms [N, bins^3], square-rooted and
    L2-normalised (so cosine = Bhattacharyya-like similarity)."""
    q = (images.long() * bins) // 256  # [N, 3, S, S] in 0..bins-1
    code = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    n = images.shape[0]
    hist = torch.zeros((n, bins ** 3), dtype=torch.float32)
    hist.scatter_add_(1, code.reshape(n, -1), torch.ones((n, code[0].numel())))
    h = hist.sqrt().numpy()
    return h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)


def category_probe(emb: np.ndarray, category: np.ndarray, seed: int = 0,
                   max_train: int = 4000) -> float:
    """Test accuracy of a logistic-regression probe emb -> category (seeded 80/20 split,
    standardised features, one BLAS thread: on a busy 2-core machine threaded BLAS made
    this the slowest part of the evaluation)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(category))
    n_test = max(1, len(perm) // 5)
    test, train = perm[:n_test], perm[n_test:][:max_train]
    if len(np.unique(category[train])) < 2:
        return float("nan")
    x = np.asarray(emb, np.float64)
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mu) / sd
    with threadpool_limits(1):
        clf = LogisticRegression(max_iter=100, tol=1e-3, C=1.0)
        clf.fit(x[train], category[train])
        return float((clf.predict(x[test]) == category[test]).mean())


def image_search_na(dims: Sequence[int], ks: Sequence[int] = KS) -> dict[str, Any]:
    """The image-search recall keys of ``ImageSearchRecall`` with every value "n/a" (None):
    a text-only world has no image queries."""
    na: dict[str, float | None] = {f"recall@{k}": None for k in ks}
    return {**na, "by_dim": {str(d): dict(na) for d in dims}}


def image_title_alignment(encoder: MoonEncoder, data: WorldData, *, max_items: int = 4000,
                          seed: int = 0, batch_size: int = 256) -> float | None:
    """Image-title alignment: mean cosine of each catalog photo with its own title minus the
    mean cosine with another item's title (a seeded derangement), over up to ``max_items``
    seeded catalog items. 0 for an encoder whose image and text towers do not agree, up to
    2 for perfectly aligned towers. Image and title are encoded separately
    (``encode_image`` / ``encode_text``), full dimension. None ("n/a") in a text-only world."""
    if data.images is None:
        return None
    rng = np.random.default_rng([seed, 7])
    n = int(data.n_items)
    rows = np.sort(rng.permutation(n)[:max_items]) if n > max_items else np.arange(n)
    if len(rows) < 2:
        return float("nan")
    img = embed_images(encoder, data.images[torch.from_numpy(rows)], batch_size)
    txt = embed_texts(encoder, [data.title[i] for i in rows.tolist()], batch_size)
    img /= np.maximum(np.linalg.norm(img, axis=1, keepdims=True), 1e-12)
    txt /= np.maximum(np.linalg.norm(txt, axis=1, keepdims=True), 1e-12)
    shift = np.roll(np.arange(len(rows)), int(rng.integers(1, len(rows))))
    matched = float((img * txt).sum(1).mean())
    other = float((img * txt[shift]).sum(1).mean())
    return matched - other


def heldout_text_pairs(data: WorldData) -> tuple[list[str], np.ndarray]:
    """(query texts, item ids) of behaviours after train_end_ts with a query text, unique."""
    seen: set[tuple[str, int]] = set()
    texts, items = [], []
    for i in np.flatnonzero(data.beh_us >= data.train_end_us).tolist():
        t = data.beh_text[i].strip()
        key = (t, int(data.beh_item[i]))
        if t and key not in seen:
            seen.add(key)
            texts.append(t)
            items.append(key[1])
    return texts, np.asarray(items, np.int64)


_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")


def title_queries(data: WorldData) -> tuple[list[str], np.ndarray]:
    """(query texts, item ids) of known-item title search: every item with a title, its
    title less a trailing "(year)" (``Toy Story (1995)`` -> ``Toy Story``)."""
    texts, items = [], []
    for title, item in zip(data.title, data.item_id.tolist(), strict=True):
        q = _YEAR_SUFFIX.sub("", str(title or "")).strip()
        if q:
            texts.append(q)
            items.append(int(item))
    return texts, np.asarray(items, np.int64)


@dataclass(frozen=True)
class NextItemQueries:
    """The next-item recall task of a world (see the module docstring).

    Args:
        history_rows: per user, the catalog rows of the query's history items.
        excluded_rows: per user, the catalog rows left out of the ranking (every item of
            the user's train-period behaviours).
        target_ids: per user, the item ids to find (test-period behaviour items not
            excluded); every user has at least one.
    """

    history_rows: list[np.ndarray]
    excluded_rows: list[np.ndarray]
    target_ids: list[np.ndarray]

    @property
    def n_targets(self) -> int:
        return int(sum(len(t) for t in self.target_ids))


def next_item_queries(data: WorldData, *, history: int = 10, max_users: int = 5000,
                      seed: int = 0) -> NextItemQueries:
    """The users, histories and targets of ``next_item_recall`` (module docstring)."""
    train = data.beh_us < data.train_end_us
    users = np.intersect1d(data.beh_user[train], data.beh_user[~train])
    if len(users) > max_users:
        rng = np.random.default_rng([seed, 23])
        users = np.sort(rng.choice(users, max_users, replace=False))
    keep = np.flatnonzero(np.isin(data.beh_user, users))
    order = keep[np.lexsort((data.beh_us[keep], data.beh_user[keep]))]
    rows = data.rows_of(data.beh_item[order]) if len(order) else np.zeros(0, np.int64)
    is_train = train[order]
    starts = np.flatnonzero(np.r_[True, data.beh_user[order][1:] != data.beh_user[order][:-1]])
    hist, excl, targets = [], [], []
    for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(order)], strict=True):
        u_rows, u_train = rows[a:b], is_train[a:b]
        past = u_rows[u_train]
        recent: list[int] = []  # distinct, the most recent last behaviour first
        for r in past[::-1].tolist():
            if r not in recent:
                recent.append(r)
                if len(recent) == history:
                    break
        seen = np.unique(past)
        new = np.setdiff1d(np.unique(u_rows[~u_train]), seen)
        if len(new) and recent:
            hist.append(np.asarray(recent, np.int64))
            excl.append(seen)
            targets.append(data.item_id[new])
    return NextItemQueries(hist, excl, targets)


def next_item_recall(task: NextItemQueries, item_ids: np.ndarray, item_emb: np.ndarray,
                     k: int = 10, batch_size: int = 1024) -> float | None:
    """Next-item recall@k (module docstring) of product embeddings ``item_emb`` [N, D]
    (row-aligned with ``item_ids`` [N], the world's catalog rows); None without targets."""
    if task.n_targets == 0:
        return None
    emb = normalize(np.asarray(item_emb, np.float32))
    index = ExactIndex(emb, item_ids)
    hits = 0
    n = len(item_ids)
    for s in range(0, len(task.target_ids), batch_size):
        sl = slice(s, s + batch_size)
        queries = np.stack([emb[h].mean(0) for h in task.history_rows[sl]])
        depth = min(n, k + max(len(e) for e in task.excluded_rows[sl]))
        _scores, ranked = index.search(queries, depth)
        for row, excluded, truth in zip(ranked, task.excluded_rows[sl], task.target_ids[sl],
                                        strict=True):
            left_out = set(item_ids[excluded].tolist())
            top = [i for i in row.tolist() if i >= 0 and i not in left_out][:k]
            hits += int(np.isin(truth, top).sum())
    return hits / task.n_targets


# -- evaluation ---------------------------------------------------------------------------


def evaluate_encoder(encoder: MoonEncoder, data: WorldData, *, batch_size: int = 256,
                     seed: int = 0, item_emb: np.ndarray | None = None) -> dict[str, Any]:
    """All intermediate metrics of one encoder on one world (see module docstring), plus
    ``image_title_align`` (see ``image_title_alignment``). ``item_emb``: the catalog's
    product embeddings when the caller already has them (row-aligned with ``data``)."""
    t0 = time.time()
    q = data.eval_query_mask
    if item_emb is None:
        item_emb = embed_products(encoder, data.product_titles, data.images, batch_size)
    result: dict[str, Any] = {"model_version": encoder.model_version}
    if data.text_only or not q.any():  # no photos, or no image queries (a shop's logs)
        result.update(image_search_na(encoder.dims))
    else:
        query_emb = embed_images(encoder, data.query_images[torch.from_numpy(q)], batch_size)
        result.update(ImageSearchRecall(data.item_id, item_emb, encoder.dims)(
            query_emb, data.query_item_id[q]))
    texts, truth = heldout_text_pairs(data)
    source = "searches"
    if not texts and data.text_only:
        texts, truth = title_queries(data)
        source = "titles"
    result["text_recall_queries"] = source if texts else None
    result["n_text_queries"] = len(texts)
    if texts:
        _s, ranked = ExactIndex(item_emb, data.item_id).search(embed_texts(encoder, texts), 10)
        result["text_recall@10"] = recall_at_k(ranked, truth, (10,))["recall@10"]
    else:
        result["text_recall@10"] = None
    result["next_item_recall@10"] = next_item_recall(next_item_queries(data, seed=seed),
                                                     data.item_id, item_emb)
    result["probe_acc"] = category_probe(
        np.asarray(matryoshka(torch.from_numpy(item_emb), encoder.dims[-1])), data.category_id, seed)
    result["image_title_align"] = image_title_alignment(encoder, data, seed=seed,
                                                        batch_size=batch_size)
    result["seconds"] = round(time.time() - t0, 2)
    return result


def evaluate_color_histogram(data: WorldData, *, bins: int = 8, seed: int = 0) -> dict[str, Any]:
    """The colour-histogram image baseline: photo histogram vs catalog-photo histogram
    (every metric "n/a" in a text-only world; image search "n/a" without image queries)."""
    t0 = time.time()
    if data.images is None:
        return {"model_version": f"color_histogram_{bins}", **image_search_na((bins ** 3,)),
                "text_recall@10": None, "next_item_recall@10": None, "probe_acc": None,
                "seconds": 0.0}
    q = data.eval_query_mask
    item_h = color_histogram(data.images, bins)
    d = bins ** 3
    result: dict[str, Any] = {"model_version": f"color_histogram_{bins}"}
    if q.any():
        query_h = color_histogram(data.query_images[torch.from_numpy(q)], bins)
        result.update(ImageSearchRecall(data.item_id, item_h, (d,))(query_h, data.query_item_id[q]))
    else:  # photos but no image queries (a real shop's log): image search n/a
        result.update(image_search_na((d,)))
    result["text_recall@10"] = None
    result["next_item_recall@10"] = next_item_recall(next_item_queries(data, seed=seed),
                                                     data.item_id, item_h)
    result["probe_acc"] = category_probe(item_h, data.category_id, seed)
    result["seconds"] = round(time.time() - t0, 2)
    return result


def evaluate_checkpoint(
    world: str | Path | WorldData, checkpoint: str | Path, *, baselines: bool = True,
    batch_size: int = 256,
) -> dict[str, Any]:
    """``moon eval recall``: the checkpoint's metrics plus, in the same run, an untrained
    encoder of the same architecture and the colour-histogram baseline under
    ``baselines``."""

    data = world if isinstance(world, WorldData) else load_world(world)
    encoder = MoonEncoder.from_pretrained(resolve_checkpoint(checkpoint))
    result = evaluate_encoder(encoder, data, batch_size=batch_size)
    result["n_items"] = int(data.n_items)
    result["n_image_queries"] = int(data.eval_query_mask.sum())
    result["n_next_item_targets"] = next_item_queries(data).n_targets
    result["world"] = str(data.root)
    if baselines:
        untrained: dict[str, Any] | None = None
        # the untrained baseline starts from the pretrained parts' source paths; a
        # checkpoint moved to another machine may not have them (then "n/a")
        if all(Path(p).exists() for p in encoder.config.sources):
            fresh = build_encoder(encoder.config, encoder.tokenizer)
            untrained = evaluate_encoder(fresh, data, batch_size=batch_size)
        result["baselines"] = {
            "untrained": untrained,
            "color_histogram": evaluate_color_histogram(data),
        }
    return result
