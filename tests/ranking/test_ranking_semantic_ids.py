"""Semantic-ID features and the frozen, sharded content table.

- the DMP model (single-process gloo) with semantic-ID tables computes what the plain model
  computes on the same weights;
- the content table receives no updates from optimiser steps (while the ID and
  semantic-ID tables do);
- the unsharded content table gives what the replicated buffer (and so serving's lookup)
  gives;
- an item the ID tables never saw still gets its code's embedding.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from moon_rec.data.embeddings import load_moon_embeddings
from moon_rec.data.errors import DataError
from moon_rec.ranking.config import RankerConfig, load_ranker_config
from moon_rec.ranking.data import load_training_set
from moon_rec.ranking.evaluate import evaluate_ranker, load_ranker
from moon_rec.ranking.item_tables import (
    CONTENT_TABLE,
    FrozenContentTable,
    MoonContentArch,
    SemanticIdTable,
)
from moon_rec.ranking.sparse import SemanticIdArch
from moon_rec.ranking.synthetic import SyntheticPaths
from moon_rec.ranking.train import (
    build_model,
    gather_full_state,
    load_full_state,
    shard_model,
    table_sizes,
    train_ranker,
)
from moon_rec.runtime import process_group

CONTENT_KEY = f"content_arch.embedding_collection.embeddings.{CONTENT_TABLE}.weight"
SID_KEY = "semantic_id_arch.embedding_collection.embeddings.sid_0.weight"
ITEM_KEY = "sparse_arch.embedding_collection.embeddings.item.weight"


def _setup(ranker_data: SyntheticPaths, configs_file: Path, experiment: str):
    cfg = load_ranker_config(configs_file, experiment)
    data = load_training_set(ranker_data.training_set, cfg.max_seq_len, cfg.query_token_buckets)
    emb = load_moon_embeddings(ranker_data.embeddings, cfg.moon_dim)
    data.attach_queries(emb)
    # rows with behaviours (the earliest impressions have none)
    rows = np.flatnonzero(data.hist_lengths > 3)[:64]
    return cfg, data, emb, data.batch(rows, emb.query_vectors)


def test_sharded_semantic_ids_match_unsharded(ranker_data: SyntheticPaths, configs_file) -> None:
    cfg, data, emb, batch = _setup(ranker_data, configs_file, "cube_moon_sid_tiny")
    model = build_model(cfg, table_sizes(data, cfg), emb, seed=5)
    plain = copy.deepcopy(model).eval()
    with process_group("cpu") as env:
        dmp, optimizer = shard_model(model, cfg, env)
        tables = {t for module_plan in dmp.plan.plan.values() for t in module_plan}
        assert {"sid_0", "sid_1", CONTENT_TABLE} <= tables  # sharded by the planner
        dmp.eval()
        with torch.no_grad():
            torch.testing.assert_close(dmp(batch), plain(batch), rtol=1e-5, atol=1e-5)
        full = gather_full_state(dmp.state_dict(), env)
        for key, value in plain.state_dict().items():
            torch.testing.assert_close(full[key], value)
        # train steps move the semantic-ID tables; loading the state brings the model back
        dmp.train()
        for _ in range(2):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(dmp(batch), batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        moved = gather_full_state(dmp.state_dict(), env)
        assert not torch.equal(moved[SID_KEY], full[SID_KEY])
        load_full_state(dmp.state_dict(), full)
        dmp.eval()
        with torch.no_grad():
            torch.testing.assert_close(dmp(batch), plain(batch), rtol=1e-5, atol=1e-5)


def test_frozen_content_table_receives_no_updates(
    ranker_data: SyntheticPaths, configs_file
) -> None:
    cfg, data, emb, batch = _setup(ranker_data, configs_file, "cube_moon_tiny")
    model = build_model(cfg, table_sizes(data, cfg), emb, seed=1)
    snapshot = torch.from_numpy(emb.item_vectors)
    with process_group("cpu") as env:
        dmp, optimizer = shard_model(model, cfg, env)
        kinds = {t: p.sharding_type for m in dmp.plan.plan.values() for t, p in m.items()}
        assert kinds[CONTENT_TABLE] == "row_wise"
        before = gather_full_state(dmp.state_dict(), env)
        torch.testing.assert_close(before[CONTENT_KEY][:-1], snapshot)  # the snapshot's vectors
        dense = optimizer.optimizers[1][1]
        assert not any(CONTENT_TABLE in k for k in dense.params)  # not in Adam
        fused_state = dmp.fused_optimizer.state_dict()["state"]
        assert all(not v for k, v in fused_state.items() if CONTENT_TABLE in k)  # no state
        dmp.train()
        for _ in range(3):
            logits = dmp(batch)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        after = gather_full_state(dmp.state_dict(), env)
    assert torch.equal(after[CONTENT_KEY], before[CONTENT_KEY])
    assert not torch.equal(after[ITEM_KEY], before[ITEM_KEY])  # the ID tables did train
    moved = [k for k in before if k.startswith("behaviour.") and not torch.equal(before[k], after[k])]
    assert moved  # and so did the dense part that reads the content


def test_frozen_table_equals_the_buffer_lookup() -> None:
    ids = torch.tensor([2, 5, 9, 11])
    vectors = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    vectors[1] = 0.0
    table, buffer = FrozenContentTable(ids, vectors), MoonContentArch(ids, vectors)
    for query in (torch.tensor([[5, 3, -1], [11, 2, 9]]), torch.tensor([9]), torch.tensor([[]])):
        (tv, tf), (bv, bf) = table(query.long()), buffer(query.long())
        assert torch.equal(tv, bv) and torch.equal(tf, bf)
    out, _ = table(torch.tensor([[2, 9]]))
    assert not out.requires_grad
    weight = table.embedding_collection.embeddings[CONTENT_TABLE].weight
    assert not weight.requires_grad and weight.shape == (5, 8)


def test_semantic_id_lookup_and_new_items() -> None:
    table = SemanticIdTable(torch.tensor([3, 7, 8]), torch.tensor([[0, 1], [2, 3], [2, 3]]))
    assert table(torch.tensor([[7, 5], [3, -1]])).tolist() == [
        [[2, 3], [-1, -1]], [[0, 1], [-1, -1]]
    ]
    cfg = RankerConfig.from_dict({"embedding_dim": 4, "semantic_ids": {"levels": 2, "codebook": 4}})
    arch = SemanticIdArch(cfg)
    ids = torch.tensor([[7, 8, 3, -1], [8, 5, -1, -1]])
    out = arch(table(ids), torch.tensor([3, 2]))
    assert out.shape == (2, 4, 4)
    # items 7 and 8 share a code: the same vector (what a new item inherits)
    torch.testing.assert_close(out[0, 0], out[0, 1])
    torch.testing.assert_close(out[1, 0], out[0, 0])
    assert torch.count_nonzero(out[0, 3]) == 0 and torch.count_nonzero(out[1, 2:]) == 0
    # an item without a code reads the "no code" rows
    none = arch.embedding_collection.embeddings
    want = none["sid_0"].weight[4] + none["sid_1"].weight[4]
    torch.testing.assert_close(out[1, 1], want)


def test_train_and_evaluate_with_semantic_ids(
    ranker_data: SyntheticPaths, configs_file, tmp_path: Path
) -> None:
    cfg = load_ranker_config(configs_file, "din_sid_tiny").with_overrides({"train": {"epochs": 1}})
    meta = train_ranker(ranker_data.training_set, cfg, tmp_path / "m",
                        embeddings=ranker_data.embeddings, progress=False)
    assert meta["done"] and meta["semantic_id_rows"] == 300
    report = evaluate_ranker(tmp_path / "m")
    assert 0.0 <= report["auc"] <= 1.0
    model, _ = load_ranker(tmp_path / "m")
    assert model.semantic_id_table is not None and model.semantic_id_table.levels == 2


def test_semantic_id_config_errors_are_named(ranker_data: SyntheticPaths, configs_file) -> None:
    cfg, data, emb, _ = _setup(ranker_data, configs_file, "din_sid_tiny")
    tables = table_sizes(data, cfg)
    wrong = cfg.with_overrides({"semantic_ids": {"levels": 3}})
    with pytest.raises(DataError, match=r"semantic_ids\.levels"):
        build_model(wrong, tables, emb, seed=0)
    small = cfg.with_overrides({"semantic_ids": {"codebook": 2}})
    with pytest.raises(DataError, match=r"semantic_ids\.codebook"):
        build_model(small, tables, emb, seed=0)
    emb.semantic_ids = None
    with pytest.raises(DataError, match="no semantic-ID codes"):
        build_model(cfg, tables, emb, seed=0)
