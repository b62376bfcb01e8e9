"""One way to build features: a request scored online gives the model the same inputs
(hence the same logit) as the training set's row for that impression."""

from __future__ import annotations

from datetime import UTC

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import TRAIN, WRITE_TOKEN, make_service

from moon_rec.loop import ServingArtifacts


def test_request_batch_matches_the_training_batch(serving_loop: ServingArtifacts) -> None:
    from moon_rec.data.embeddings import load_moon_embeddings
    from moon_rec.ranking.data import load_training_set
    from moon_rec.ranking.features import request_batch

    service = make_service(serving_loop)
    cfg = service.ranker_config
    data = load_training_set(serving_loop.training_set, cfg.max_seq_len, cfg.query_token_buckets,
                             features=service.model.features)
    emb = load_moon_embeddings(serving_loop.embeddings, cfg.moon_dim,
                               queries=serving_loop.query_embeddings)
    data.attach_queries(emb)
    rows = np.flatnonzero((data.hist_lengths > 0) & data.has_query)[:: 97][:20]
    assert len(rows) >= 5
    fitted = service.model.features
    with torch.inference_mode():
        train_logits = service.model(data.batch(rows, emb.query_vectors))
        for k, r in enumerate(rows):
            n = int(data.hist_lengths[r])
            ids, dense = fitted.encode({c: v[r : r + 1] for c, v in data.raw.items()})
            online = request_batch(
                service.model.layout,
                user_id=int(data.user_id[r]),
                item_ids=data.item_id[r : r + 1],
                targets=data.targets(slice(r, r + 1)),
                sequences={c: v[r, :n] for c, v in data.sequences.items()},
                sparse_ids=ids,
                dense=dense,
                query_text=data.query_vocab[data.query_code[r]],
                query_embedding=emb.query_vectors[data.query_rows[r]],
                query_token_buckets=cfg.query_token_buckets,
                max_seq_len=cfg.max_seq_len,
                content_dim=service.model.content_dim,
                position=int(data.position[r]),
            )
            assert torch.allclose(service.model(online), train_logits[k : k + 1], atol=1e-5)
    # and the service's own query embedding is the training one (same encoder)
    text = data.query_vocab[data.query_code[rows[0]]]
    q = service.query_vector(text, None)
    assert q is not None
    assert np.allclose(q, emb.query_vectors[data.query_rows[rows[0]]], atol=1e-4)


