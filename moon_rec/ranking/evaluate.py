"""Evaluating a trained ranker on the test period of its training set.

``evaluate_ranker`` returns (and ``moon ranker eval --json`` prints) the keys ``auc``,
``gauc``, ``logloss``, ``oracle_auc``, ``auc_cold``, ``auc_warm``, ``auc_look_driven``,
``auc_other``, ``model_version``, ``n_test`` (plus ``oracle_auc_cold``,
``oracle_auc_warm``, ``oracle_auc_look_driven`` and ``oracle_auc_other`` for gap-closed
tables). A metric that is undefined on the data
(one class only, no oracle) is ``null``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moon_rec.data.embeddings import EmbeddingSnapshot, MoonEmbeddings
from moon_rec.data.errors import DataError
from moon_rec.data.rows import RowIndex
from moon_rec.metrics.ranking import auc, gauc, logloss
from moon_rec.ranking.config import RankerConfig
from moon_rec.ranking.data import TrainingSet, load_training_set
from moon_rec.ranking.item_tables import FrozenContentTable, SemanticIdTable
from moon_rec.ranking.model import ContentLookup, MoonRanker, SemanticIdLookup
from moon_rec.ranking.model_dir import CODE_ROWS, CONTENT_ROWS, SNAPSHOT_COPIES, RankerDir
from moon_rec.ranking.sparse import RANKER_OWN_TABLES, RankerTables


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a ranker model directory (``RankerDir.read_meta``)."""
    return RankerDir(model_dir).read_meta()


def snapshot_of(meta: dict[str, Any], embeddings: str | Path | None = None) -> EmbeddingSnapshot:
    """The embedding snapshot a ranker was trained on (``embeddings`` overrides the path
    its meta records); a DataError when there is none or it is of another model_version."""
    path = embeddings or meta.get("embeddings")
    if path is None:
        raise DataError("the model uses MOON features: pass --embeddings")
    snap = EmbeddingSnapshot.open(path)
    if snap.model_version != meta.get("model_version"):
        raise DataError(
            f"embeddings are model_version {snap.model_version}, the ranker was trained "
            f"on {meta.get('model_version')}",
            file=str(path),
            column="model_version",
        )
    return snap


def _trained_rows(emb: MoonEmbeddings, ids: torch.Tensor, what: str, where: str) -> np.ndarray:
    rows = emb.item_rows(ids.numpy())
    missing = np.flatnonzero(rows < 0)
    if missing.size:
        raise DataError(
            f"item {int(ids[int(missing[0])])} that the ranker's {what} was trained with is not "
            f"in the snapshot", file=where, column="item_id")
    return rows


def snapshot_lookups(
    config: RankerConfig, meta: dict[str, Any], state: dict[str, Any],
    embeddings: str | Path | None = None, loaded: MoonEmbeddings | None = None,
) -> tuple[ContentLookup | None, SemanticIdLookup | None]:
    """The frozen content table and semantic-ID table of a trained ranker, rebuilt from
    the snapshot for the item ids ``model.pt`` keeps (None where the ranker has none).
    ``loaded``: that snapshot's vectors when the caller has read them already."""
    if not config.uses_embeddings:
        return None, None
    snap = snapshot_of(meta, embeddings)
    dim = config.moon_dim if config.moon_dim in snap.dims else snap.dims[-1]
    emb = loaded if loaded is not None and loaded.dim == dim else snap.vectors(dim)
    content: ContentLookup | None = None
    codes: SemanticIdLookup | None = None
    if config.uses_moon and CONTENT_ROWS in state:
        ids = state[CONTENT_ROWS]
        rows = _trained_rows(emb, ids, "content table", str(snap.path))
        content = FrozenContentTable(ids, torch.from_numpy(emb.item_vectors[rows]))
    if config.semantic_ids is not None and CODE_ROWS in state:
        ids = state[CODE_ROWS]
        if emb.semantic_ids is None:
            raise DataError("the ranker reads semantic IDs; the snapshot has no codes",
                            file=str(snap.path), column="semantic_ids")
        rows = _trained_rows(emb, ids, "semantic-ID table", str(snap.path))
        codes = SemanticIdTable(ids, torch.from_numpy(emb.semantic_ids[rows]))
    return content, codes


