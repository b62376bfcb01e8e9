"""The feature spec: YAML round trip, rules named by feature, transforms fitted on the
train split, the store check, and a ranker trained on a spec's extra features."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float64, Int64, String

from moon_rec.data.errors import DataError
from moon_rec.data.feature_spec import (
    FeatureSpec,
    FeatureSpecError,
    dump_feature_spec,
    fit_features,
    known_specs,
    load_feature_spec,
)
from moon_rec.featurestore.services import check_spec, feature_services, service_name
from moon_rec.ranking.config import ConfigError, load_ranker_config
from moon_rec.ranking.synthetic import SyntheticPaths

# a spec's behaviour pairs (no brand: a spec reads what it names)
BASE = [
    {"source": "item_attributes:category_id", "kind": "categorical", "table": "category"},
    {"source": "user_behaviour:hist_item_ids", "kind": "id_sequence", "table": "item",
     "target": "item_id"},
    {"source": "user_behaviour:hist_category_ids", "kind": "id_sequence",
     "table": "category", "target": "category_id"},
]
HIST = {"source": "user_behaviour:hist_category_ids", "kind": "id_sequence"}


def _spec(*extra: dict[str, object], name: str = "t") -> dict[str, object]:
    return {"name": name, "features": [*BASE, *extra]}


@pytest.mark.parametrize("name", ["ids", "ids+moon", "full"])
def test_spec_round_trips_through_yaml(name: str, tmp_path: Path) -> None:
    spec = load_feature_spec(name)
    again = load_feature_spec(dump_feature_spec(spec, tmp_path / "s.yaml"))
    assert again == spec
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.model_dump()))) == spec


def test_known_specs_and_what_they_read() -> None:
    assert {"ids", "ids+moon", "full"} <= set(known_specs())
    assert not load_feature_spec("ids").extras()
    assert load_feature_spec("ids+moon").uses_moon
    assert "item_embedding:emb_32" in load_feature_spec("ids+moon").feast_features(32)
    full = load_feature_spec("full")
    assert "item_attributes:price" in full.feast_features()
    assert [e.column for e in full.dense()][:1] == ["price"]
    assert [e.column for e in full.pooled()] == ["brand_id", "spu_id", "price_bucket"]
    assert full.pairs() == [("item_id", "hist_item_ids"), ("category_id", "hist_category_ids")]
    assert [e.column for e in full.targets()] == ["category_id"]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_spec({"source": "item_attributes:price", "kind": "numerc"}), r"feature price: kind"),
        (_spec({"source": "item_attributes:price", "kind": "numeric", "lenght": 3}),
         r"feature price: unknown key lenght"),
        (_spec({"source": "price", "kind": "numeric"}), r"feature price: source: .*view:field"),
        (_spec({"source": "item_attributes:price", "kind": "numeric",
                "transform": ["log1p", "bucketise"], "buckets": 4}), r"bucketise is a transform"),
        (_spec({"source": "item_attributes:price", "kind": "categorical", "fill": 0}),
         r"feature price: .*numeric"),
        (_spec({"source": "item_attributes:spu_id", "kind": "categorical"},
               {"source": "item_attributes:spu_id", "kind": "numeric"}),
         r"feature spu_id: named twice"),
        (_spec({"source": "item_attributes:spu_id", "kind": "categorical",
                "table": "category"}),
         r"feature spu_id: table category is a behaviour sequence's table"),
        (_spec({"source": "item_attributes:spu_id", "kind": "categorical", "table": "user"}),
         r"feature spu_id: table user is the ranker's own"),
        # a sequence's target must be a feature of the spec
        ({"name": "t", "features": [BASE[1], {**HIST, "target": "categry_id"}]},
         r"feature hist_category_ids: target categry_id is not a feature of the spec"),
        ({"name": "t", "features": [BASE[1], HIST]},
         r"feature hist_category_ids: .*id_sequence needs target"),
        ({"name": "t", "features": [BASE[0], BASE[2], BASE[1]]},
         r"first id_sequence must target item_id \(the first, hist_category_ids"),
        ({"name": "t", "features": [BASE[0]]}, r"first id_sequence must target item_id"),
        # one table, one width
        (_spec({"source": "item_attributes:spu_id", "kind": "categorical", "table": "s",
                "embedding_dim": 8},
               {"source": "item_attributes:brand_id", "kind": "categorical", "table": "s",
                "embedding_dim": 16}),
         r"feature brand_id: table s is shared with spu_id, of another embedding_dim"),
        (_spec({"source": "item_attributes:brand_id", "kind": "numeric"}),
         r"feature brand_id: expected item_attributes:brand_id of kind categorical"),
    ],
)
def test_bad_specs_are_named(data: dict[str, object], match: str) -> None:
    with pytest.raises(FeatureSpecError, match=match):
        FeatureSpec.from_dict(data)


def test_unknown_spec_lists_the_known(tmp_path: Path) -> None:
    with pytest.raises(FeatureSpecError, match=r"unknown feature spec 'nope'.*known: .*full"):
        load_feature_spec("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_spec({"source": "item_attributes:price",
                                         "kind": "numeric", "transform": ["log2"]})))
    with pytest.raises(FeatureSpecError, match=r"bad.yaml: feature price: transform"):
        load_feature_spec(bad)
    with pytest.raises(ConfigError, match=r"feature_set: .*unknown feature spec 'nope'"):
        from moon_rec.ranking.config import RankerConfig

        RankerConfig.from_dict({"feature_set": "nope"})


def test_transforms_fit_on_train_only_and_nulls_need_a_fill() -> None:
    spec = FeatureSpec.from_dict(_spec(
        {"source": "item_attributes:price", "kind": "numeric",
         "transform": ["log1p", "standardise"], "fill": "mean"},
        {"source": "item_attributes:n_clicks", "kind": "numeric", "transform": ["bucketise"],
         "buckets": 2, "fill": 0},
        {"source": "item_attributes:spu_id", "kind": "categorical"},
    ))
    raw = {"price": np.array([0.0, np.nan, 2.0, 1000.0]),
           "n_clicks": np.array([1.0, 5.0, np.nan, 99.0]),
           "spu_id": np.array([3, 7, -1, 50])}
    train = np.array([True, True, True, False])
    fitted = fit_features(spec, raw, train)
    t = fitted.transforms["price"]
    assert t.fill == pytest.approx(1.0)  # mean of the non-null train values 0 and 2
    assert t.mean == pytest.approx(np.mean(np.log1p([0.0, 1.0, 2.0])))  # not the test 1000
    assert fitted.rows["spu_id"] == 9  # train max 7 + 2: the test id 50 is OOV
    ids, dense = fitted.encode(raw)
    assert dense.shape == (4, 1) and dense.dtype == np.float32
    assert ids["spu_id"].tolist() == [3, 7, 8, 8]
    assert ids["n_clicks"].max() < fitted.rows["n_clicks"]
    again = type(fitted).from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert again == fitted

    no_fill = FeatureSpec.from_dict(_spec({"source": "item_attributes:price",
                                           "kind": "numeric"}))
    with pytest.raises(ValueError, match=r"feature price: 1 null values .*no fill rule"):
        fit_features(no_fill, {"price": np.array([1.0, np.nan])}, np.array([True, True]))
    small = FeatureSpec.from_dict(_spec({"source": "item_attributes:spu_id",
                                         "kind": "categorical", "rows": 5}))
    with pytest.raises(ValueError, match=r"feature spu_id: id 7 overflows its vocabulary"):
        fit_features(small, {"spu_id": np.array([1, 7])}, np.array([True, True]))
    hashed = FeatureSpec.from_dict(_spec({"source": "item_attributes:spu_id",
                                          "kind": "categorical", "rows": 5, "hash": True}))
    ids, _ = fit_features(hashed, {"spu_id": np.array([1, 7])},
                          np.array([True, True])).encode({"spu_id": np.array([1, 7, -1])})
    assert ids["spu_id"].tolist() == [1, 3, 4]


def _views(price_type: object = Float64) -> list[FeatureView]:
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    src = FileSource(name="s", path="/tmp/none.parquet", timestamp_field="event_timestamp")
    attrs = FeatureView(name="item_attributes", entities=[item], source=src, schema=[
        Field(name="category_id", dtype=Int64), Field(name="brand_id", dtype=Int64),
        Field(name="price", dtype=price_type)])
    seq = FeatureView(name="user_behaviour", entities=[user], source=src, schema=[
        Field(name="hist_item_ids", dtype=Array(Int64)),
        Field(name="hist_category_ids", dtype=Array(Int64))])
    return [attrs, seq]


def test_store_lacking_a_feature_or_typing_it_otherwise_is_refused_by_name() -> None:
    price = {"source": "item_attributes:price", "kind": "numeric", "fill": 0}
    spec = FeatureSpec.from_dict(_spec(price))
    check_spec(_views(), spec)  # holds
    with pytest.raises(FeatureSpecError, match=r"feature price .*holds it as String"):
        check_spec(_views(String), spec)
    lacking = FeatureSpec.from_dict(_spec({"source": "item_attributes:n_buys",
                                           "kind": "numeric", "fill": 0}))
    with pytest.raises(FeatureSpecError, match=r"feature n_buys .*has no field 'n_buys'"):
        check_spec(_views(), lacking)
    other_view = FeatureSpec.from_dict(_spec({"source": "user_stats:clicks_7d",
                                              "kind": "numeric", "fill": 0}))
    with pytest.raises(FeatureSpecError, match=r"feature clicks_7d .*no feature view 'user_stats'"):
        check_spec(_views(), other_view)
    with pytest.raises(FeatureSpecError, match=r"feature spec 'full': feature spu_id"):
        feature_services(_views(), ["full"])  # the views here have no spu_id
    (svc,) = feature_services(_views(), ["ids"])
    assert svc.name == service_name("ids") == "moon_ids"
    assert service_name("ids+moon") == "moon_ids_plus_moon"


def _with_extras(ranker_data: SyntheticPaths, out: Path, *, null_price: bool = False) -> Path:
    """The synthetic training set plus stored-feature columns (price of the item, SPU)."""
    t = pq.read_table(ranker_data.training_set)
    item = t.column("item_id").to_numpy()
    price = (item % 17).astype(np.float64) * 3.5
    price_col = pa.array(price, pa.float64())
    if null_price:
        price_col = pa.array([None if i % 5 == 0 else p for i, p in enumerate(price)],
                             pa.float64())
    t = t.append_column("price", price_col).append_column(
        "spu_id", pa.array(item // 3, pa.int64()))
    pq.write_table(t, out)
    return out


def _spec_file(path: Path, fill: bool = True) -> Path:
    price = {"source": "item_attributes:price", "kind": "numeric",
             "transform": ["log1p", "standardise"]}
    if fill:
        price["fill"] = "mean"
    path.write_text(yaml.safe_dump(_spec(
        price, {"source": "item_attributes:spu_id", "kind": "categorical"}, name="extras")))
    return path


def test_ranker_trains_on_the_specs_extras_and_reloads_them(
    ranker_data: SyntheticPaths, configs_file: Path, tmp_path: Path
) -> None:
    from moon_rec.ranking.evaluate import evaluate_ranker, load_ranker
    from moon_rec.ranking.train import train_ranker

    ts = _with_extras(ranker_data, tmp_path / "ts.parquet")
    spec = _spec_file(tmp_path / "extras.yaml")
    cfg = load_ranker_config(configs_file, "din_ids_tiny").with_overrides(
        {"feature_set": str(spec), "train": {"epochs": 1}})
    meta = train_ranker(ts, cfg, tmp_path / "m", progress=False)
    assert meta["done"] and meta["features"]["spec"]["name"] == "extras"
    assert set(meta["features"]["transforms"]) == {"price"}
    model, _ = load_ranker(tmp_path / "m")
    tables = model.sparse_arch.embedding_bag_collection.embedding_bag_configs()
    # the spec's tables, from its entries (no brand: the spec names none)
    assert [t.name for t in tables] == ["user", "spu_id", "position", "query_token"]
    assert [t.name for t in model.sparse_arch.embedding_collection.embedding_configs()] == [
        "item", "category"]
    assert model.dense_dim == 1
    report = evaluate_ranker(tmp_path / "m")
    assert 0.5 < report["auc"] <= 1.0


def test_a_null_numeric_without_fill_is_named_before_training(
    ranker_data: SyntheticPaths, configs_file: Path, tmp_path: Path
) -> None:
    from moon_rec.ranking.train import train_ranker

    ts = _with_extras(ranker_data, tmp_path / "ts.parquet", null_price=True)
    spec = _spec_file(tmp_path / "extras.yaml", fill=False)
    cfg = load_ranker_config(configs_file, "din_ids_tiny").with_overrides(
        {"feature_set": str(spec)})
    with pytest.raises(DataError, match=r"feature price: \d+ null values .*no fill rule"):
        train_ranker(ts, cfg, tmp_path / "m", progress=False)
    assert not (tmp_path / "m" / "model.pt").exists()
    # a training set without the spec's columns: named, with the way to build one
    cfg_full = cfg.with_overrides({"feature_set": "full"})
    with pytest.raises(DataError, match=r"no column for feature spu_id of feature spec 'full'"):
        train_ranker(ranker_data.training_set, cfg_full, tmp_path / "m2", progress=False)
    # and from the CLI: an error line, not a traceback
    cfg_yaml = tmp_path / "cfg.yaml"
    cfg_yaml.write_text(yaml.safe_dump(cfg.to_dict()))
    proc = subprocess.run(
        [sys.executable, "-m", "moon_rec.cli", "ranker", "train", "--training-set", str(ts),
         "--config", str(cfg_yaml), "--out", str(tmp_path / "m3"), "--quiet"],
        capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "feature price" in proc.stderr and "Traceback" not in proc.stderr


def test_ids_spec_ranker_ignores_other_columns_and_keeps_its_auc(
    ranker_data: SyntheticPaths, configs_file: Path, tmp_path: Path
) -> None:
    """The loop's training set carries the ``full`` spec's columns: an ``ids`` ranker on it
    is the ranker of the plain training set (same AUC to the last digit), and a spec given
    as a file equal to ``ids`` is ``ids``."""
    from moon_rec.data.feature_spec import SPEC_DIR
    from moon_rec.ranking.evaluate import evaluate_ranker
    from moon_rec.ranking.train import train_ranker

    cfg = load_ranker_config(configs_file, "din_ids_tiny").with_overrides(
        {"train": {"epochs": 1}})
    wide = _with_extras(ranker_data, tmp_path / "wide.parquet")
    train_ranker(ranker_data.training_set, cfg, tmp_path / "plain", progress=False)
    train_ranker(wide, cfg, tmp_path / "wide", progress=False)
    copy = tmp_path / "ids_copy.yaml"
    copy.write_text((SPEC_DIR / "ids.yaml").read_text())
    train_ranker(wide, cfg.with_overrides({"feature_set": str(copy)}), tmp_path / "file",
                 progress=False)
    aucs = {name: evaluate_ranker(tmp_path / name)["auc"] for name in ("plain", "wide", "file")}
    assert aucs["plain"] == aucs["wide"] == aucs["file"], aucs


def test_a_spec_reading_codes_needs_their_sizes(tmp_path: Path) -> None:
    from moon_rec.ranking.config import RankerConfig

    spec = tmp_path / "sid.yaml"
    spec.write_text(yaml.safe_dump(_spec({"source": "item_embedding:semantic_ids",
                                          "kind": "semantic_ids"}, name="sid")))
    with pytest.raises(ConfigError, match=r"semantic_ids: feature spec 'sid' reads semantic-ID"):
        RankerConfig.from_dict({"feature_set": str(spec)})
    cfg = RankerConfig.from_dict({"feature_set": str(spec),
                                  "semantic_ids": {"levels": 2, "codebook": 16}})
    assert cfg.feature_spec().name == "sid"


def test_string_categoricals_get_a_train_vocabulary_or_a_hash() -> None:
    """Tokens (gender, occupation, a zip prefix): the train split's distinct values are
    the vocabulary, anything else (a test-only value, a null) the OOV row."""
    spec = FeatureSpec.from_dict(_spec(
        {"source": "user_attributes:occupation", "kind": "categorical", "dtype": "string"},
        {"source": "user_attributes:zip", "kind": "categorical", "dtype": "string",
         "hash": True, "rows": 9},
    ))
    raw = {"occupation": np.array(["writer", "artist", None, "doctor"], object),
           "zip": np.array(["021", "945", None, "100"], object)}
    fitted = fit_features(spec, raw, np.array([True, True, True, False]))
    assert fitted.vocab["occupation"] == ["artist", "writer"] and fitted.rows["occupation"] == 3
    ids, dense = fitted.encode(raw)
    assert ids["occupation"].tolist() == [1, 0, 2, 2] and dense.shape == (4, 0)
    assert ids["zip"][2] == 8 and (ids["zip"] < 9).all()
    again = type(fitted).from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert again.encode(raw)[0]["occupation"].tolist() == [1, 0, 2, 2]
    small = FeatureSpec.from_dict(_spec({"source": "user_attributes:occupation",
                                         "kind": "categorical", "dtype": "string", "rows": 2}))
    with pytest.raises(ValueError, match=r"feature occupation: 2 distinct values overflow"):
        fit_features(small, raw, np.array([True, True, True, False]))
    with pytest.raises(FeatureSpecError, match=r"feature price: dtype is for categorical"):
        FeatureSpec.from_dict(_spec({"source": "item_attributes:price", "kind": "numeric",
                                     "dtype": "string"}))
    as_token = FeatureSpec.from_dict(_spec({"source": "item_attributes:price",
                                            "kind": "categorical", "dtype": "string"}))
    with pytest.raises(FeatureSpecError, match=r"feature price .*of dtype string takes String"):
        check_spec(_views(), as_token)
    check_spec(_views(String), as_token)


def test_ranker_trains_on_a_string_categorical(
    ranker_data: SyntheticPaths, configs_file: Path, tmp_path: Path
) -> None:
    from moon_rec.ranking.evaluate import evaluate_ranker
    from moon_rec.ranking.train import train_ranker

    t = pq.read_table(ranker_data.training_set)
    users = t.column("user_id").to_numpy()
    segment = pa.array([None if u % 7 == 0 else f"seg{u % 5}" for u in users], pa.string())
    pq.write_table(t.append_column("segment", segment), tmp_path / "ts.parquet")
    spec = tmp_path / "seg.yaml"
    spec.write_text(yaml.safe_dump(_spec({"source": "user_attributes:segment",
                                          "kind": "categorical", "dtype": "string"},
                                         name="seg")))
    cfg = load_ranker_config(configs_file, "din_ids_tiny").with_overrides(
        {"feature_set": str(spec), "train": {"epochs": 1}})
    meta = train_ranker(tmp_path / "ts.parquet", cfg, tmp_path / "m", progress=False)
    assert meta["features"]["vocab"]["segment"] == [f"seg{i}" for i in range(5)]
    assert 0.5 < evaluate_ranker(tmp_path / "m")["auc"] <= 1.0


def test_since_turns_a_stored_time_into_days_before_the_row() -> None:
    spec = FeatureSpec.from_dict(_spec({"source": "user_clicks:user_last_click_ts",
                                        "name": "days_since", "kind": "numeric",
                                        "transform": ["since"], "fill": 365}))
    day = 86_400_000_000.0
    raw = {"days_since": np.array([0.0, 5 * day, np.nan])}
    now = np.array([2 * day, 6 * day, 9 * day])
    fitted = fit_features(spec, raw, np.array([True, True, True]), now)
    _, dense = fitted.encode(raw, now)
    assert dense[:, 0].tolist() == [2.0, 1.0, 365.0]
    with pytest.raises(ValueError, match=r"feature days_since: since needs the rows' times"):
        fitted.encode(raw)
    with pytest.raises(FeatureSpecError, match=r"since is the first step"):
        FeatureSpec.from_dict(_spec({"source": "user_clicks:user_last_click_ts",
                                     "kind": "numeric", "transform": ["log1p", "since"]}))


def test_a_spec_without_brand_trains_and_scores_as_it_serves(
    ranker_data: SyntheticPaths, configs_file: Path, tmp_path: Path
) -> None:
    """The ranker builds itself from the spec: leave brand out and there is no brand table
    (a dataset without brands trains); a request built like serving's scores a training row
    as its training batch does."""
    import torch

    from moon_rec.ranking.data import load_training_set
    from moon_rec.ranking.evaluate import evaluate_ranker, load_ranker
    from moon_rec.ranking.features import request_batch
    from moon_rec.ranking.train import train_ranker

    ids = load_feature_spec("ids").to_dict()
    ids["name"] = "no_brand"
    ids["features"] = [e for e in ids["features"] if e["source"] != "item_attributes:brand_id"]
    spec = tmp_path / "no_brand.yaml"
    spec.write_text(yaml.safe_dump(ids))
    ts = tmp_path / "ts.parquet"  # a training set without the column
    pq.write_table(pq.read_table(ranker_data.training_set).drop(["brand_id"]), ts)
    cfg = load_ranker_config(configs_file, "din_ids_tiny").with_overrides(
        {"feature_set": str(spec), "train": {"epochs": 1}})
    meta = train_ranker(ts, cfg, tmp_path / "m", progress=False)
    assert meta["done"] and "brand" not in meta["tables"]
    model, _ = load_ranker(tmp_path / "m")
    bags = model.sparse_arch.embedding_bag_collection.embedding_bag_configs()
    assert [t.name for t in bags] == ["user", "position", "query_token"]
    assert model.layout.pairs == (("item_id", "hist_item_ids"),
                                  ("category_id", "hist_category_ids"))
    assert 0.5 < evaluate_ranker(tmp_path / "m")["auc"] <= 1.0

    data = load_training_set(ts, cfg.max_seq_len, cfg.query_token_buckets,
                             features=model.features)
    rows = np.flatnonzero(data.hist_lengths > 0)[:5]
    with torch.no_grad():
        want = model(data.batch(rows, None))
        for k, r in enumerate(rows):
            n = int(data.hist_lengths[r])
            sparse_ids, dense = model.features.encode({c: v[r : r + 1]
                                                        for c, v in data.raw.items()})
            got = model(request_batch(
                model.layout, user_id=int(data.user_id[r]), item_ids=data.item_id[r : r + 1],
                targets=data.targets(slice(r, r + 1)),
                sequences={c: v[r, :n] for c, v in data.sequences.items()},
                query_text=data.query_vocab[data.query_code[r]], query_embedding=None,
                query_token_buckets=cfg.query_token_buckets, max_seq_len=cfg.max_seq_len,
                content_dim=0, position=int(data.position[r]), sparse_ids=sparse_ids,
                dense=dense))
            assert torch.allclose(got, want[k : k + 1], atol=1e-6)


def test_a_ranker_directory_of_the_ranker_before_specs_declared_targets_is_refused(
    ranker_data: SyntheticPaths, configs_file: Path, tmp_path: Path
) -> None:
    """A model directory written before id_sequence entries named their target (its spec
    has none): loading it names the file and says to retrain, never a silent mismatch."""
    from moon_rec.ranking.evaluate import load_ranker
    from moon_rec.ranking.train import train_ranker

    cfg = load_ranker_config(configs_file, "din_ids_tiny").with_overrides(
        {"train": {"epochs": 1}})
    train_ranker(ranker_data.training_set, cfg, tmp_path / "m", progress=False)
    meta_path = tmp_path / "m" / "meta.json"
    meta = json.loads(meta_path.read_text())
    for e in meta["features"]["spec"]["features"]:
        e.pop("target", None)
    meta["tables"] = {"user": 9, "item": 9, "category": 9, "brand": 9, "query_token": 9,
                      "position": 9}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(FeatureSpecError, match=r"meta.json: its spec: feature hist_item_ids: .*needs target.*retrained"):
        load_ranker(tmp_path / "m")
