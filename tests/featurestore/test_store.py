"""The feature store on both profiles: apply, chunked materialization, no stale overwrite,
pushes and the online client (embedded always; production with ``-m services``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fs_data import embedding_table, feast_push

from moon_rec.encoders.config import DEFAULT_DIMS as EMBEDDING_DIMS
from moon_rec.featurestore.layout import (
    AGGREGATE_VIEWS,
    ITEM_ATTRIBUTES_VIEW,
    ITEM_EMBEDDING_VIEW,
    ITEM_EXTRA_ATTRIBUTES_VIEW,
    USER_BEHAVIOUR_VIEW,
)


def _write_parts(data: Path, *tables: pa.Table) -> None:
    emb = data / "item_embeddings"
    emb.mkdir(parents=True, exist_ok=True)
    for k, t in enumerate(tables):
        pq.write_table(t, emb / f"part-{k:05d}.parquet", row_group_size=5)


def _vectors(t: pa.Table, dim: int) -> np.ndarray:
    return np.array(t.column(f"emb_{dim}").to_pylist(), dtype=np.float32)


def test_apply_registers_views_with_model_version_tag(make_store: Any) -> None:
    mfs = make_store(model_version="v7")
    views = {v.name: v for v in mfs.store.list_feature_views()}
    # the aggregate views too; item_extra_attributes only with the items' extra columns
    assert set(views) == {ITEM_EMBEDDING_VIEW, ITEM_ATTRIBUTES_VIEW, USER_BEHAVIOUR_VIEW,
                          *AGGREGATE_VIEWS} - {ITEM_EXTRA_ATTRIBUTES_VIEW}
    emb = views[ITEM_EMBEDDING_VIEW]
    assert emb.tags["model_version"] == "v7"
    assert [f.name for f in emb.features] == [
        *(f"emb_{d}" for d in EMBEDDING_DIMS),
        "model_version",
    ]
    assert {p.name for p in mfs.store.list_data_sources()} >= {
        "new_item_embedding_push",
        "new_item_attributes_push",
        "behaviour_push",
    }


def test_chunked_materialization_round_trip(
    make_store: Any, tmp_path: Path, time0: datetime
) -> None:
    from moon_rec.featurestore.materialize import materialize_embeddings
    from moon_rec.featurestore.online import OnlineFeatureClient

    a = embedding_table(list(range(0, 23)), time0, "v1", seed=1)
    b = embedding_table(list(range(23, 40)), time0, "v1", seed=2)
    _write_parts(tmp_path / "data", a, b)
    mfs = make_store(model_version="v1")
    seen: list[int] = []
    report = materialize_embeddings(mfs, batch_rows=7, progress=seen.append)
    assert report.rows == 40 and sum(seen) == 40 and max(seen) <= 7
    assert len(report.files) == 2
    client = OnlineFeatureClient(mfs)
    ids = [39, 0, 5, 1000, 23]
    for d in EMBEDDING_DIMS:
        got = client.item_embeddings(ids, dim=d)
        assert got.found.tolist() == [True, True, True, False, True]
        want = np.concatenate([_vectors(a, d), _vectors(b, d)])[[39, 0, 5, 23]]
        np.testing.assert_array_equal(got.vectors[got.found], want)
        assert not got.vectors[3].any()
    # the materialized interval is recorded, so materialize-incremental continues from it
    fv = mfs.store.get_feature_view(ITEM_EMBEDDING_VIEW)
    assert fv.most_recent_end_time is not None and fv.most_recent_end_time > time0


def test_no_stale_overwrite_by_chunked_writes(
    make_store: Any, tmp_path: Path, time0: datetime, one_us: timedelta
) -> None:
    from moon_rec.featurestore.materialize import materialize_embeddings
    from moon_rec.featurestore.online import OnlineFeatureClient

    new = embedding_table([1, 2, 3], time0 + one_us, "v2", seed=2)
    old = embedding_table([1, 2, 4], time0, "v1", seed=1)
    newest = embedding_table([3], time0 + 2 * one_us, "v3", seed=3)
    mfs = make_store()
    materialize_embeddings(mfs, _parts(tmp_path / "a", new))
    materialize_embeddings(mfs, _parts(tmp_path / "b", old))  # older: must not win
    # one file holding both versions of item 3, the older last: the newer still wins
    materialize_embeddings(
        mfs, _parts(tmp_path / "c", newest, embedding_table([3], time0, "v1", seed=9))
    )
    client = OnlineFeatureClient(mfs, expected_model_version=None)
    got = client.item_embeddings([1, 2, 3, 4], dim=32)
    assert got.model_versions == ["v2", "v2", "v3", "v1"]
    np.testing.assert_array_equal(got.vectors[:2], _vectors(new, 32)[:2])
    np.testing.assert_array_equal(got.vectors[2], _vectors(newest, 32)[0])
    np.testing.assert_array_equal(got.vectors[3], _vectors(old, 32)[2])


def _parts(folder: Path, *tables: pa.Table) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.concat_tables(tables), folder / "part-00000.parquet")
    return folder


def test_no_stale_overwrite_by_pushes_and_feast_materialize(
    make_store: Any, tmp_path: Path, time0: datetime, one_us: timedelta
) -> None:
    from moon_rec.featurestore.online import OnlineFeatureClient
    from moon_rec.featurestore.push import OnlineWriter

    old = embedding_table([1, 2], time0, "v1", seed=1)
    _write_parts(tmp_path / "data", old)  # the offline table holds the OLD version
    mfs = make_store()
    new = embedding_table([1], time0 + one_us, "v2", seed=2)
    writer = OnlineWriter(mfs)
    writer.item_embeddings(new)
    writer.item_embeddings(embedding_table([1], time0, "v1", seed=5))  # a late push
    # Feast's own materialize of the older offline rows must not undo the push either
    mfs.store.materialize(
        time0 - timedelta(days=1), time0 + timedelta(days=1), [ITEM_EMBEDDING_VIEW]
    )
    got = OnlineFeatureClient(mfs).item_embeddings([1, 2], dim=64)
    assert got.model_versions == ["v2", "v1"]
    np.testing.assert_allclose(got.vectors[0], _vectors(new, 64)[0], rtol=0, atol=0)
    np.testing.assert_allclose(got.vectors[1], _vectors(old, 64)[1], rtol=0, atol=0)


def test_model_version_is_checked(make_store: Any, tmp_path: Path, time0: datetime) -> None:
    from moon_rec.featurestore.materialize import materialize_embeddings
    from moon_rec.featurestore.online import ModelVersionMismatch, OnlineFeatureClient

    _write_parts(
        tmp_path / "data", embedding_table([1], time0, "v2"), embedding_table([2], time0, "v1")
    )
    mfs = make_store(model_version="v2")
    materialize_embeddings(mfs)
    client = OnlineFeatureClient(mfs)
    assert client.expected_model_version == "v2"
    assert client.item_embeddings([1], dim=128).found.tolist() == [True]
    with pytest.raises(ModelVersionMismatch, match="item_id 2"):
        client.item_embeddings([1, 2], dim=128)
    got = client.item_embeddings([1, 2], dim=128, on_mismatch="missing")
    assert got.found.tolist() == [True, False]


def test_sequences_attributes_and_fresh_behaviour_push(
    make_store: Any, tmp_path: Path, time0: datetime
) -> None:
    from moon_rec.data.io import write_table
    from moon_rec.featurestore.materialize import materialize_views
    from moon_rec.featurestore.online import OnlineFeatureClient
    from moon_rec.featurestore.push import push_behaviour
    from moon_rec.featurestore.tables import build_item_features, build_user_sequences

    ts = pa.timestamp("us", tz="UTC")
    h = timedelta(hours=1)
    items = pa.table(
        {
            "item_id": [10, 11, 12, 13],
            "category_id": [5, 6, 7, 8],
            "brand_id": [1, 1, 2, 2],
            "spu_id": [1, 2, 3, 4],
            "price": [1.0, 2.0, 3.0, 4.0],
            "launch_ts": pa.array([time0] * 4, ts),
        }
    )
    beh = pa.table(
        {
            "user_id": [1, 1, 2],
            "item_id": [10, 11, 12],
            "ts": pa.array([time0 + h, time0 + 2 * h, time0 + h], ts),
            "action": ["click", "buy", "cart"],
        }
    )
    data = tmp_path / "data"
    write_table(build_user_sequences(beh, items, max_len=3), data / "user_sequences.parquet")
    write_table(build_item_features(items, beh), data / "item_features.parquet")
    mfs = make_store(seq_len=3)
    materialize_views(mfs, [ITEM_ATTRIBUTES_VIEW, USER_BEHAVIOUR_VIEW], end=time0 + 30 * h * 24)
    client = OnlineFeatureClient(mfs)
    attrs = client.item_attributes([12, 99])
    assert attrs["found"].tolist() == [True, False]
    assert attrs["category_id"].tolist() == [7, -1] and attrs["n_carts"][0] == 1
    seq = client.user_sequences([1, 2, 3])
    assert seq.lengths.tolist() == [2, 1, 0]
    assert seq.item_ids[0].tolist() == [11, 10, -1]
    assert seq.actions[0].tolist() == ["buy", "click", ""]
    # fresh behaviour: two new events for user 1 (L = 3 keeps the newest three)
    fresh = pa.table(
        {
            "user_id": [1, 1],
            "item_id": [13, 12],
            "ts": pa.array([time0 + 4 * h, time0 + 3 * h], ts),
            "action": ["click", "cart"],
        }
    )
    assert push_behaviour(mfs, fresh, client=client) == 1
    seq = client.user_sequences([1])
    assert seq.item_ids[0].tolist() == [13, 12, 11]
    assert seq.category_ids[0].tolist() == [8, 7, 6]
    assert seq.actions[0].tolist() == ["click", "cart", "buy"]
    assert (np.diff(seq.ts[0]) < 0).all()


def test_feast_default_sqlite_store_has_the_stale_overwrite_trap(
    tmp_path: Path, time0: datetime, one_us: timedelta
) -> None:
    """Why MoonSqliteOnlineStore exists: Feast's own SQLite store lets an older write win."""
    from moon_rec.featurestore.layout import FeatureDataPaths
    from moon_rec.featurestore.online import OnlineFeatureClient
    from moon_rec.featurestore.store import PROFILE_DIR, open_store

    plain = tmp_path / "plain.yaml"
    plain.write_text(
        (PROFILE_DIR / "embedded.yaml")
        .read_text()
        .replace("type: moon_rec.featurestore.stores.sqlite.MoonSqliteOnlineStore", "type: sqlite")
    )
    mfs = open_store(plain, tmp_path / "state", FeatureDataPaths.from_dir(tmp_path / "data"))
    feast_push(mfs, embedding_table([1], time0 + one_us, "v2"))
    feast_push(mfs, embedding_table([1], time0, "v1"))
    assert OnlineFeatureClient(mfs).item_embeddings([1], dim=32).model_versions == ["v1"]
    mfs.teardown()