def load_ranker(
    model_dir: str | Path,
    device: str = "cpu",
    *,
    content: ContentLookup | None = None,
    semantic_ids: SemanticIdLookup | None = None,
    embeddings: str | Path | None = None,
    loaded: MoonEmbeddings | None = None,
) -> tuple[MoonRanker, dict[str, Any]]:
    """The trained, unsharded ranker of ``model_dir`` in eval mode, and its meta dict.

    Args:
        content: the ranker's content lookup (an ``nn.Module``, e.g. a serving-side center
            of the same model_version); default: a ``FrozenContentTable`` of the vectors
            the embedding snapshot holds for the item ids ``model.pt`` keeps (the vectors
            the sharded training table held). Ignored by an ``ids`` ranker.
        semantic_ids: the item -> code lookup (an ``nn.Module``, e.g. over serving's
            center, which also knows items added since training); default: the
            snapshot's codes of the trained item ids. Ignored by a ranker without
            semantic IDs.
        embeddings: the snapshot to read them from (default: the one meta.json records;
            its model_version must be the ranker's).
        loaded: that snapshot's vectors, when the caller has already read them.

    Raises:
        DataError: the snapshot is missing, of another model_version, or lacks an item the
            ranker was trained with.
    """
    rdir = RankerDir(model_dir)
    meta = rdir.read_meta()
    state = rdir.load_weights()
    config = RankerConfig.from_dict(meta["config"])
    given = content is not None and config.uses_moon
    if given and content is not None and content.dim != config.moon_dim:
        raise ValueError(
            f"{model_dir}: the ranker reads {config.moon_dim}-dim MOON content, the given "
            f"content lookup has {content.dim}"
        )
    given_sid = semantic_ids is not None and config.semantic_ids is not None
    need_content = config.uses_moon and content is None
    need_codes = config.semantic_ids is not None and semantic_ids is None
    if need_content or need_codes:
        own_content, own_codes = snapshot_lookups(config, meta, state, embeddings, loaded)
        content = own_content if need_content else content
        semantic_ids = own_codes if need_codes else semantic_ids
    features = rdir.features(meta)
    needed = RankerTables({}, features)
    rows = rdir.table_rows(meta, [*RANKER_OWN_TABLES, *needed.sequence_tables()])
    model = MoonRanker(config, RankerTables(rows, features), content, semantic_ids)
    own = model.state_dict()
    # the snapshot's vectors and codes (not in model.pt); a given lookup replaces the one
    # the ranker was trained with
    state = state | {k: own[k] for k in SNAPSHOT_COPIES if k in own}
    for prefix, replaced in (("content_arch.", given), ("semantic_id_table.", given_sid)):
        if replaced:
            mine = {k: v for k, v in own.items() if k.startswith(prefix)}
            state = {k: v for k, v in state.items() if not k.startswith(prefix)} | mine
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # written by another version of the architecture
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise ValueError(
            f"{rdir.weights_file}: does not fit this version of the ranker ({first[0].strip()}); "
            "retrain it"
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
    return RowIndex(w_key).take(w_p, key, np.nan)


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
    meta = read_meta(model_dir)
    config = RankerConfig.from_dict(meta["config"])
    emb: MoonEmbeddings | None = None
    if config.uses_moon:  # read once: the content table and the query vectors
        q_path = query_embeddings or meta.get("query_embeddings")
        emb = snapshot_of(meta, embeddings).vectors(config.moon_dim, queries=q_path)
    model, meta = load_ranker(model_dir, embeddings=embeddings, loaded=emb)
    ts_path = training_set or meta["training_set"]
    data = load_training_set(ts_path, config.max_seq_len, config.query_token_buckets,
                             features=model.features)
    if emb is not None:
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
