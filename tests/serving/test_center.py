"""The embedding center: lookups, upserts, merges, the model's content and semantic-ID
lookups, refresh."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_store, make_service

from moon_rec.data.errors import DataError
from moon_rec.loop import ServingArtifacts
from serving.center import CenterSemanticIds, EmbeddingCenter


def test_lookup_upsert_and_merge() -> None:
    c = EmbeddingCenter(4, "v1", merge_at=3)
    c.upsert(np.array([5, 3]), np.eye(4)[:2], np.array([1, 2]), np.array([7, 8]))
    vecs, cat, brand, found = c.lookup(np.array([3, 4, 5]))
    assert found.tolist() == [True, False, True]
    assert cat.tolist() == [2, -1, 1] and brand.tolist() == [8, -1, 7]
    assert np.allclose(vecs[0], np.eye(4)[1]) and np.allclose(vecs[1], 0)
    # replacing an item, then a merge into the base (delta reaches merge_at)
    c.upsert(np.array([3, 9, 9]), np.eye(4)[[2, 3, 0]], np.array([4, 5, 6]), np.array([0, 0, 0]))
    assert len(c) == 3 and len(c._snap.delta) == 0
    vecs, cat, _, found = c.lookup(np.array([3, 9]))
    assert found.all() and cat.tolist() == [4, 6]  # the last repeated id wins
    assert np.allclose(vecs, np.eye(4)[[2, 0]])
    ids, all_vecs = c.all_items()
    assert sorted(ids.tolist()) == [3, 5, 9] and all_vecs.shape == (3, 4)
    t, f = c.torch_lookup(torch.tensor([[9, 1], [5, 3]]))
    assert t.shape == (2, 2, 4) and f.tolist() == [[True, False], [True, True]]


def test_codes_follow_their_items() -> None:
    c = EmbeddingCenter(2, "v1", merge_at=4, levels=2)
    c.upsert(np.array([5, 3]), np.eye(2), np.array([1, 2]), np.array([0, 0]),
             np.array([[1, 2], [3, 4]]))
    c.upsert(np.array([7]), np.eye(2)[:1], np.array([1]), np.array([0]))  # no code
    assert c.torch_codes(torch.tensor([3, 7, 9])).tolist() == [[3, 4], [-1, -1], [-1, -1]]
    lookup = CenterSemanticIds(c)
    assert lookup.levels == 2
    assert lookup(torch.tensor([[5, 9]])).tolist() == [[[1, 2], [-1, -1]]]
    # a merge into the base keeps them; a re-written item takes its new code
    c.upsert(np.array([3, 8]), np.eye(2), np.array([2, 2]), np.array([0, 0]),
             np.array([[6, 0], [2, 2]]))
    assert len(c._snap.delta) == 0
    assert lookup(torch.tensor([3, 5, 7, 8])).tolist() == [[6, 0], [1, 2], [-1, -1], [2, 2]]
    with pytest.raises(DataError, match="semantic_ids"):
        c.upsert(np.array([1]), np.eye(2)[:1], np.array([1]), np.array([0]), np.zeros((1, 3)))


def test_refresh_reloads_same_version_and_flags_another(
    serving_loop: ServingArtifacts, tmp_path: Path
) -> None:
    repo = copy_store(serving_loop, tmp_path, embeddings=True)
    service = make_service(serving_loop, repo)
    assert service.refresh() is False  # nothing new
    service.center.upsert(np.array([10**9]), np.ones((1, service.dim)), np.array([1]),
                          np.array([1]))
    manifest = tmp_path / "embeddings" / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "n_embedded": 0}))  # a new snapshot, same version
    assert service.refresh() is True
    assert service.center.lookup(np.array([10**9]))[3][0]  # items added online survive
    manifest.write_text(json.dumps({**m, "model_version": "fedcba987654"}))
    assert service.refresh() is False
    assert service.stale_reason and "fedcba987654" in service.stale_reason
