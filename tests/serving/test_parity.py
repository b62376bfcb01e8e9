"""One way to build features: a request scored online gives the model the same inputs
(hence the same logit) as the training set's row for that impression."""

from __future__ import annotations

import numpy as np
import torch
from conftest import make_service

from moon_rec.loop import ServingArtifacts


def test_request_batch_matches_the_training_batch(serving_loop: ServingArtifacts) -> None:
    from moon_rec.data.embeddings import load_moon_embeddings
    from moon_rec.ranking.data import load_training_set
    from moon_rec.ranking.features import request_batch

    service = make_service(serving_loop)
    cfg = service.ranker_config
    data = load_training_set(serving_loop.training_set, cfg.max_seq_len, cfg.query_token_buckets)
    emb = load_moon_embeddings(serving_loop.embeddings, cfg.moon_dim,
                               queries=serving_loop.query_embeddings)
    data.attach_queries(emb)
    rows = np.flatnonzero((data.hist_lengths > 0) & data.has_query)[:: 97][:20]
    assert len(rows) >= 5
    with torch.inference_mode():
        train_logits = service.model(data.batch(rows, emb.query_vectors))
        for k, r in enumerate(rows):
            n = int(data.hist_lengths[r])
            online = request_batch(
                user_id=int(data.user_id[r]),
                item_ids=data.item_id[r : r + 1],
                category_ids=data.category_id[r : r + 1],
                brand_ids=data.brand_id[r : r + 1],
                hist_item_ids=data.hist_item_ids[r, :n],
                hist_category_ids=data.hist_category_ids[r, :n],
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
