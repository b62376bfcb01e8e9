"""`moon data import logs`: the mapping YAML, stable string ids, extra columns, negative
sampling, and bad inputs named by file, column and row with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from moon_rec.cli import main
from moon_rec.data.errors import DataError
from moon_rec.data.id_map import IdMap
from moon_rec.data.io import read_table, read_world_meta, train_end_us
from moon_rec.data.logs import LogsMapping, import_logs, load_mapping
from moon_rec.data.negatives import NegativeSampling, sample_negatives
from moon_rec.data.validation import validate_world

ITEMS = """sku,name,kind,price,added,colour,stock
A-1,Red dress,dress,19.5,2024-01-01T00:00:00Z,red,3
A-2,Blue dress,dress,21,2024-01-01T00:00:00Z,blue,
B-1,Black boot,boot,50,2024-01-01T00:00:00Z,black,7
B-2,Brown boot,boot,55,,brown,1
C-1,Green hat,hat,9.99,2024-01-01T00:00:00Z,,2
C-2,White hat,hat,12,2024-01-01T00:00:00Z,white,0
A-3,Pink dress,dress,30,2024-01-01T00:00:00Z,pink,1
A-4,Gold dress,dress,90,2024-01-05T00:00:00Z,gold,1
B-3,Grey boot,boot,60,2024-01-01T00:00:00Z,grey,1
B-4,Tan boot,boot,65,2024-01-01T00:00:00Z,tan,1
C-3,Blue hat,hat,8,2024-01-01T00:00:00Z,blue,1
C-4,Red hat,hat,7,2024-01-01T00:00:00Z,red,1
"""
USERS = """cust,joined,age,member
u-aa,2024-01-01T00:00:00Z,31,true
u-bb,2024-01-01T00:00:00Z,,false
u-cc,,45,yes
u-dd,2024-01-01T00:00:00Z,22,
"""


def _log_rows(n_days: int = 20) -> str:
    rng = np.random.default_rng(0)
    users, items = ["u-aa", "u-bb", "u-cc", "u-dd"], ["A-1", "A-2", "B-1", "B-2", "C-1", "C-2"]
    # the other six items are never bought: negatives are never short
    t0 = 1_704_153_600  # 2024-01-02
    lines = ["customer,article,when"]
    for d in range(n_days):
        for u in users:
            if rng.random() < 0.7:
                lines.append(f"{u},{items[rng.integers(0, 4 if d < 10 else 6)]},{t0 + d * 86400 + int(rng.integers(0, 80000))}")
    return "\n".join(lines) + "\n"


def _mapping(tmp: Path, **over: object) -> Path:
    (tmp / "items.csv").write_text(ITEMS)
    (tmp / "users.csv").write_text(USERS)
    (tmp / "log.csv").write_text(_log_rows())
    mapping = {
        "time": {"format": "unix_s"},
        "items": {"path": "items.csv", "columns": {"item_id": "sku", "title": "name",
                                                     "category": "kind", "price": "price",
                                                     "launch_ts": "added"},
                  "attributes": ["colour"], "time": {"format": "iso8601"},
                  "extra": {"colour": "string", "stock": "int64"}},
        "users": {"path": "users.csv", "columns": {"user_id": "cust", "signup_ts": "joined"},
                  "time": {"format": "iso8601"},
                  "extra": {"age": "float64", "member": "bool"}},
        "interactions": {"path": "log.csv", "columns": {"user_id": "customer",
                                                       "item_id": "article", "ts": "when"},
                         "action": "buy"},
        "negatives": {"k": 2, "strategy": "uniform", "seed": 3},
        "look_driven": ["dress"],
    }
    mapping.update(over)
    path = tmp / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path


def _import(mapping: Path, out: Path, *extra: str) -> int:
    return main(["data", "import", "logs", "--mapping", str(mapping), "--out", str(out), *extra])


def test_mapping_yaml_imports_a_valid_world_with_typed_extras(tmp_path: Path) -> None:
    out = tmp_path / "w"
    assert _import(_mapping(tmp_path), out) == 0
    validate_world(out)
    meta = read_world_meta(out)
    items = read_table(out, "items")
    assert items.schema.field("colour").type == pa.string()
    assert items.schema.field("stock").type == pa.int64()
    assert items.column("stock").to_pylist()[1] is None  # empty = null
    assert items.column("attributes").to_pylist()[0] == "colour: red"
    users = read_table(out, "users")
    assert users.schema.field("age").type == pa.float64()
    assert users.column("member").to_pylist() == [True, False, True, None]
    # a missing signup_ts falls back to the user's first interaction
    assert users.column("signup_ts")[2].as_py() is not None
    item_map = IdMap.load(out, "item")
    assert len(item_map) == 12 and item_map.get("A-1") == 0
    cats = read_table(out, "categories")
    assert dict(zip(cats.column("name").to_pylist(), cats.column("look_driven").to_pylist(),
                    strict=True)) == {"boot": False, "dress": True, "hat": False}
    behaviors = read_table(out, "behaviors")
    assert set(behaviors.column("action").to_pylist()) == {"buy"}
    imps = read_table(out, "impressions")
    assert imps.num_rows == 3 * behaviors.num_rows
    assert meta["negatives"]["k"] == 2 and meta["n_impressions"] == imps.num_rows


def test_string_ids_are_stable_across_two_imports(tmp_path: Path) -> None:
    out = tmp_path / "w"
    assert _import(_mapping(tmp_path), out) == 0
    first = {k: IdMap.load(out, k).table().to_pylist() for k in ("user", "item")}
    # a later import with a new user and a new item, listed first
    (tmp_path / "users.csv").write_text(USERS.replace("cust,joined,age,member\n",
                                                      "cust,joined,age,member\nu-zz,,50,no\n"))
    (tmp_path / "items.csv").write_text(ITEMS.replace(
        "colour,stock\n", "colour,stock\nZ-9,New,hat,1,2024-01-01T00:00:00Z,red,1\n"))
    mapping = tmp_path / "mapping.yaml"
    assert _import(mapping, out, "--overwrite") == 0
    second = {k: IdMap.load(out, k).table().to_pylist() for k in ("user", "item")}
    for kind in ("user", "item"):
        assert second[kind][: len(first[kind])] == first[kind]
    assert IdMap.load(out, "user").get("u-zz") == len(first["user"])
    assert IdMap.load(out, "item").get("Z-9") == len(first["item"])


def test_negatives_are_live_never_positive_and_seeded(tmp_path: Path) -> None:
    out = tmp_path / "w"
    assert _import(_mapping(tmp_path), out) == 0
    imps = read_table(out, "impressions").to_pandas()
    items = read_table(out, "items", ["item_id", "launch_ts"]).to_pandas()
    launch = dict(zip(items.item_id, items.launch_ts, strict=True))
    beh = read_table(out, "behaviors").to_pandas()
    positives = set(zip(beh.user_id, beh.item_id, strict=True))
    neg = imps[imps.clicked == 0]
    assert len(neg) > 0
    for row in neg.itertuples():
        assert (row.user_id, row.item_id) not in positives
        assert launch[row.item_id] <= row.ts
    # every request: one positive, k negatives, distinct items, positions 0..k
    for _, req in imps.groupby("request_id"):
        assert req.clicked.sum() == 1 and req.item_id.is_unique
        assert sorted(req.position) == list(range(len(req)))
    # the same seed gives the same impressions (the test negatives are fixed in the world)
    again = tmp_path / "again"
    assert _import(tmp_path / "mapping.yaml", again) == 0
    assert read_table(again, "impressions").equals(read_table(out, "impressions"))
    test = imps[imps.ts.astype("int64") // 1000 >= train_end_us(out) // 1000]
    assert len(test) > 0


def test_negative_sampling_strategies() -> None:
    item_ids = np.arange(10, 20, dtype=np.int64)
    launch = np.array([0] * 5 + [100] * 5, np.int64)
    cat = np.array([1, 2] * 5, np.int64)
    user = np.array([0, 0, 1, 1], np.int64)
    item = np.array([10, 11, 12, 13], np.int64)
    ts = np.array([50, 50, 150, 150], np.int64)
    for strategy in ("uniform", "popularity", "category"):
        spec = NegativeSampling(k=3, strategy=strategy, seed=1)  # type: ignore[arg-type]
        neg = sample_negatives(user, item, ts, item_ids=item_ids, item_launch=launch,
                               item_category=cat, spec=spec)
        again = sample_negatives(user, item, ts, item_ids=item_ids, item_launch=launch,
                                 item_category=cat, spec=spec)
        assert np.array_equal(neg, again)
        for r in range(4):
            got = neg[r][neg[r] >= 0]
            assert len(set(got.tolist())) == got.size
            own = set(item[user == user[r]].tolist())
            assert not own & set(got.tolist())
            assert all(launch[g - 10] <= ts[r] for g in got)
            if strategy == "category":
                assert all(cat[g - 10] == cat[item[r] - 10] for g in got)
    # user 0 at t=50: live items 10..14, positives 10, 11: 3 negatives exist (12, 13, 14)
    neg = sample_negatives(user, item, ts, item_ids=item_ids, item_launch=launch,
                           item_category=cat, spec=NegativeSampling(k=4, seed=0))
    assert sorted(neg[0][neg[0] >= 0].tolist()) == [12, 13, 14] and (neg[0] < 0).sum() == 1


def test_explicit_labels_make_every_row_an_impression(tmp_path: Path) -> None:
    log = "u,i,t,stars\nu-aa,A-1,1704153600,5\nu-aa,A-2,1704153700,2\nu-bb,B-1,1704240000,4\n" \
          "u-cc,C-1,1704300000,1\nu-dd,C-2,1704400000,4\n"
    (tmp_path / "r.csv").write_text(log)
    m = _mapping(tmp_path, negatives=None, interactions={
        "path": "r.csv", "columns": {"user_id": "u", "item_id": "i", "ts": "t", "label": "stars"},
        "label_threshold": 4})
    out = tmp_path / "w"
    assert _import(m, out) == 0
    imps = read_table(out, "impressions")
    assert imps.column("clicked").to_pylist() == [1, 0, 1, 0, 1]
    beh = read_table(out, "behaviors")
    assert beh.num_rows == 3
    assert (beh.column("ts").cast(pa.int64()).to_numpy()
            == imps.filter(pa.compute.equal(imps.column("clicked"), 1)).column("ts")
            .cast(pa.int64()).to_numpy() + 1_000_000).all()


def test_logs_onto_an_imported_catalog_and_other_formats(tmp_path: Path) -> None:
    """Parquet and JSON lines read like CSV; items may come from the catalog in --out."""
    out = tmp_path / "w"
    m = _mapping(tmp_path)
    assert _import(m, out) == 0
    beh = read_table(out, "behaviors")
    pq.write_table(pa.table({"customer": ["u-aa", "u-bb"], "article": ["A-1", "B-1"],
                             "when": pa.array([1704153600_000, 1704240000_000], pa.int64())}),
                   tmp_path / "log.parquet")
    (tmp_path / "log.jsonl").write_text('{"customer": "u-aa", "article": "A-1", "when": '
                                        '"2024-01-02T00:00:00+01:00"}\n')
    raw = yaml.safe_load(m.read_text())
    del raw["items"]
    raw["negatives"] = None
    raw["interactions"]["path"] = "log.parquet"
    raw["time"] = {"format": "unix_ms"}
    (tmp_path / "m2.yaml").write_text(yaml.safe_dump(raw))
    assert _import(tmp_path / "m2.yaml", out, "--overwrite") == 0
    assert read_table(out, "behaviors").num_rows == 2 != beh.num_rows
    assert IdMap.load(out, "item").get("A-1") == read_table(out, "behaviors").column("item_id")[0].as_py()
    raw["interactions"]["path"] = "log.jsonl"
    raw["time"] = {"format": "iso8601"}
    (tmp_path / "m3.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match="split"):  # one interaction cannot be split in time
        import_logs(load_mapping(tmp_path / "m3.yaml"), out, overwrite=True)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


BAD_CASES = [
    # (what to change, file named, column named, row named, words)
    ("items.csv", lambda t: t.replace("sku,", "id,"), "items.csv", "sku", 1, "missing column"),
    ("log.csv", lambda t: t.replace("\nu-bb,", "\nu-bb,A-1,yesterday\nu-bb,", 1), "log.csv",
     "when", None, "expected a number"),
    ("items.csv", lambda t: t.replace("C-2,", "A-2,"), "items.csv", "sku", 7, "duplicate id"),
    ("users.csv", lambda t: t.replace("u-bb,", "u-aa,"), "users.csv", "cust", 3, "duplicate id"),
    ("users.csv", lambda t: t.replace(",45,", ",old,"), "users.csv", "age", 4, "expected a number"),
    ("log.csv", lambda t: t.replace("\nu-bb,", "\nu-xx,", 1), "log.csv", "customer", None,
     "not in the users"),
]


@pytest.mark.parametrize("file,change,named,column,row,words", BAD_CASES,
                         ids=[c[5] + "-" + c[0] for c in BAD_CASES])
def test_bad_input_names_file_column_row_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, change, named: str,
    column: str, row: int | None, words: str,
) -> None:
    mapping = _mapping(tmp_path)
    out = tmp_path / "w"
    assert _import(mapping, out) == 0
    before = _snapshot(out)
    path = tmp_path / file
    path.write_text(change(path.read_text()))
    capsys.readouterr()
    assert _import(mapping, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: column '{column}': ")
    if row is not None:
        assert f": row {row}: " in err
    else:
        assert ": row " in err
    assert words in err
    assert _snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".w.import-")]


def test_unparsable_iso_time_and_naive_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "log.csv").write_text("c,a,w\nu-aa,A-1,2024-01-02T00:00:00Z\nu-bb,B-1,2024-13-45\n")
    m = _mapping(tmp_path, time={"format": "iso8601"}, negatives=None,
                 interactions={"path": "log.csv", "columns": {"user_id": "c", "item_id": "a",
                                                              "ts": "w"}})
    (tmp_path / "log.csv").write_text("c,a,w\nu-aa,A-1,2024-01-02T00:00:00Z\nu-bb,B-1,2024-13-45\n")
    assert _import(m, tmp_path / "w") == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'log.csv'}: column 'w': row 3: not an ISO-8601 time" in err
    (tmp_path / "log.csv").write_text("c,a,w\nu-aa,A-1,2024-01-02T00:00:00Z\nu-bb,B-1,2024-01-03 10:00\n")
    assert _import(m, tmp_path / "w") == 2
    assert "column 'w': row 3: time without a zone" in capsys.readouterr().err
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


def test_negatives_on_a_log_with_impressions_is_an_error(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "imp.csv").write_text("c,a,w,click\nu-aa,A-1,1704153600,1\nu-bb,B-1,1704240000,0\n")
    m = _mapping(tmp_path, interactions=None, impressions={
        "path": "imp.csv", "columns": {"user_id": "c", "item_id": "a", "ts": "w", "clicked": "click"}})
    assert _import(m, tmp_path / "w") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'imp.csv'}: column 'click': ")
    assert "negative sampling asked of a log that already has impressions" in err
    assert not (tmp_path / "w").exists()


def test_mapping_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = _mapping(tmp_path)
    raw = yaml.safe_load(m.read_text())
    raw["items"]["columns"]["colour"] = "colour"
    m.write_text(yaml.safe_dump(raw))
    assert _import(m, tmp_path / "w") == 2
    err = capsys.readouterr().err
    assert f"error: {m}: column 'items.columns'" in err or "unknown column 'colour'" in err
    raw["items"]["columns"].pop("colour")
    raw["users"]["extra"] = {"signup_ts": "int64"}
    m.write_text(yaml.safe_dump(raw))
    assert _import(m, tmp_path / "w") == 2
    assert "contract column" in capsys.readouterr().err


def test_mapping_model_round_trip() -> None:
    m = LogsMapping.model_validate({"interactions": {"path": "x.csv"}})
    assert m.policy("user") == "map" and m.interactions is not None
    assert json.loads(m.model_dump_json())["interactions"]["action"] == "click"


def test_item_photos_and_a_path_outside_the_folder(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (10, 20), (200, 0, 0)).save(photos / "a1.png")
    Image.new("RGB", (10, 20), (0, 0, 200)).save(tmp_path / "secret.png")
    lines = ITEMS.splitlines()
    lines[0] += ",photo"
    lines[1:] = [line + (",a1.png" if i == 0 else ",") for i, line in enumerate(lines[1:])]
    (tmp_path / "items_photo.csv").write_text("\n".join(lines) + "\n")
    m = _mapping(tmp_path, images="photos", image_size=8)
    raw = yaml.safe_load(m.read_text())
    raw["items"]["path"] = "items_photo.csv"
    raw["items"]["columns"]["image"] = "photo"
    raw["items"]["missing_image"] = "null"
    m.write_text(yaml.safe_dump(raw))
    out = tmp_path / "w"
    assert _import(m, out) == 0
    images = read_table(out, "items", ["image"]).column("image").to_pylist()
    assert images[0] is not None and images[1:] == [None] * 11
    before = _snapshot(out)
    (tmp_path / "items_photo.csv").write_text("\n".join(lines).replace("a1.png", "../secret.png") + "\n")
    assert _import(m, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'items_photo.csv'}: column 'photo': row 2: ")
    assert "leads outside" in err
    assert _snapshot(out) == before


def test_jsonl_bad_record_names_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "log.jsonl").write_text(
        '{"c": "u-aa", "a": "A-1", "w": 1704153600}\n\n{"c": "u-bb", "a": "B-1"}\n')
    m = _mapping(tmp_path, negatives=None, interactions={
        "path": "log.jsonl", "columns": {"user_id": "c", "item_id": "a", "ts": "w"}})
    assert _import(m, tmp_path / "w") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'log.jsonl'}: column 'w': row 3: missing field")


def test_behaviour_impression_and_image_query_logs(tmp_path: Path) -> None:
    """Logs that already have impressions and behaviours (with image queries) are taken as
    they are: request ids, positions, clicks, actions, query text and query photos."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("q1.png", "q2.png"):
        Image.new("RGB", (9, 9), (10, 200, 10)).save(photos / name)
    (tmp_path / "queries.csv").write_text(
        "qid,sku,at,file\nq-1,A-1,2024-01-02T10:00:00Z,q1.png\nq-2,B-1,2024-01-05T10:00:00Z,q2.png\n")
    (tmp_path / "imp.csv").write_text(
        "req,cust,sku,at,pos,click,q\n"
        "r1,u-aa,A-1,2024-01-02T10:00:00Z,0,1,red dress\n"
        "r1,u-aa,A-2,2024-01-02T10:00:00Z,1,0,red dress\n"
        "r2,u-bb,B-1,2024-01-03T10:00:00Z,0,0,boots\n"
        "r2,u-bb,B-2,2024-01-03T10:00:00Z,1,1,boots\n"
        "r3,u-cc,C-1,2024-01-06T10:00:00Z,0,1,\n"
        "r3,u-cc,C-2,2024-01-06T10:00:00Z,1,0,\n")
    (tmp_path / "beh.csv").write_text(
        "cust,sku,at,what,q,photo\n"
        "u-aa,A-1,2024-01-02T10:00:01Z,CLICK,red dress,\n"
        "u-aa,A-1,2024-01-02T10:05:00Z,buy,red dress,q-1\n"
        "u-bb,B-2,2024-01-03T10:00:01Z,cart,boots,\n")
    cols = {"user_id": "cust", "item_id": "sku", "ts": "at"}
    m = _mapping(tmp_path, interactions=None, negatives=None, images="photos",
                 time={"format": "iso8601"},
                 ids={"query": "map"},
                 impressions={"path": "imp.csv", "columns": {**cols, "request_id": "req",
                                                             "position": "pos",
                                                             "clicked": "click",
                                                             "query_text": "q"}},
                 behaviors={"path": "beh.csv", "columns": {**cols, "action": "what",
                                                           "query_text": "q",
                                                           "query_image_id": "photo"}},
                 image_queries={"path": "queries.csv", "columns": {"query_id": "qid",
                                                                   "item_id": "sku", "ts": "at",
                                                                   "image": "file"}})
    out = tmp_path / "w"
    assert _import(m, out) == 0
    validate_world(out)
    imps = read_table(out, "impressions")
    assert imps.column("request_id").to_pylist() == [1, 1, 2, 2, 3, 3]
    assert imps.column("clicked").to_pylist() == [1, 0, 0, 1, 1, 0]
    assert imps.column("query_text").to_pylist()[:2] == ["red dress"] * 2
    beh = read_table(out, "behaviors")
    assert beh.column("action").to_pylist() == ["click", "buy", "cart"]
    qmap = IdMap.load(out, "query")
    assert beh.column("query_image_id").to_pylist() == [None, qmap.get("q-1"), None]
    iq = read_table(out, "image_queries")
    assert iq.num_rows == 2 and sorted(iq.column("query_id").to_pylist()) == [0, 1]


