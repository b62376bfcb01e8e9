"""The DistributedModelParallel model computes what the plain model computes."""

from __future__ import annotations

import copy

import numpy as np
import torch

from moon_rec.data.embeddings import load_moon_embeddings
from moon_rec.ranking.config import load_ranker_config
from moon_rec.ranking.data import load_training_set
from moon_rec.ranking.synthetic import SyntheticPaths
from moon_rec.ranking.train import (
    build_model,
    gather_full_state,
    load_full_state,
    shard_model,
    table_sizes,
)
from moon_rec.runtime import process_group


def test_sharded_matches_unsharded_on_same_weights(
    ranker_data: SyntheticPaths, configs_file
) -> None:
    cfg = load_ranker_config(configs_file, "sim_moon_tiny")
    data = load_training_set(ranker_data.training_set, cfg.max_seq_len, cfg.query_token_buckets)
    emb = load_moon_embeddings(ranker_data.embeddings, cfg.moon_dim)
    data.attach_queries(emb)
    model = build_model(cfg, table_sizes(data, cfg), emb, seed=3)
    plain = copy.deepcopy(model).eval()
    batch = data.batch(np.arange(64), emb.query_vectors)
    with process_group("cpu") as env:
        dmp, optimizer = shard_model(model, cfg, env)
        dmp.eval()
        with torch.no_grad():
            torch.testing.assert_close(dmp(batch), plain(batch), rtol=1e-5, atol=1e-5)
        full = gather_full_state(dmp.state_dict(), env)
        for key, value in plain.state_dict().items():
            torch.testing.assert_close(full[key], value)
        # One step changes the weights; loading the gathered state brings them back.
        dmp.train()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(dmp(batch), batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        moved = gather_full_state(dmp.state_dict(), env)
        key = "sparse_arch.embedding_collection.embeddings.item.weight"
        assert not torch.equal(moved[key], full[key])
        load_full_state(dmp.state_dict(), full)
        dmp.eval()
        with torch.no_grad():
            torch.testing.assert_close(dmp(batch), plain(batch), rtol=1e-5, atol=1e-5)
