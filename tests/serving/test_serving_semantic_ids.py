"""Semantic IDs end to end in serving (issue 15): ``POST /items`` codes a new item with
the quantiser the embed job saved beside the snapshot (the code sits in the item's online
row, with its vectors), and a ranker trained with semantic IDs (``din_sid``,
``cube_moon_sid``) serves: the target's and the behaviours' codes come from the center,
new items included, and the scores are those of an offline batch of the same inputs.
A quantiser of another model_version, a missing one, or codes that do not fit the ranker
refuse the start, naming the file."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from conftest import AUTH, TRAIN, WRITE_TOKEN, b64, copy_store

from moon_rec.data.images import encode_png
from moon_rec.loop import ServingArtifacts

# the serving loop's snapshot is coded by the embed job's default quantiser: 3 x 256
SID = {"semantic_ids": {"levels": 3, "codebook": 256}}


@pytest.fixture(scope="module", params=["din_sid_tiny", "cube_moon_sid_tiny"])
def sid_ranker(
    request: pytest.FixtureRequest, serving_loop: ServingArtifacts,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A semantic-ID ranker trained (one short epoch) on the serving loop's data."""
    from moon_rec.loop import RANKER_EXPERIMENTS
    from moon_rec.ranking.config import load_ranker_config
    from moon_rec.ranking.train import train_ranker

    config = load_ranker_config(RANKER_EXPERIMENTS, request.param).with_overrides(
        {**SID, **TRAIN}
    )
    out = tmp_path_factory.mktemp(request.param) / "ranker"
    train_ranker(serving_loop.training_set, config, out, embeddings=serving_loop.embeddings,
                 query_embeddings=serving_loop.query_embeddings, progress=False,
                 resume=False, device="cpu")
    return out


def _service(loop: ServingArtifacts, ranker: Path, repo: Path) -> Any:
    from serving.service import RankingService, ServiceConfig

    return RankingService(ranker, repo, encoder=loop.encoder,
                          config=ServiceConfig(refresh_s=0, sync_s=0, health_s=0,
                                                write_token=WRITE_TOKEN))


@pytest.fixture(scope="module")
def sid_live(
    sid_ranker: Path, serving_loop: ServingArtifacts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, Any, Path]]:
    """The sid ranker served over HTTP from its own copy of the store and snapshot:
    (client, service, repo folder)."""
    from serving.app import create_app
    from serving.server import BackgroundServer

    repo = copy_store(serving_loop, tmp_path_factory.mktemp("sid_store"), embeddings=True)
    service = _service(serving_loop, sid_ranker, repo)
    with BackgroundServer(create_app(service)) as url, httpx.Client(
        base_url=url, timeout=60, headers=AUTH
    ) as client:
        yield client, service, repo
    service.close()


