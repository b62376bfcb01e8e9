"""Semantic-ID codes in the feature store: the embedding view gains the field when the
snapshot has codes, the chunked materialization writes them, pushes carry them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fs_data import embedding_table

from moon_rec.data.embeddings import SEMANTIC_IDS, with_semantic_ids
from moon_rec.featurestore.layout import ITEM_EMBEDDING_VIEW


def _with_codes(t: pa.Table, seed: int) -> tuple[pa.Table, np.ndarray]:
    codes = np.random.default_rng(seed).integers(0, 16, (t.num_rows, 3)).astype(np.int32)
    return with_semantic_ids(t.cast(t.schema), codes), codes


def _codes_online(mfs: Any, ids: list[int]) -> list[Any]:
    rows = [{"item_id": i} for i in ids]
    got = mfs.store.get_online_features(
        features=[f"{ITEM_EMBEDDING_VIEW}:{SEMANTIC_IDS}"], entity_rows=rows
    ).to_dict()
    return list(got[SEMANTIC_IDS])


def test_codes_materialized_and_pushed(make_store: Any, tmp_path: Path, time0: datetime) -> None:
    from moon_rec.featurestore.materialize import materialize_embeddings
    from moon_rec.featurestore.push import OnlineWriter

    data = tmp_path / "data"
    emb = data / "item_embeddings"
    emb.mkdir(parents=True)
    table, codes = _with_codes(embedding_table(list(range(12)), time0, "v1", seed=1), 0)
    pq.write_table(table, emb / "part-00000.parquet", row_group_size=5)
    (emb / "manifest.json").write_text(json.dumps(
        {"model_version": "v1", "semantic_ids": {"levels": 3, "codebook": 16, "dim": 64}}
    ))
    mfs = make_store(data)
    view = mfs.store.get_feature_view(ITEM_EMBEDDING_VIEW)
    assert SEMANTIC_IDS in [f.name for f in view.features]
    assert view.tags[SEMANTIC_IDS] == "3x16"
    report = materialize_embeddings(mfs, batch_rows=5)
    assert report.rows == 12
    got = _codes_online(mfs, [3, 0, 11, 99])
    assert got[:3] == codes[[3, 0, 11]].tolist() and got[3] is None
    # a new item pushed with its code (what POST /items does), and one without
    later = time0 + timedelta(hours=1)
    new, new_codes = _with_codes(embedding_table([50], later, "v1", seed=2), 1)
    writer = OnlineWriter(mfs)
    writer.item_embeddings(new)
    writer.item_embeddings(embedding_table([51], later, "v1", seed=3))
    assert _codes_online(mfs, [50, 51]) == [new_codes[0].tolist(), None]
