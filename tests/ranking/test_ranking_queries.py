"""Query-text embeddings written with a (tiny, untrained) MOON encoder feed CUBE's s_q."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from moon_rec.data.embeddings import load_moon_embeddings
from moon_rec.encoders import EncoderConfig, MoonEncoder, MoonTokenizer, build_encoder
from moon_rec.ranking.data import load_training_set
from moon_rec.ranking.queries import distinct_queries, write_query_embeddings
from moon_rec.ranking.synthetic import SyntheticPaths


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = MoonTokenizer.train(["category 1 item", "red dress"], vocab_size=100)
    cfg = EncoderConfig(
        hidden_size=32,
        num_heads=2,
        vision_layers=1,
        text_layers=1,
        patch_size=16,
        embed_dim=64,
        dims=(32, 64),
    )
    path = tmp_path_factory.mktemp("enc") / "enc"
    build_encoder(cfg, tok).save_pretrained(path)
    return path


def test_query_embeddings_round_trip(
    ranker_data: SyntheticPaths, checkpoint: Path, tmp_path: Path
) -> None:
    out = write_query_embeddings(ranker_data.training_set, checkpoint, tmp_path / "queries.parquet")
    table = pq.read_table(out)
    texts = distinct_queries(ranker_data.training_set)
    assert table.column("query_text").to_pylist() == texts
    version = MoonEncoder.from_pretrained(checkpoint).model_version
    assert set(table.column("model_version").to_pylist()) == {version}
    vecs = np.stack(table.column("emb_32").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    # Item embeddings of another version are refused together with these queries.
    with pytest.raises(ValueError, match="model_version"):
        load_moon_embeddings(ranker_data.embeddings / "items.parquet", 32, queries=out)
    data = load_training_set(ranker_data.training_set, 5, 64)
    assert len(data) > 0


def test_no_query_texts_give_an_empty_table(
    ranker_data: SyntheticPaths, checkpoint: Path, tmp_path: Path
) -> None:
    """MovieLens has no search queries: every query_text is empty, and the job writes an
    empty table of the query-embedding format (so every s_q is 0) instead of failing."""
    import pyarrow as pa

    from moon_rec.data.embeddings import QUERY_KEY, embedding_schema
    from moon_rec.data.embeddings import parquet_files as files

    table = pa.concat_tables([pq.read_table(f) for f in files(ranker_data.training_set)])
    blank = table.set_column(table.schema.get_field_index("query_text"), "query_text",
                             pa.array([""] * table.num_rows, pa.string()))
    pq.write_table(blank, tmp_path / "no_queries.parquet")
    assert distinct_queries(tmp_path / "no_queries.parquet") == []
    out = write_query_embeddings(tmp_path / "no_queries.parquet", checkpoint,
                                 tmp_path / "queries.parquet")
    got = pq.read_table(out)
    assert got.num_rows == 0
    assert got.schema.equals(embedding_schema((32, 64), QUERY_KEY), check_metadata=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no parquet files"):
        write_query_embeddings(empty, checkpoint, tmp_path / "q2.parquet")