def _item_body(item_id: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    img = encode_png(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return {"item_id": item_id, "title": "emerald striped tote bag", "image": b64(img),
            "category_id": 3, "brand_id": 4}


def _offline_scores(service: Any, ranker: Path, extra: dict[int, tuple[np.ndarray, np.ndarray]],
                    batch: Any) -> np.ndarray:
    """Click probabilities of ``batch`` from the ranker loaded the way evaluation loads it,
    over the snapshot's vectors and codes (plus ``extra``: item -> (vector, code))."""
    from moon_rec.data.embeddings import load_moon_embeddings
    from moon_rec.ranking.evaluate import load_ranker
    from moon_rec.ranking.item_tables import MoonContentArch, SemanticIdTable

    emb = load_moon_embeddings(service.mfs.paths.embeddings_dir(), service.dim)
    assert emb.semantic_ids is not None
    ids, vecs, codes = emb.item_ids, emb.item_vectors, emb.semantic_ids
    if extra:
        ids = np.concatenate([ids, np.array(list(extra), np.int64)])
        vecs = np.concatenate([vecs, np.stack([v for v, _ in extra.values()])])
        codes = np.concatenate([codes, np.stack([c for _, c in extra.values()])])
    order = np.argsort(ids)
    t_ids = torch.from_numpy(ids[order])
    content = (MoonContentArch(t_ids, torch.from_numpy(vecs[order]))
               if service.ranker_config.uses_moon else None)
    table = SemanticIdTable(t_ids, torch.from_numpy(codes[order].astype(np.int32)))
    model, _ = load_ranker(ranker, content=content, semantic_ids=table)
    with torch.inference_mode():
        return torch.sigmoid(model(batch)).numpy().astype(np.float64)


def _request_batch(service: Any, user: int, cands: list[int], query: str) -> Any:
    """The batch ``RequestRanker.rank`` builds for this request (same store reads)."""
    from moon_rec.ranking.features import request_batch

    ids = np.asarray(cands, np.int64)
    cat, brand, found = service.catalog.ensure_items(ids)
    assert found.all()
    seq = service.client.user_sequences([user])
    n = int(seq.lengths[0])
    cfg = service.ranker_config
    sparse_ids, dense = service.model.features.encode({"category_id": cat, "brand_id": brand})
    return request_batch(
        service.model.layout,
        user_id=user, item_ids=ids, targets={"category_id": cat},
        sequences={"hist_item_ids": seq.item_ids[0, :n],
                   "hist_category_ids": seq.category_ids[0, :n]},
        sparse_ids=sparse_ids, dense=dense, query_text=query, query_embedding=service.query_vector(query, None),
        query_token_buckets=cfg.query_token_buckets, max_seq_len=cfg.max_seq_len,
        content_dim=service.model.content_dim,
    )


def test_new_item_gets_the_quantisers_code_and_is_ranked(
    sid_live: tuple[httpx.Client, Any, Path], sid_ranker: Path, world_ids: dict[str, Any]
) -> None:
    from moon_rec.retrieval.semantic_ids import load_semantic_ids

    client, service, _ = sid_live
    snapshot = service.mfs.paths.embeddings_dir()
    quantiser = load_semantic_ids(snapshot)
    levels = quantiser.levels
    assert service.center.levels == levels == 3
    assert service.info()["semantic_ids"]["model_version"] == service.embedding_version

    # the snapshot's items serve the codes training read, with the scores evaluation gives
    user, cands = world_ids["user"], world_ids["items"][:8]
    r = client.post("/rank", json={"user_id": user, "query_text": "tote bag",
                                   "item_ids": cands})
    assert r.status_code == 200, r.text
    batch = _request_batch(service, user, cands, "tote bag")
    assert np.allclose(r.json()["scores"], _offline_scores(service, sid_ranker, {}, batch),
                       atol=1e-5)

    # a new item: its code is the quantiser's encode of its vector, in the online row
    new_id = max(world_ids["items"]) + 2000 + levels
    r = client.post("/items", json=_item_body(new_id, seed=5))
    assert r.status_code == 200, r.text
    code = r.json()["semantic_ids"]
    online = service.client.item_embeddings([new_id], dim=max(service.encoder.dims),
                                            levels=levels)
    assert online.found[0] and online.codes is not None
    expected = quantiser.encode_codes(online.vectors)
    assert code == online.codes[0].tolist() == expected[0].tolist()
    assert service.center.torch_codes(torch.tensor([new_id]))[0].tolist() == code

    # rank a request with the new item as a candidate and as a behaviour
    r = client.post("/behaviors", json={"user_id": user, "item_id": new_id, "action": "buy"})
    assert r.status_code == 200, r.text
    cands = [new_id, *world_ids["items"][:7]]
    r = client.post("/rank", json={"user_id": user, "query_text": "tote bag",
                                   "item_ids": cands})
    assert r.status_code == 200, r.text
    served = np.array(r.json()["scores"])
    vec = service.center.lookup(np.array([new_id]))[0][0]
    batch = _request_batch(service, user, cands, "tote bag")
    assert int(batch.sequence["hist_item_ids"].values()[0]) == new_id  # most recent first
    offline = _offline_scores(service, sid_ranker, {new_id: (vec, np.array(code))}, batch)
    assert np.allclose(served, offline, atol=1e-5)
    # without its code the offline ranker scores the new item differently: codes count
    no_code = _offline_scores(service, sid_ranker, {new_id: (vec, np.full(levels, -1))}, batch)
    assert abs(no_code[0] - served[0]) > 1e-6

    # another code for the same vector moves the new item's score
    other = (np.array(code) + 1) % quantiser.codebook
    cat, brand, _ = service.catalog.ensure_items(np.array([new_id]))
    service.catalog.upsert(np.array([new_id]), vec[None, :], cat, brand, other[None, :])
    moved = service.rank(user, cands, query_text="tote bag").scores
    assert abs(moved[0] - served[0]) > 1e-6


def test_another_process_reads_the_code_from_the_store(
    sid_live: tuple[httpx.Client, Any, Path], sid_ranker: Path, serving_loop: ServingArtifacts,
    world_ids: dict[str, Any],
) -> None:
    client, service, repo = sid_live
    new_id = max(world_ids["items"]) + 3000
    r = client.post("/items", json=_item_body(new_id, seed=6))
    assert r.status_code == 200, r.text
    code = r.json()["semantic_ids"]
    # a second service on the same store: the item comes from the change log, with its code
    other = _service(serving_loop, sid_ranker, repo)
    try:
        assert other.center.torch_codes(torch.tensor([new_id]))[0].tolist() == code
        user = world_ids["short_user"]  # (the other test re-coded an item of "user"'s)
        assert np.allclose(other.rank(user, [new_id]).scores, service.rank(user, [new_id]).scores,
                           atol=1e-6)
    finally:
        other.close()


def test_refuses_a_quantiser_that_does_not_fit(
    serving_loop: ServingArtifacts, sid_ranker: Path, tmp_path: Path
) -> None:
    from moon_rec.retrieval.semantic_ids import SEMANTIC_IDS_FILE, load_semantic_ids
    from serving.errors import VersionMismatch

    repo = copy_store(serving_loop, tmp_path, embeddings=True)
    file = tmp_path / "embeddings" / SEMANTIC_IDS_FILE
    good = load_semantic_ids(file)

    replace(good, model_version="0123456789ab").save(file)
    with pytest.raises(VersionMismatch, match=r"refusing to start.*semantic_ids\.npz.*"
                       r"0123456789ab"):
        _service(serving_loop, sid_ranker, repo)

    good.save(file)
    narrow = tmp_path / "narrow"
    shutil.copytree(sid_ranker, narrow)
    meta = json.loads((narrow / "meta.json").read_text())
    meta["config"]["semantic_ids"]["codebook"] = 16
    (narrow / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(VersionMismatch, match=r"semantic_ids\.codebook 16"):
        _service(serving_loop, narrow, repo)

    # a refreshed snapshot whose quantiser is of another version is not loaded
    service = _service(serving_loop, sid_ranker, repo)
    try:
        replace(good, model_version="0123456789ab").save(file)
        manifest = tmp_path / "embeddings" / "manifest.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "n_embedded": 0}))
        assert service.refresh() is False
        assert service.stale_reason and SEMANTIC_IDS_FILE in service.stale_reason
        assert service.catalog.quantiser is not None
        assert service.catalog.quantiser.model_version == service.embedding_version
    finally:
        service.close()

    file.unlink()
    with pytest.raises(VersionMismatch, match=r"no quantiser \(semantic_ids\.npz\)"):
        _service(serving_loop, sid_ranker, repo)