@pytest.mark.services
def test_redis_script_respects_rows_written_by_feasts_own_store(
    tmp_path: Path, time0: datetime, one_us: timedelta
) -> None:
    """Our Redis writes compare against Timestamps that Feast's RedisOnlineStore stored."""
    import uuid

    from moon_rec.featurestore.layout import FeatureDataPaths
    from moon_rec.featurestore.online import OnlineFeatureClient
    from moon_rec.featurestore.push import OnlineWriter
    from moon_rec.featurestore.store import PROFILE_DIR, open_store

    project = f"t_{uuid.uuid4().hex[:12]}"
    plain = tmp_path / "plain.yaml"
    plain.write_text(
        (PROFILE_DIR / "production.yaml")
        .read_text()
        .replace("type: moon_rec.featurestore.stores.redis.MoonRedisOnlineStore", "type: redis")
    )
    paths = FeatureDataPaths.from_dir(tmp_path / "data")
    feast_own = open_store(plain, tmp_path / "a", paths, project=project)
    feast_push(feast_own, embedding_table([1, 2], time0 + one_us, "v2"))
    ours = open_store("production", tmp_path / "b", paths, project=project)
    writer = OnlineWriter(ours)
    writer.item_embeddings(embedding_table([1], time0, "v1"))  # older: skipped
    writer.item_embeddings(embedding_table([2], time0 + 2 * one_us, "v3"))  # newer: written
    got = OnlineFeatureClient(ours).item_embeddings([1, 2], dim=32)
    assert got.model_versions == ["v2", "v3"]
    ours.teardown()


