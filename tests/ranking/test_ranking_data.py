"""Reading training sets and embeddings; bad input is reported or handled, never a crash
inside the kernels."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from moon_rec.data.embeddings import load_moon_embeddings
from moon_rec.data.errors import DataError
from moon_rec.ranking.config import ConfigError, RankerConfig, load_ranker_config
from moon_rec.ranking.data import load_training_set
from moon_rec.ranking.synthetic import SyntheticPaths
from moon_rec.ranking.train import build_model, table_sizes


def _rewrite(src: Path, dst: Path, **columns: pa.Array) -> Path:
    table = pq.read_table(src)
    for name, values in columns.items():
        table = table.set_column(table.column_names.index(name), name, values)
    pq.write_table(table, dst)
    return dst


def test_training_set_arrays(ranker_data: SyntheticPaths) -> None:
    data = load_training_set(ranker_data.training_set, max_seq_len=5, query_token_buckets=64)
    n = len(data)
    assert n > 0
    assert data.item_sequence.shape == (n, 5)
    assert list(data.sequences) == ["hist_item_ids", "hist_category_ids"]
    assert (data.hist_lengths <= 5).all()
    pad = np.arange(5)[None, :] >= data.hist_lengths[:, None]
    assert (data.item_sequence[pad] == -1).all()
    assert data.is_test.any() and (~data.is_test).any()
    assert ((data.query_tokens >= -1) & (data.query_tokens < 64)).all()


def test_missing_column_is_named(ranker_data: SyntheticPaths, tmp_path: Path) -> None:
    table = pq.read_table(ranker_data.training_set).drop(["brand_id"])
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(DataError, match="brand_id"):
        load_training_set(tmp_path / "t.parquet", 5, 64)


def test_bad_label_names_row(ranker_data: SyntheticPaths, tmp_path: Path) -> None:
    n = pq.read_metadata(ranker_data.training_set).num_rows
    labels = np.zeros(n, np.int8)
    labels[7] = 2
    path = _rewrite(ranker_data.training_set, tmp_path / "t.parquet", clicked=pa.array(labels))
    with pytest.raises(DataError, match="row 7"):
        load_training_set(path, 5, 64)


def test_nan_embedding_rows_are_zeroed(ranker_data: SyntheticPaths, tmp_path: Path) -> None:
    table = pq.read_table(ranker_data.embeddings / "items.parquet")
    rows = table.column("emb_32").to_pylist()
    rows[3] = [float("nan")] * 32
    table = table.set_column(
        table.column_names.index("emb_32"), "emb_32", pa.array(rows, pa.list_(pa.float32()))
    )
    pq.write_table(table, tmp_path / "items.parquet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb = load_moon_embeddings(tmp_path / "items.parquet", 32)
    assert emb.n_bad_rows == 1
    assert any("NaN" in str(w.message) for w in caught)
    assert np.isfinite(emb.item_vectors).all()
    assert (emb.item_vectors[emb.item_ids == 3] == 0).all()


def test_mixed_model_versions_rejected(ranker_data: SyntheticPaths, tmp_path: Path) -> None:
    table = pq.read_table(ranker_data.embeddings / "items.parquet")
    versions = ["a"] * table.num_rows
    versions[0] = "b"
    table = table.set_column(
        table.column_names.index("model_version"), "model_version", pa.array(versions)
    )
    pq.write_table(table, tmp_path / "items.parquet")
    with pytest.raises(DataError, match="model_version"):
        load_moon_embeddings(tmp_path / "items.parquet", 32)


def test_missing_matryoshka_size(ranker_data: SyntheticPaths) -> None:
    with pytest.raises(DataError, match="emb_48"):
        load_moon_embeddings(ranker_data.embeddings, 48)


def test_config_rejects_unknown_keys_and_bad_combinations(configs_file: Path) -> None:
    with pytest.raises(ConfigError, match="colour"):
        RankerConfig.from_dict({"colour": 1})
    with pytest.raises(ConfigError, match=r"behaviour\.attention_hiden"):
        RankerConfig.from_dict({"behaviour": {"attention_hiden": [4]}})
    with pytest.raises(ConfigError, match="ids\\+moon"):
        RankerConfig.from_dict({"feature_set": "ids", "behaviour": {"module": "cube"}})
    cfg = load_ranker_config(configs_file, "cube_moon_tiny")
    assert cfg.behaviour.module == "cube" and cfg.uses_moon


def test_unknown_ids_and_empty_sequences_do_not_crash(
    ranker_data: SyntheticPaths, configs_file: Path
) -> None:
    cfg = load_ranker_config(configs_file, "cube_moon_tiny")
    data = load_training_set(ranker_data.training_set, cfg.max_seq_len, cfg.query_token_buckets)
    emb = load_moon_embeddings(ranker_data.embeddings, cfg.moon_dim)
    data.attach_queries(emb)
    model = build_model(cfg, table_sizes(data, cfg), emb, seed=0).eval()
    rows = np.arange(6)
    data.user_id[rows] = [10**12, -5, 0, 1, 2, 3]
    data.item_id[rows] = [10**15, -1, 1, 2, 3, 4]
    data.raw["category_id"][rows[:2]] = 10**9  # a target: raw ids into the model
    data.position[rows[:2]] = 10**6
    data.hist_lengths[rows[:3]] = 0
    data.item_sequence[3, 0] = 10**13
    with torch.no_grad():
        out = model(data.batch(rows, emb.query_vectors))
    assert out.shape == (6,) and torch.isfinite(out).all()


def test_embed_job_folder_internals_are_ignored(
    ranker_data: SyntheticPaths, tmp_path: Path
) -> None:
    """The batch embed job's folder also holds _index.parquet, rejects.parquet and .work/."""
    items = pq.read_table(ranker_data.embeddings / "items.parquet")
    pq.write_table(items, tmp_path / "part-00000.parquet")
    pq.write_table(items.select(["item_id", "model_version"]), tmp_path / "_index.parquet")
    pq.write_table(
        pa.table({"item_id": [1], "row": [1], "reason": ["empty title"]}),
        tmp_path / "rejects.parquet",
    )
    (tmp_path / ".work" / "plan").mkdir(parents=True)
    bad = items.set_column(
        items.column_names.index("model_version"),
        "model_version",
        pa.array(["old"] * items.num_rows),
    )
    pq.write_table(bad, tmp_path / ".work" / "plan" / "chunk.parquet")
    emb = load_moon_embeddings(tmp_path, 64)
    assert emb.model_version == ranker_data.model_version
    assert len(emb.item_ids) == items.num_rows


def test_oracle_style_embeddings_load(tiny_world: Path, tmp_path: Path) -> None:
    from moon_rec.ranking.diagnostics import write_oracle_style_embeddings

    write_oracle_style_embeddings(tiny_world, tmp_path)
    emb = load_moon_embeddings(tmp_path, 32)
    assert emb.model_version == "oracle-style"
    np.testing.assert_allclose(np.linalg.norm(emb.item_vectors, axis=1), 1.0, rtol=1e-5)