def test_logs_onto_a_catalog_from_moon_data_import(tmp_path: Path) -> None:
    """The catalog step first (integer item ids kept), then the logs referring to them."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    lines = ["item_id,title,image,category"]
    for i in range(6):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(photos / f"{i}.png")
        lines.append(f"{100 + i},Item {i},{i}.png,{'dress' if i % 2 else 'hat'}")
    (tmp_path / "catalog.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "w"
    assert main(["data", "import", "--items", str(tmp_path / "catalog.csv"), "--images",
                 str(photos), "--out", str(out)]) == 0
    (tmp_path / "log.csv").write_text("customer,article,when\n" + "".join(
        f"u-{k % 3},{100 + k % 6},{1704153600 + 3600 * k}\n" for k in range(30)))
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({
        "time": {"format": "unix_s"},
        "interactions": {"path": "log.csv", "columns": {"user_id": "customer",
                                                       "item_id": "article", "ts": "when"}},
        "negatives": {"k": 2}}))
    assert _import(tmp_path / "m.yaml", out) == 0
    validate_world(out)
    assert set(read_table(out, "behaviors").column("item_id").to_pylist()) == set(range(100, 106))
    assert read_table(out, "items").column("image").null_count == 0  # the catalog's photos
    assert read_world_meta(out)["catalog"]["n_items"] == 6
    assert not (out / "id_maps" / "item.parquet").exists()
    # the catalog's launch (its import time) is moved back to each item's first sale
    imps = read_table(out, "impressions")
    short = read_world_meta(out)["negatives"]["n_short"]
    assert imps.num_rows == 90 - short and short < 5  # only the first hours lack live items
    launch = read_table(out, "items", ["launch_ts"]).column("launch_ts").to_pylist()
    assert max(launch).year == 2024