def _stored_rows(mfs: Any) -> list[Any]:
    """Every stored row of the embedding view, the project name cut out of Redis keys."""
    from feast.infra.online_stores.sqlite import _table_id

    cfg = mfs.store.config
    online = mfs.store._get_provider().online_store
    fv = mfs.store.get_feature_view(ITEM_EMBEDDING_VIEW)
    if cfg.online_store.type.endswith("MoonSqliteOnlineStore"):
        conn = online._get_conn(cfg)
        name = _table_id(cfg.project, fv, False)
        return list(conn.execute(f'SELECT * FROM "{name}" ORDER BY entity_key, feature_name'))
    client = online._get_client(cfg.online_store)
    project = cfg.project.encode()
    return sorted(
        (k[: -len(project)], sorted(client.hgetall(k).items()))
        for k in client.scan_iter(match=b"*" + project)
    )


def test_bulk_path_writes_what_feasts_write_path_writes(
    make_store: Any, tmp_path: Path, time0: datetime, one_us: timedelta
) -> None:
    """``write_encoded`` (numpy-assembled wire bytes) == ``online_write_batch`` (protobuf
    objects): same stored bytes, same reads through Feast; ids out of key order, repeated
    ids, versions of different lengths (the per-entity path of the Redis writer)."""
    from moon_rec.featurestore.materialize import embedding_encoded

    first = pa.concat_tables(
        [
            embedding_table([300, 2, 70000, -5, 2], time0, "v1", seed=1),
            embedding_table([9], time0 + one_us, "version-22", seed=2),
            embedding_table([300], time0 + 2 * one_us, "v3", seed=3),  # newer, later in batch
            embedding_table([70000], time0 - one_us, "v0", seed=4),  # older, must not win
        ]
    )
    later = embedding_table([2, 9, 11], time0 + one_us, "v1", seed=5)
    stores = []
    for bulk in (True, False):
        mfs = make_store(data_dir=tmp_path / f"d{bulk}")
        online = mfs.store._get_provider().online_store
        fv = mfs.store.get_feature_view(ITEM_EMBEDDING_VIEW)
        for t in (first, later):
            enc = embedding_encoded(t.combine_chunks().to_batches()[0])
            if bulk:
                online.write_encoded(mfs.store.config, fv, enc)
            else:
                online.online_write_batch(mfs.store.config, fv, enc.write_rows(), None)
        stores.append(mfs)
    assert _stored_rows(stores[0]) == _stored_rows(stores[1])
    feats = [f"{ITEM_EMBEDDING_VIEW}:emb_256", f"{ITEM_EMBEDDING_VIEW}:model_version"]
    rows = [{"item_id": i} for i in (300, 2, 70000, -5, 9, 11, 12345)]
    got = [m.store.get_online_features(features=feats, entity_rows=rows).to_dict() for m in stores]
    assert got[0] == got[1]
    assert got[0]["model_version"] == ["v3", "v1", "v1", "v1", "version-22", "v1", None]
    want = _vectors(first, 256)[6]  # item 300's newest row
    np.testing.assert_array_equal(np.array(got[0]["emb_256"][0], dtype=np.float32), want)


