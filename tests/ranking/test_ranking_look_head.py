"""The look head: post-trained on history -> next item, it recovers a planted look that the
raw vectors bury under louder dimensions; in the ranker it is frozen while the ranker trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moon_rec.data.embeddings import MoonEmbeddings, load_moon_embeddings
from moon_rec.ranking.config import LookHeadConfig, RankerConfig, load_ranker_config
from moon_rec.ranking.data import load_training_set
from moon_rec.ranking.evaluate import evaluate_ranker, load_ranker
from moon_rec.ranking.look_head import LookHead, behaviour_pairs, pretrain_look_head
from moon_rec.ranking.synthetic import SyntheticPaths
from moon_rec.ranking.train import build_model, pretrain_head, table_sizes, train_ranker


def _planted(seed: int = 0) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """400 items in 2 categories, each with one of 4 looks: a weak look signal (0.3) beside
    loud look-free dimensions (1.0); users engage with one look."""
    rng = np.random.default_rng(seed)
    n, looks = 400, 4
    look = rng.integers(0, looks, n)
    cat = rng.integers(0, 2, n)
    code = np.eye(looks)[look] * 0.3
    noise = rng.normal(0, 1.0, (n, 12))
    vectors = np.concatenate([code, noise, np.eye(2)[cat]], axis=1).astype(np.float32)
    hist, target = [], []
    for _ in range(1500):  # a user of one look: 3 behaviours, then the next item
        items = rng.choice(np.flatnonzero(look == rng.integers(looks)), 4, replace=False)
        hist.append(items[:3])
        target.append(items[3])
    return torch.from_numpy(vectors), look, cat, np.array(hist), np.array(target)


def _centroid_accuracy(z: np.ndarray, look: np.ndarray) -> float:
    half = len(z) // 2
    cents = np.stack([z[:half][look[:half] == k].mean(0) for k in range(4)])
    return float(((z[half:] @ cents.T).argmax(1) == look[half:]).mean())


def test_head_recovers_a_planted_look_and_is_deterministic() -> None:
    from moon_rec.ranking.look_head import BehaviourPairs

    vectors, look, cat, hist, target = _planted()
    pairs = BehaviourPairs(hist.astype(np.int64), target.astype(np.int64))
    cfg = LookHeadConfig(dim=8, hidden=32, epochs=30, batch_size=256, lr=3e-3, negatives=4)
    raw = vectors.numpy() / np.linalg.norm(vectors.numpy(), axis=1, keepdims=True)
    heads = []
    for _ in range(2):
        head = LookHead(vectors.shape[1], cfg)
        stats = pretrain_look_head(head, vectors, pairs, cat, cfg, seed=3)
        heads.append(head)
    assert stats["pairs"] == 1500 and stats["last_loss"] < stats["first_loss"]
    with torch.no_grad():
        z = heads[0](vectors).numpy()
        assert np.array_equal(z, heads[1](vectors).numpy())  # same seed, same head
        zero = heads[0](torch.zeros(2, vectors.shape[1]))
    assert _centroid_accuracy(z, look) > 0.9 > _centroid_accuracy(raw, look) + 0.2
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    assert torch.equal(zero, torch.zeros(2, 8))  # no vector: no look


def test_behaviour_pairs_keep_clicked_train_rows_with_known_items() -> None:
    ids = np.array([10, 20, 30, 40])
    emb = MoonEmbeddings(item_ids=ids, item_vectors=np.zeros((4, 2), np.float32),
                         query_index={}, query_vectors=np.zeros((0, 2), np.float32),
                         model_version="t", dim=2)
    target = np.array([10, 20, 30, 99, 40, 20])
    hist = np.array([[20, 30, 40], [-1, -1, -1], [10, 99, -1], [10, 20, 30], [20, 10, 30],
                     [30, 40, 10]])
    clicked = np.array([1, 1, 1, 1, 0, 1], np.float32)
    train = np.array([True, True, True, True, True, False])
    pairs = behaviour_pairs(emb, target, hist, clicked, train, history=2)
    # row 1: no history; row 3: unknown target; row 4: not clicked; row 5: test split
    assert pairs.target.tolist() == [0, 2]
    assert pairs.history.tolist() == [[1, 2], [0, -1]]  # most recent 2; unknown 99 -> -1


def test_look_head_needs_moon_vectors() -> None:
    with pytest.raises(ValueError, match="look_head"):
        RankerConfig(feature_set="ids", look_head={"dim": 8})


def test_ranker_trains_with_a_frozen_post_trained_head(
    ranker_data: SyntheticPaths, configs_file: Path, tmp_path: Path
) -> None:
    cfg = load_ranker_config(configs_file, "cube_moon_look_tiny")
    assert cfg.look_head is not None
    meta = train_ranker(ranker_data.training_set, cfg, tmp_path / "m",
                        embeddings=ranker_data.embeddings, progress=False)
    assert meta["look_head"]["pairs"] > 0
    assert meta["look_head"]["last_loss"] < meta["look_head"]["first_loss"]
    # the same post-training on a fresh model gives the head the saved model holds:
    # the ranker's steps never moved it
    data = load_training_set(ranker_data.training_set, cfg.max_seq_len, cfg.query_token_buckets)
    emb = load_moon_embeddings(ranker_data.embeddings, cfg.moon_dim)
    fresh = build_model(cfg, table_sizes(data, cfg), emb, cfg.train.seed, data)
    pretrain_head(fresh, data, emb, cfg.train.seed)
    model, _ = load_ranker(tmp_path / "m")
    assert model.look_head is not None and fresh.look_head is not None
    for (name, saved), (_, want) in zip(model.look_head.state_dict().items(),
                                        fresh.look_head.state_dict().items(), strict=True):
        assert torch.equal(saved, want), name
    assert model.content_dim == cfg.moon_dim  # the raw vectors' size (the query's)
    report = evaluate_ranker(tmp_path / "m", world=ranker_data.world)
    assert report["auc"] > 0.55


def test_on_perfect_look_vectors_a_look_ranker_runs_without_its_head(configs_file: Path) -> None:
    from moon_rec.ranking.compare import _on_style

    look = load_ranker_config(configs_file, "cube_moon_look_tiny")
    assert look.look_head is not None
    style = _on_style(look)
    assert style.look_head is None and style.moon_dim == look.look_head.dim
    assert style.behaviour == look.behaviour and style.train == look.train
    plain = load_ranker_config(configs_file, "cube_moon_tiny")
    assert _on_style(plain) == plain