def test_full_spec_served_score_equals_the_offline_score(
    serving_loop: ServingArtifacts, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A DIN ranker on the ``full`` spec (price, counts, SPU): (1) a training row scored
    through the request path equals its training batch; (2) the service's score of a
    request equals the model's score of a batch built offline from the feature tables'
    latest rows (what the online store was materialized from) for the same request."""
    from moon_rec.data.feature_spec import FeatureSpecError
    from moon_rec.loop import RANKER_EXPERIMENTS
    from moon_rec.ranking.config import load_ranker_config
    from moon_rec.ranking.data import load_training_set
    from moon_rec.ranking.features import request_batch
    from moon_rec.ranking.train import train_ranker
    from serving.service import RankingService, ServiceConfig

    out = tmp_path_factory.mktemp("full") / "ranker"
    cfg = load_ranker_config(RANKER_EXPERIMENTS, "din_full_tiny").with_overrides(TRAIN)
    train_ranker(serving_loop.training_set, cfg, out, embeddings=serving_loop.embeddings,
                 progress=False)
    service = RankingService(out, serving_loop.repo, encoder=serving_loop.encoder,
                             config=ServiceConfig(refresh_s=0, write_token=WRITE_TOKEN))
    try:
        model, fitted = service.model, service.model.features
        assert fitted is not None and fitted.spec.name == "full"
        assert service.info()["feature_spec"] == "full"
        data = load_training_set(serving_loop.training_set, cfg.max_seq_len,
                                 cfg.query_token_buckets, features=fitted)
        rows = np.flatnonzero(data.hist_lengths > 0)[::97][:10]
        with torch.inference_mode():
            train_logits = model(data.batch(rows, None))
            for k, r in enumerate(rows):
                n = int(data.hist_lengths[r])
                assert data.ts_us is not None
                ids, dense = fitted.encode({c: v[r : r + 1] for c, v in data.raw.items()},
                                           data.ts_us[r : r + 1])
                online = request_batch(
                    model.layout,
                    user_id=int(data.user_id[r]), item_ids=data.item_id[r : r + 1],
                    targets=data.targets(slice(r, r + 1)),
                    sequences={c: v[r, :n] for c, v in data.sequences.items()},
                    query_text=data.query_vocab[data.query_code[r]], query_embedding=None,
                    query_token_buckets=cfg.query_token_buckets, max_seq_len=cfg.max_seq_len,
                    content_dim=0, position=int(data.position[r]), sparse_ids=ids, dense=dense)
                assert torch.allclose(model(online), train_logits[k : k + 1], atol=1e-5)

        # (2) one request through the service vs the same request built offline: the
        # spec's features read from the offline store (DuckDB) as of now, as the training
        # set reads them, with the same entity rows
        from datetime import datetime

        from moon_rec.data.io import read_table
        from moon_rec.featurestore.aggregates import with_target_keys
        from moon_rec.featurestore.retrieval import historical_features
        from moon_rec.featurestore.training_set import spec_features

        items = read_table(serving_loop.layout.world, "items",
                           columns=["item_id", "category_id", "brand_id"])
        cands = items.column("item_id").to_numpy()[:7]
        user = int(data.user_id[rows[0]])
        served = service.rank(user, cands.tolist(), query_text="red shoe")
        seq = service.client.user_sequences([user])
        n = int(seq.lengths[0])
        now = datetime.now(UTC)
        entities = with_target_keys(pa.table({
            "user_id": pa.array([user] * 7, pa.int64()), "item_id": pa.array(cands),
            "ts": pa.array([now] * 7, pa.timestamp("us", tz="UTC"))}), items)
        joined = historical_features(service.mfs, entities, spec_features(fitted.spec),
                                     timestamp_column="ts")
        raw = {e.column: joined.column(e.field).to_numpy(zero_copy_only=False)
               .astype(np.int64 if e.kind == "categorical" else np.float64)
               for e in fitted.spec.extras()}
        assert np.isfinite(raw["user_category_share_30d"]).any()  # the aggregates are read
        assert np.isfinite(raw["days_since_last_click"]).any()
        # ``since`` measures to the request's time (the service's clock, milliseconds
        # from this one: a difference far below the tolerance)
        raw |= {c: items.column(c).to_numpy()[:7] for c in ("category_id", "brand_id")}
        ids, dense = fitted.encode(raw, np.full(7, now.timestamp() * 1e6))
        offline = request_batch(
            model.layout,
            user_id=user, item_ids=cands, targets={"category_id": raw["category_id"]},
            sequences={"hist_item_ids": seq.item_ids[0, :n],
                       "hist_category_ids": seq.category_ids[0, :n]},
            query_text="red shoe", query_embedding=None,
            query_token_buckets=cfg.query_token_buckets, max_seq_len=cfg.max_seq_len,
            content_dim=0, sparse_ids=ids, dense=dense)
        with torch.inference_mode():
            expected = torch.sigmoid(model(offline)).numpy()
        assert np.allclose(served.scores, expected, atol=1e-6)
    finally:
        service.close()

    # a store whose registry lacks a spec feature is refused at start, naming it
    meta_path = out / "meta.json"
    import json

    meta = json.loads(meta_path.read_text())
    meta["features"]["spec"]["features"].append(
        {"source": "item_attributes:n_returns", "kind": "numeric", "fill": 0.0})
    meta["features"]["transforms"]["n_returns"] = {"name": "n_returns", "steps": [],
                                                   "fill": 0.0}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(FeatureSpecError, match=r"feature n_returns .*has no field 'n_returns'"):
        RankingService(out, serving_loop.repo, encoder=serving_loop.encoder,
                       config=ServiceConfig(refresh_s=0, write_token=WRITE_TOKEN))


def test_spec_reads_each_entity_once_and_cache_items_the_store_holds(
    serving_loop: ServingArtifacts,
) -> None:
    """The full spec's online reads: the same values with and without the item cache;
    two store reads (items; the user-keyed views), each distinct entity row once; a cached item is not read again; an item the
    store does not hold is never cached (a later write is read at once)."""
    from moon_rec.data.feature_spec import load_feature_spec
    from moon_rec.data.io import read_table
    from moon_rec.featurestore.online import SpecFeatureReader

    service = make_service(serving_loop)
    try:
        spec = load_feature_spec("full")
        calls: list[tuple[list[str], list[dict[str, int]]]] = []
        real = service.client.online_rows

        def counting(refs: list[str], rows: list[dict[str, int]]) -> dict[str, list]:
            calls.append((refs, rows))
            return real(refs, rows)

        service.client.online_rows = counting  # type: ignore[method-assign]
        items = read_table(serving_loop.layout.world, "items",
                           columns=["item_id", "category_id", "brand_id"])
        ids = items.column("item_id").to_numpy()[:6].tolist()
        cats = items.column("category_id").to_numpy()[:6].tolist()
        brands = items.column("brand_id").to_numpy()[:6].tolist()
        absent = 10**9
        cands, c, b = [*ids, *ids[:2], absent], [*cats, *cats[:2], 0], [*brands, *brands[:2], 0]
        user = 1
        plain = SpecFeatureReader(service.client, spec, item_cache_s=0).read(user, cands, c, b)
        calls.clear()
        reader = SpecFeatureReader(service.client, spec, item_cache_s=3600)
        first = reader.read(user, cands, c, b)
        for col in plain:
            np.testing.assert_array_equal(first[col], plain[col])
        assert np.isfinite(first["price"][:6]).all() and np.isnan(first["price"][-1])
        item_rows = [rows for refs, rows in calls if "item_id" in rows[0]]
        assert [r["item_id"] for r in item_rows[0]] == [*ids, absent]  # distinct, once
        user_rows = [rows for refs, rows in calls if "user_id" in rows[0]]
        assert len(user_rows) == 1  # user, user x category, user x brand: one read
        assert len(user_rows[0]) == len(set(zip(c, b, strict=True)))
        calls.clear()
        again = reader.read(user, cands, c, b)
        for col in plain:
            np.testing.assert_array_equal(again[col], plain[col])
        item_rows = [rows for refs, rows in calls if "item_id" in rows[0]]
        assert [r["item_id"] for r in item_rows[0]] == [absent]  # only the uncached one
    finally:
        service.close()