def test_a_size_the_code_has_never_seen_materializes_and_reads_back(
    make_store: Any, tmp_path: Path, time0: datetime
) -> None:
    """The snapshot owns its sizes: a snapshot of Matryoshka sizes (24, 48, 96) gets a view
    of those fields, materializes, pushes and reads back online; rows of another size set
    are refused naming the size, never dropped silently."""
    from moon_rec.data.embeddings import (
        EmbeddingSnapshot,
        SnapshotManifest,
        prefixes_of,
    )
    from moon_rec.data.embeddings import (
        embedding_table as snapshot_rows,
    )
    from moon_rec.data.errors import DataError
    from moon_rec.featurestore.materialize import materialize_embeddings
    from moon_rec.featurestore.online import OnlineFeatureClient
    from moon_rec.featurestore.push import OnlineWriter

    dims = (24, 48, 96)
    rng = np.random.default_rng(3)
    full = rng.standard_normal((30, 96)).astype(np.float32)
    rows = snapshot_rows(np.arange(30), prefixes_of(full, dims), "v-new", time0)
    emb_dir = tmp_path / "data" / "item_embeddings"
    _write_parts(tmp_path / "data", rows)
    SnapshotManifest(model_version="v-new", dims=dims, n_items=30, parts=("part-00000.parquet",),
                     part_rows=30).write(emb_dir)
    snap = EmbeddingSnapshot.open(emb_dir)
    assert snap.dims == dims and snap.model_version == "v-new"
    mfs = make_store()
    fv = mfs.store.get_feature_view(ITEM_EMBEDDING_VIEW)
    assert [f.name for f in fv.features] == ["emb_24", "emb_48", "emb_96", "model_version"]
    assert fv.tags["model_version"] == "v-new" and fv.tags["dims"] == "24,48,96"
    assert materialize_embeddings(mfs).rows == 30
    client = OnlineFeatureClient(mfs)
    for d in dims:
        got = client.item_embeddings([4, 29, 77], dim=d)
        assert got.found.tolist() == [True, True, False]
        np.testing.assert_array_equal(got.vectors[:2], prefixes_of(full, dims)[d][[4, 29]])
    new = snapshot_rows([77], prefixes_of(full[:1], dims), "v-new", time0 + timedelta(days=1))
    assert OnlineWriter(mfs).item_embeddings(new) == 1
    assert client.item_embeddings([77], dim=48).found.tolist() == [True]
    wider = rng.standard_normal((1, 192)).astype(np.float32)
    other = snapshot_rows([78], prefixes_of(wider, (24, 48, 96, 192)), "v-new",
                          time0 + timedelta(days=1))
    with pytest.raises(DataError, match="emb_192"):
        OnlineWriter(mfs).item_embeddings(other)


