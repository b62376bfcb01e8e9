"""Evaluating a trained ranker on the test period of its training set.

``evaluate_ranker`` returns (and ``moon ranker eval --json`` prints) the keys ``auc``,
``gauc``, ``logloss``, ``oracle_auc``, ``auc_cold``, ``auc_warm``, ``auc_look_driven``,
``auc_other``, ``model_version``, ``n_test`` (plus ``oracle_auc_cold``,
``oracle_auc_warm``, ``oracle_auc_look_driven`` and ``oracle_auc_other`` for gap-closed
tables). A metric that is undefined on the data
(one class only, no oracle) is ``null``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moon_rec.data.embeddings import MoonEmbeddings, load_moon_embeddings
from moon_rec.data.errors import DataError
from moon_rec.metrics.ranking import auc, gauc, logloss
from moon_rec.ranking.config import RankerConfig
from moon_rec.ranking.data import TrainingSet, load_training_set
from moon_rec.ranking.item_tables import FrozenContentTable, SemanticIdTable
from moon_rec.ranking.model import ContentLookup, MoonRanker, SemanticIdLookup
from moon_rec.ranking.sparse import TableSizes
from moon_rec.ranking.train import META, WEIGHTS


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / META
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (is {model_dir} a ranker model directory?)")
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


def load_ranker(
    model_dir: str | Path,
    device: str = "cpu",
    *,
    content: ContentLookup | None = None,
    semantic_ids: SemanticIdLookup | None = None,
) -> tuple[MoonRanker, dict[str, Any]]:
    """The trained, unsharded ranker of ``model_dir`` in eval mode, and its meta dict.

    Args:
        content: the ranker's content lookup (an ``nn.Module``, e.g. a serving-side center
            of the same model_version); default: the content table saved with the weights
            (a ``FrozenContentTable``, unsharded: the same vectors the sharded training
            table held). Ignored by an ``ids`` ranker.
        semantic_ids: the item -> code lookup (an ``nn.Module``, e.g. over serving's
            center, which also knows items added since training); default: the codes
            saved with the weights. Ignored by a ranker without semantic IDs.
    """
    meta = read_meta(model_dir)
    weights = Path(model_dir) / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found (training did not finish?)")
    config = RankerConfig.from_dict(meta["config"])
    given = content is not None and config.uses_moon
    if given and content is not None and content.dim != config.moon_dim:
        raise ValueError(
            f"{model_dir}: the ranker reads {config.moon_dim}-dim MOON content, the given "
            f"content lookup has {content.dim}"
        )
    if config.uses_moon and content is None:
        n = int(meta["content_rows"])
        content = FrozenContentTable(
            torch.zeros(n, dtype=torch.long), torch.zeros(n, config.moon_dim)
        )
    given_sid = semantic_ids is not None and config.semantic_ids is not None
    if config.semantic_ids is not None and semantic_ids is None:
        n = int(meta.get("semantic_id_rows", 0))
        semantic_ids = SemanticIdTable(
            torch.zeros(n, dtype=torch.long),
            torch.zeros(n, config.semantic_ids.levels, dtype=torch.int32),
        )
    model = MoonRanker(config, TableSizes(**meta["tables"]), content, semantic_ids)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    # a given lookup replaces the one saved with the weights
    for prefix, replaced in (("content_arch.", given), ("semantic_id_table.", given_sid)):
        if replaced:
            own = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
            state = {k: v for k, v in state.items() if not k.startswith(prefix)} | own
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # written by another version of the architecture
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise ValueError(
            f"{weights}: does not fit this version of the ranker ({first[0].strip()}); retrain it"
        ) from exc
    return model.to(device).eval(), meta


@torch.no_grad()
def predict(
    model: MoonRanker,
    data: TrainingSet,
    rows: np.ndarray,
    query_vectors: np.ndarray | None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Click probabilities [len(rows)] of ``rows`` of ``data``."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(rows), batch_size):
        batch = data.batch(rows[start : start + batch_size], query_vectors).to(device)
        out.append(torch.sigmoid(model(batch)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def oracle_probabilities(
    world: str | Path, request_id: np.ndarray, item_id: np.ndarray
) -> np.ndarray:
    """``oracle_p_click`` of the world's impressions for each (request_id, item_id) pair
    (NaN where the world has no such impression)."""
    from moon_rec.data.io import read_table

    table = read_table(world, "impressions", columns=["request_id", "item_id", "oracle_p_click"])
    if "oracle_p_click" not in table.column_names:
        raise DataError(
            "no oracle_p_click (not a synthetic world?)", file=str(world), column="oracle_p_click"
        )
    w_req = table.column("request_id").to_numpy(zero_copy_only=False).astype(np.int64)
    w_item = table.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)
    w_p = table.column("oracle_p_click").to_numpy(zero_copy_only=False).astype(np.float64)
    # Join on the pair through a sorted composite key.
    shift = np.int64(max(int(w_item.max(initial=0)), int(item_id.max(initial=0))) + 1)
    w_key = w_req * shift + w_item
    key = request_id.astype(np.int64) * shift + item_id.astype(np.int64)
    order = np.argsort(w_key, kind="stable")
    pos = np.searchsorted(w_key[order], key).clip(max=max(len(order) - 1, 0))
    out = np.full(len(key), np.nan)
    if len(order):
        hit = w_key[order][pos] == key
        out[hit] = w_p[order][pos[hit]]
    return out


def ranking_report(
    labels: np.ndarray,
    scores: np.ndarray,
    users: np.ndarray,
    is_cold: np.ndarray,
    look_driven: np.ndarray,
    oracle: np.ndarray | None = None,
) -> dict[str, Any]:
    """The evaluation keys for one set of predictions (see the module docstring)."""
    report: dict[str, Any] = {
        "auc": auc(labels, scores),
        "gauc": gauc(labels, scores, users),
        "logloss": logloss(labels, scores),
        "auc_cold": auc(labels[is_cold], scores[is_cold]),
        "auc_warm": auc(labels[~is_cold], scores[~is_cold]),
        "auc_look_driven": auc(labels[look_driven], scores[look_driven]),
        "auc_other": auc(labels[~look_driven], scores[~look_driven]),
        "n_test": len(labels),
        "n_cold": int(is_cold.sum()),
        "n_look_driven": int(look_driven.sum()),
    }
    if oracle is not None:
        report["oracle_auc"] = auc(labels, oracle)
        report["oracle_auc_cold"] = auc(labels[is_cold], oracle[is_cold])
        report["oracle_auc_look_driven"] = auc(labels[look_driven], oracle[look_driven])
        report["oracle_auc_other"] = auc(labels[~look_driven], oracle[~look_driven])
        report["oracle_auc_warm"] = auc(labels[~is_cold], oracle[~is_cold])
    else:
        for key in ("", "_cold", "_look_driven", "_other", "_warm"):
            report[f"oracle_auc{key}"] = None
    return report


def score_test_split(
    model_dir: str | Path,
    *,
    training_set: str | Path | None = None,
    embeddings: str | Path | None = None,
    query_embeddings: str | Path | None = None,
) -> tuple[TrainingSet, np.ndarray, np.ndarray, dict[str, Any]]:
    """The ranker of ``model_dir`` scored on the test split of its training set.

    Returns (training set, test row indices, click probabilities of those rows, meta).
    The overrides are those of :func:`evaluate_ranker`.

    Raises:
        DataError: embeddings of another encoder version, no test rows.
    """
    model, meta = load_ranker(model_dir)
    config = model.config
    ts_path = training_set or meta["training_set"]
    data = load_training_set(ts_path, config.max_seq_len, config.query_token_buckets)
    emb: MoonEmbeddings | None = None
    emb_path = embeddings or meta.get("embeddings")
    if config.uses_moon:
        if emb_path is None:
            raise DataError("the model uses MOON features: pass --embeddings")
        q_path = query_embeddings or meta.get("query_embeddings")
        emb = load_moon_embeddings(emb_path, config.moon_dim, queries=q_path)
        if emb.model_version != meta["model_version"]:
            raise DataError(
                f"embeddings are model_version {emb.model_version}, the ranker was trained "
                f"on {meta['model_version']}",
                file=str(emb_path),
                column="model_version",
            )
        data.attach_queries(emb)
    rows = np.flatnonzero(data.is_test)
    if rows.size == 0:
        raise DataError("no test rows (split == 'test')", file=str(ts_path), column="split")
    q_vectors = emb.query_vectors if emb is not None else None
    scores = predict(model, data, rows, q_vectors, config.train.eval_batch_size)
    return data, rows, scores, meta


def evaluate_ranker(
    model_dir: str | Path,
    *,
    training_set: str | Path | None = None,
    embeddings: str | Path | None = None,
    query_embeddings: str | Path | None = None,
    world: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate the ranker of ``model_dir`` on the test split.

    Args:
        model_dir: written by ``train_ranker``.
        training_set: override the training set recorded in the model.
        embeddings: override the embeddings recorded in the model; their model_version
            must equal the model's.
        query_embeddings: override the query embeddings recorded in the model.
        world: world directory whose impressions carry ``oracle_p_click`` (oracle AUC).

    Raises:
        DataError: embeddings of another encoder version, no test rows.
    """
    data, rows, scores, meta = score_test_split(
        model_dir,
        training_set=training_set,
        embeddings=embeddings,
        query_embeddings=query_embeddings,
    )
    oracle = None
    if world is not None:
        oracle = oracle_probabilities(world, data.request_id[rows], data.item_id[rows])
        missing = int(np.isnan(oracle).sum())
        if missing:
            warnings.warn(
                f"{missing} test rows have no impression in {world}", RuntimeWarning, stacklevel=2
            )
    report = ranking_report(
        data.clicked[rows],
        scores,
        data.user_id[rows],
        data.is_cold[rows],
        data.look_driven[rows],
        oracle,
    )
    config = RankerConfig.from_dict(meta["config"])
    report["model_version"] = meta.get("model_version")
    report["feature_set"] = config.feature_set
    report["behaviour"] = config.behaviour.module
    return report
