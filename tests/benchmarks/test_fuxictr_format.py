"""The FuxiCTR exporter of the peer benchmark, on a hand-made training set (no FuxiCTR)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fuxictr_format import FuxiExport, export_training_set, split_rows, write_without_valid

from moon_rec.data.embeddings import MoonEmbeddings
from moon_rec.data.errors import DataError
from moon_rec.data.training_set import TRAINING_SET_SCHEMA, read_training_set, write_training_set

T0 = datetime(2024, 1, 1, tzinfo=UTC)

# request, user, item, ts (s), query, position, clicked, category, brand,
# hist items (newest first), hist categories, split
ROWS = [
    (1, 10, 100, 1, "red dress", 0, 1, 1, 5, [], [], "train"),
    (1, 10, 101, 1, "red dress", 1, 0, 2, 6, [], [], "train"),
    (2, 11, 101, 2, "", 0, 0, 2, 6, [100], [1], "train"),
    (3, 10, 102, 3, "blue", 0, 1, 1, 5, [101, 100], [2, 1], "train"),
    (4, 12, 100, 4, "red", 0, 0, 1, 5, [102, 101, 100], [1, 2, 1], "train"),
    (5, 11, 103, 5, "x", 2, 1, 3, 7, [104], [3], "train"),  # 104: only ever a behaviour
    (6, 10, 101, 6, "red", 0, 0, 2, 6, [102, 101, 100], [1, 2, 1], "train"),
    (7, 12, 102, 7, "blue", 0, 1, 1, 5, [100, 102, 101, 100], [1, 1, 2, 1], "train"),
    (8, 13, 105, 8, "red", 0, 1, 4, 8, [102], [1], "train"),  # the validation slice ...
    (8, 13, 100, 8, "red", 1, 0, 1, 5, [102], [1], "train"),  # ... a whole request
    (9, 14, 200, 20, "red", 0, 1, 1, 5, [105, 100, 103], [4, 1, 3], "test"),  # cold
    (9, 14, 201, 20, "red", 1, 0, 1, 9, [105, 100, 103], [4, 1, 3], "test"),  # cold, no vector
    (10, 10, 100, 21, "blue", 0, 1, 1, 5, [102, 101, 100], [1, 2, 1], "test"),
]


def _training_set(path: Path) -> Path:
    cols = list(zip(*ROWS, strict=True))
    n = len(ROWS)
    ts = [T0 + timedelta(seconds=s) for s in cols[3]]
    table = pa.table(
        {
            "request_id": cols[0],
            "user_id": cols[1],
            "item_id": cols[2],
            "ts": ts,
            "query_text": cols[4],
            "position": cols[5],
            "clicked": cols[6],
            "category_id": cols[7],
            "brand_id": cols[8],
            "hist_item_ids": cols[9],
            "hist_category_ids": cols[10],
            "hist_actions": [["click"] * len(h) for h in cols[9]],
            "hist_ts": [[T0] * len(h) for h in cols[9]],
            "split": cols[11],
            "is_cold": [i in (200, 201) for i in cols[2]],
            "look_driven": [False] * n,
        }
    )
    return write_training_set(table.cast(TRAINING_SET_SCHEMA), path)


def _moon() -> MoonEmbeddings:
    ids = np.array([100, 102, 105, 200], np.int64)
    vectors = np.arange(16, dtype=np.float32).reshape(4, 4)
    return MoonEmbeddings(ids, vectors, {}, np.zeros((0, 4), np.float32), "v1", 4)


def _read(path: Path) -> dict[str, list[Any]]:
    return pq.read_table(path).to_pydict()


Exported = tuple[Path, FuxiExport]


@pytest.fixture
def exported(tmp_path: Path) -> Exported:
    ts_path = _training_set(tmp_path / "ts.parquet")
    export = export_training_set(
        ts_path,
        tmp_path / "fx",
        max_len=2,
        query_token_buckets=256,
        valid_fraction=0.2,
        embeddings=_moon(),
    )
    return ts_path, export


def test_split_and_validation_slice(exported: Exported) -> None:
    _, export = exported
    # 10 train rows; the last 20% by ts is ts 8: both rows of request 8, never cut.
    assert export.rows["fit"].tolist() == list(range(8))
    assert export.rows["valid"].tolist() == [8, 9]
    assert export.rows["test"].tolist() == [10, 11, 12]
    assert export.valid_from is not None and export.valid_from.startswith("2024-01-01T00:00:08")
    for name, n in (("train", 8), ("valid", 2), ("test", 3)):
        assert pq.read_metadata(export.data_dir / f"{name}.parquet").num_rows == n
    s = export.summary()
    assert (s["fit_rows"], s["valid_rows"], s["test_rows"]) == (8, 2, 3)
    assert s["valid_fraction_of_train"] == 0.2


def test_split_rows_keeps_a_timestamp_whole() -> None:
    split = np.array(["train"] * 5 + ["test"], dtype=object)
    ts = np.array([1, 2, 3, 3, 3, 9])
    parts = split_rows(split, ts, 0.2)  # the cut falls inside ts 3: all of ts 3 goes
    assert parts["fit"].tolist() == [0, 1] and parts["valid"].tolist() == [2, 3, 4]
    with pytest.raises(DataError, match="split"):
        split_rows(np.array(["train", "valid"], dtype=object), np.array([1, 2]), 0.5)


def test_column_mapping_and_vocabularies(exported: Exported) -> None:
    _, export = exported
    # fuxictr Tokenizer layout: 0 pad, 1..V fit vocabulary (sorted ids), V + 1 OOV.
    assert export.vocab_sizes["user_id"] == 3 + 2  # users 10, 11, 12 in the fit rows
    assert export.vocab_sizes["item_id"] == 5 + 2  # 100..103 as targets, 104 as behaviour
    assert export.vocab_sizes["position"] == 3 + 2  # positions 0, 1, 2
    train, valid = (_read(export.data_dir / f"{n}.parquet") for n in ("train", "valid"))
    assert list(train) == [
        "user_index",
        "item_index",
        "seq_len",
        "user_id",
        "brand_id",
        "position",
        "query_tokens",
        "clicked",
    ]
    assert train["user_id"] == [1, 1, 2, 1, 3, 2, 1, 3]
    assert valid["user_id"] == [4, 4]  # user 13 is not in the fit rows: OOV
    assert train["clicked"] == [r[6] for r in ROWS[:8]]
    assert all(len(q) == 8 for q in train["query_tokens"])
    assert train["query_tokens"][2] == [0] * 8  # empty query: all padding
    assert sum(t > 0 for t in train["query_tokens"][0]) == 2  # "red dress"
    assert pq.read_schema(export.data_dir / "test.parquet").field("clicked").type == pa.int64()

    info = _read(export.data_dir / "item_info.parquet")
    assert info["item_index"] == list(range(9))  # row i is item_index i, 0 the padding item
    # items 100..105, 200, 201 -> item_index 1..8; ids 100..104 in vocab, the rest OOV (6)
    assert info["item_id"] == [0, 1, 2, 3, 4, 5, 6, 6, 6]
    assert export.hist_category_mismatches == 0
    # the target rows point at their item; category of item 103 is category 3
    assert train["item_index"] == [1, 2, 2, 3, 1, 4, 2, 3]
    cat_vocab = sorted({1, 2, 3})
    assert info["category_id"][4] == cat_vocab.index(3) + 1
    assert info["category_id"][6] == len(cat_vocab) + 1  # category 4 only in the validation slice


def test_sequences_oldest_first_newest_kept(exported: Exported) -> None:
    _, export = exported
    seqs = _read(export.data_dir / "user_info.parquet")["full_item_seq"]
    train, test = (_read(export.data_dir / f"{n}.parquet") for n in ("train", "test"))

    def seq(rows: dict[str, list[Any]], i: int) -> list[int]:
        return seqs[rows["user_index"][i]][: rows["seq_len"][i]]

    assert seq(train, 0) == [0] and train["seq_len"][0] == 1  # empty: the padding item
    assert seq(train, 2) == [1]  # [100]
    assert seq(train, 3) == [1, 2]  # newest first [101, 100] -> oldest first [100, 101]
    assert seq(train, 4) == [2, 3]  # [102, 101, 100], max_len 2: the newest two, oldest first
    assert seq(test, 0) == [1, 6]  # [105, 100, 103] -> [100, 105]
    assert test["user_index"][0] == test["user_index"][1]  # one request, one sequence
    assert export.n_sequences == len(seqs) == len({tuple(s) for s in seqs})


def test_moon_pretrained_items(exported: Exported) -> None:
    _, export = exported
    info = _read(export.data_dir / "item_info_moon.parquet")
    # vocab 1..5 kept; cold 105 and 200 have vectors: V + 1, V + 2; 201 has none: moved OOV
    assert info["item_id"] == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert export.moon_extra_items == 2 and export.moon_vocab_size == 7 + 2
    npz = np.load(export.data_dir / "moon_item_id.npz")
    assert npz["key"].tolist() == [1, 3, 6, 7]  # items 100, 102, 105, 200
    np.testing.assert_array_equal(npz["value"], _moon().item_vectors)
    assert npz["value"].dtype == np.float32 and export.moon_dim == 4


def test_our_training_set_less_the_slice(exported: Exported, tmp_path: Path) -> None:
    ts_path, export = exported
    ours = write_without_valid(ts_path, export.rows["valid"], tmp_path / "ours.parquet")
    t = read_training_set(ours)
    assert t.num_rows == len(ROWS) - 2
    assert t.column("item_id").to_pylist() == [r[2] for i, r in enumerate(ROWS) if i not in (8, 9)]


def test_bad_input_is_named(tmp_path: Path) -> None:
    ts_path = _training_set(tmp_path / "ts.parquet")
    t = pq.read_table(ts_path)
    pq.write_table(t.drop(["hist_item_ids"]), tmp_path / "missing.parquet")
    with pytest.raises(DataError, match="hist_item_ids"):
        export_training_set(
            tmp_path / "missing.parquet", tmp_path / "a", max_len=2, query_token_buckets=16
        )
    labels = t.column("clicked").to_pylist()
    labels[3] = 2
    bad = t.set_column(t.schema.get_field_index("clicked"), "clicked", pa.array(labels, pa.int8()))
    pq.write_table(bad, tmp_path / "label.parquet")
    with pytest.raises(DataError, match=r"label.parquet.*clicked.*row 3"):
        export_training_set(
            tmp_path / "label.parquet", tmp_path / "b", max_len=2, query_token_buckets=16
        )


# a feature spec with one extra of each export kind: string tokens, a transformed number
# (with a null) and the same number bucketised
SPEC = {
    "name": "peer_test",
    "features": [
        {"source": "item_attributes:category_id", "kind": "categorical", "table": "category"},
        {"source": "item_attributes:brand_id", "kind": "categorical", "table": "brand"},
        {"source": "user_behaviour:hist_item_ids", "kind": "id_sequence", "table": "item",
         "target": "item_id"},
        {"source": "user_behaviour:hist_category_ids", "kind": "id_sequence",
         "table": "category", "target": "category_id"},
        {"source": "user_attributes:gender", "kind": "categorical", "dtype": "string"},
        {"source": "item_attributes:price", "kind": "numeric",
         "transform": ["log1p", "standardise"], "fill": "mean"},
        {"source": "item_attributes:price", "name": "price_bucket", "kind": "numeric",
         "transform": ["bucketise"], "buckets": 2, "fill": "mean"},
    ],
}
GENDER = ["M", "F", "M", "M", "F", "F", "M", "F", "X", "X", "F", "Y", "M"]  # Y: test only
PRICE = [1.0, 3.0, 3.0, None, 1.0, 7.0, 3.0, 1.0, 2.0, 2.0, 5.0, 1.0, 1.0]


def test_spec_extras_are_exported_as_the_spec_names_them(tmp_path: Path) -> None:
    """The export's extra columns and FuxiCTR's dataset config name exactly the spec's
    extra features, typed for FuxiCTR, with our fitted transforms' values (fit rows)."""
    from peer_fuxictr import covering_spec, dataset_config

    from moon_rec.data.feature_spec import FeatureSpec, fit_features

    spec = FeatureSpec.from_dict(SPEC)
    base = pq.read_table(_training_set(tmp_path / "base.parquet"))
    table = (base.append_column("gender", pa.array(GENDER))
             .append_column("price", pa.array(PRICE, pa.float64()))
             .append_column("price_bucket", pa.array(PRICE, pa.float64())))
    ts_path = write_training_set(table, tmp_path / "ts.parquet", spec)
    export = export_training_set(ts_path, tmp_path / "fx", max_len=2, query_token_buckets=256,
                                 valid_fraction=0.2, spec=spec)
    extras = [e.column for e in spec.extras()]
    assert [e["name"] for e in export.extras] == extras == ["gender", "price", "price_bucket"]
    assert export.summary()["extra_features"] == extras
    assert export.feature_spec == "peer_test"
    for split in ("train", "valid", "test"):
        cols = pq.read_schema(tmp_path / "fx" / f"{split}.parquet").names
        assert cols[cols.index("query_tokens") + 1: -1] == extras and cols[-1] == "clicked"
    cfg = dataset_config(export, tmp_path / "root", False, "sum")
    by = {c["name"]: c for c in cfg["feature_cols"]}
    assert [c["name"] for c in cfg["feature_cols"] if c["name"] in extras] == extras
    assert (by["gender"]["type"], by["price"]["type"], by["price_bucket"]["type"]) == (
        "categorical", "numeric", "categorical")
    assert by["price"]["dtype"] == "float" and "normalizer" not in by["price"]
    # the values are our ranker's inputs, fitted on the fit rows (rows 0-7)
    fit = np.zeros(len(ROWS), bool)
    fit[export.rows["fit"]] = True
    raw = {"gender": np.array(GENDER, object),
           "price": np.array([np.nan if p is None else p for p in PRICE]),
           "price_bucket": np.array([np.nan if p is None else p for p in PRICE]),
           "brand_id": base.column("brand_id").to_numpy()}  # the spec's, encoded too
    ids, dense = fit_features(spec, raw, fit).encode(raw)
    train = _read(tmp_path / "fx" / "train.parquet")
    test = _read(tmp_path / "fx" / "test.parquet")
    assert train["gender"] == (ids["gender"][export.rows["fit"]] + 1).tolist()
    assert test["gender"] == [1, 3, 2]  # F, unseen Y (OOV: row 2), M; vocab [F, M]; +1
    assert by["gender"]["vocab_size"] == 4  # pad, F, M, OOV
    assert np.allclose(train["price"], dense[export.rows["fit"], 0])
    assert abs(np.mean(train["price"])) < 1e-6  # standardised on the fit rows
    assert train["price_bucket"] == (ids["price_bucket"][export.rows["fit"]] + 1).tolist()
    # our rankers' copy keeps the extra columns
    assert covering_spec(["ids", "full"]).name == "full"
    ours = write_without_valid(ts_path, export.rows["valid"], tmp_path / "ours.parquet", spec)
    assert read_training_set(ours, spec).column("gender").to_pylist() == [
        g for i, g in enumerate(GENDER) if i not in (8, 9)]