def test_apply_registers_a_feature_service_per_spec_and_refuses_a_bad_one_by_name(
    make_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every spec that fits is served (``moon_ids``, ``moon_full``, ...); a spec asked
    for that names a field the store lacks is refused before anything changes."""
    import yaml

    from moon_rec.data.feature_spec import FeatureSpecError, load_feature_spec

    mfs = make_store()
    services = {s.name: s for s in mfs.store.list_feature_services()}
    assert {"moon_ids", "moon_ids_plus_moon", "moon_full"} <= set(services)
    refs = {f"{p.name}:{f.name}" for p in services["moon_full"].feature_view_projections
            for f in p.features}
    assert "item_attributes:price" in refs and "item_ctr:item_ctr_30d" in refs
    bad = load_feature_spec("ids").model_dump(exclude_defaults=True)
    bad["name"] = "bad"
    bad["features"].append({"source": "item_attributes:n_returns", "kind": "numeric",
                            "fill": 0})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(FeatureSpecError, match=r"feature n_returns .*no field 'n_returns'"):
        mfs.apply([str(path)])
    # among the specs applied by default, one that does not fit is left out, named
    from feast import FeatureView

    from moon_rec.featurestore import services as svc

    known = svc.known_specs()
    monkeypatch.setattr(svc, "known_specs", lambda: [*known, str(path)])
    with pytest.warns(UserWarning, match=r"feature spec 'bad': feature n_returns"):
        served = svc.feature_services(
            o for o in mfs.definitions.objects() if isinstance(o, FeatureView))
    assert "moon_bad" not in {s.name for s in served} and "moon_full" in {s.name for s in served}
