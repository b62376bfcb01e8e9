"""Intermediate metrics of an encoder (DESIGN section 6), with two same-run baselines.

- Image-based search recall@K (``ImageSearchRecall``): every evaluation image query (a user
  photo with ts >= train_end_ts) is embedded with ``encode_image``; all catalog items are
  embedded with ``encode_product`` (title + catalog photo); exact faiss search ranks the
  catalog by cosine; a hit when the photographed item is in the top K. K = 1, 10, 100, at
  every Matryoshka dim (renormalised prefixes).
- Text-query recall@10: held-out behaviours (ts >= train_end_ts) with a query text, the
  item clicked / carted / bought as the truth, the same product index.
- Category linear probe: logistic regression from product embeddings to category, on a
  seeded 80/20 split of the catalog; test accuracy.
- Image-title alignment: mean cosine of a catalog photo with its own title minus that with
  another item's title (``image_title_alignment``).
Baselines in the same run: an untrained encoder of the same architecture, and a colour
histogram of the image (query photo vs catalog photo).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from moon_rec.encoders import MoonEncoder, build_encoder, matryoshka
from moon_rec.retrieval.index import ExactIndex
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


@torch.no_grad()
def embed_products(encoder: MoonEncoder, titles: Sequence[str], images: torch.Tensor,
                   batch_size: int = 256) -> np.ndarray:
    """Products (titles, uint8 images [N, 3, S, S]) -> float32 [N, D]."""
    encoder.eval()
    out = [encoder.encode_product(list(titles[i:i + batch_size]),
                                  images[i:i + batch_size].float() / 255.0).cpu().numpy()
           for i in range(0, len(titles), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, encoder.embed_dim), np.float32)


@torch.no_grad()
def embed_images(encoder: MoonEncoder, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """uint8 images [N, 3, S, S] -> float32 [N, D]."""
    encoder.eval()
    out = [encoder.encode_image(images[i:i + batch_size].float() / 255.0).cpu().numpy()
           for i in range(0, images.shape[0], batch_size)]
    return np.concatenate(out) if out else np.zeros((0, encoder.embed_dim), np.float32)


@torch.no_grad()
def embed_texts(encoder: MoonEncoder, texts: Sequence[str], batch_size: int = 512) -> np.ndarray:
    encoder.eval()
    out = [encoder.encode_text(list(texts[i:i + batch_size])).cpu().numpy()
           for i in range(0, len(texts), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, encoder.embed_dim), np.float32)


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


def image_title_alignment(encoder: MoonEncoder, data: WorldData, *, max_items: int = 4000,
                          seed: int = 0, batch_size: int = 256) -> float:
    """Image-title alignment: mean cosine of each catalog photo with its own title minus the
    mean cosine with another item's title (a seeded derangement), over up to ``max_items``
    seeded catalog items. 0 for an encoder whose image and text towers do not agree, up to
    2 for perfectly aligned towers. Image and title are encoded separately
    (``encode_image`` / ``encode_text``), full dimension."""
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


# -- evaluation ---------------------------------------------------------------------------


def evaluate_encoder(encoder: MoonEncoder, data: WorldData, *, batch_size: int = 256,
                     seed: int = 0, item_emb: np.ndarray | None = None) -> dict[str, Any]:
    """All intermediate metrics of one encoder on one world (see module docstring), plus
    ``image_title_align`` (see ``image_title_alignment``). ``item_emb``: the catalog's
    product embeddings when the caller already has them (row-aligned with ``data``)."""
    t0 = time.time()
    q = data.eval_query_mask
    if item_emb is None:
        item_emb = embed_products(encoder, data.title, data.images, batch_size)
    query_emb = embed_images(encoder, data.query_images[torch.from_numpy(q)], batch_size)
    result: dict[str, Any] = {"model_version": encoder.model_version}
    result.update(ImageSearchRecall(data.item_id, item_emb, encoder.dims)(
        query_emb, data.query_item_id[q]))
    texts, truth = heldout_text_pairs(data)
    if texts:
        _s, ranked = ExactIndex(item_emb, data.item_id).search(embed_texts(encoder, texts), 10)
        result["text_recall@10"] = recall_at_k(ranked, truth, (10,))["recall@10"]
    else:
        result["text_recall@10"] = None
    result["probe_acc"] = category_probe(
        np.asarray(matryoshka(torch.from_numpy(item_emb), encoder.dims[-1])), data.category_id, seed)
    result["image_title_align"] = image_title_alignment(encoder, data, seed=seed,
                                                        batch_size=batch_size)
    result["seconds"] = round(time.time() - t0, 2)
    return result


def evaluate_color_histogram(data: WorldData, *, bins: int = 8, seed: int = 0) -> dict[str, Any]:
    """The colour-histogram image baseline: photo histogram vs catalog-photo histogram."""
    t0 = time.time()
    q = data.eval_query_mask
    item_h = color_histogram(data.images, bins)
    query_h = color_histogram(data.query_images[torch.from_numpy(q)], bins)
    d = bins ** 3
    result: dict[str, Any] = {"model_version": f"color_histogram_{bins}"}
    result.update(ImageSearchRecall(data.item_id, item_h, (d,))(query_h, data.query_item_id[q]))
    result["text_recall@10"] = None
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
    from moon_rec.training.trainer import resolve_checkpoint

    data = world if isinstance(world, WorldData) else load_world(world)
    encoder = MoonEncoder.from_pretrained(resolve_checkpoint(checkpoint))
    result = evaluate_encoder(encoder, data, batch_size=batch_size)
    result["n_items"] = int(data.n_items)
    result["n_image_queries"] = int(data.eval_query_mask.sum())
    result["n_text_queries"] = len(heldout_text_pairs(data)[0])
    result["world"] = str(data.root)
    if baselines:
        untrained = build_encoder(encoder.config, encoder.tokenizer)
        result["baselines"] = {
            "untrained": evaluate_encoder(untrained, data, batch_size=batch_size),
            "color_histogram": evaluate_color_histogram(data),
        }
    return result
