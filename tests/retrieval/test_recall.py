"""Recall computed correctly on constructed cases; `moon eval recall` end to end on tiny."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moon_rec.cli import main
from moon_rec.encoders import EncoderConfig, MoonTokenizer, build_encoder
from moon_rec.retrieval import ExactIndex, ImageSearchRecall, color_histogram, recall_at_k
from moon_rec.retrieval.recall import category_probe, next_item_queries, next_item_recall
from moon_rec.training.data import WorldData


def test_recall_at_k_by_hand() -> None:
    ranked = np.array([[5, 2, 3], [3, 1, 2], [9, 8, 7]])
    truth = np.array([5, 2, 1])
    r = recall_at_k(ranked, truth, (1, 2, 3))
    assert r == {"recall@1": pytest.approx(1 / 3), "recall@2": pytest.approx(1 / 3),
                 "recall@3": pytest.approx(2 / 3)}


def test_exact_index_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(50, 16)).astype(np.float32)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    ids = np.arange(1000, 1050)
    scores, got = ExactIndex(items, ids).search(queries, 5)
    n = items / np.linalg.norm(items, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    want = ids[np.argsort(-(qn @ n.T), axis=1)[:, :5]]
    assert np.array_equal(got, want)
    assert np.allclose(scores[:, 0], (qn @ n.T).max(1), atol=1e-5)


def test_image_search_recall_per_matryoshka_dim() -> None:
    """Items 0..3 share their first 2 dims in pairs; only the full vector tells them apart.

    Item embeddings (4 dims): a = [1,0,1,0], b = [1,0,0,1], c = [0,1,1,0], d = [0,1,0,1].
    Queries are the items themselves. At 2 dims, a and b tie (and c and d): faiss breaks
    the tie by row order, so a's query finds a first, b's query finds a first: recall@1 is
    0.5 and recall@2 is 1. At 4 dims every query finds itself: recall@1 = 1.
    """
    emb = np.array([[1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1]], np.float32)
    ids = np.array([10, 11, 12, 13])
    r = ImageSearchRecall(ids, emb, dims=(2, 4), ks=(1, 2))(emb, ids)
    assert r["by_dim"]["2"] == {"recall@1": 0.5, "recall@2": 1.0}
    assert r["by_dim"]["4"] == {"recall@1": 1.0, "recall@2": 1.0}
    assert r["recall@1"] == 1.0  # the top level is the full dim


def test_color_histogram() -> None:
    red = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    red[:, 0] = 255
    h = color_histogram(red, bins=4)
    assert h.shape == (1, 64)
    assert h[0, 3 * 16] == pytest.approx(1.0)  # all mass in (r=3, g=0, b=0)
    assert np.count_nonzero(h) == 1


def test_category_probe_separable() -> None:
    rng = np.random.default_rng(0)
    cat = np.repeat([0, 1, 2], 40)
    emb = np.eye(3)[cat] + 0.05 * rng.normal(size=(120, 3))
    assert category_probe(emb, cat) == 1.0


@pytest.fixture(scope="module")
def untrained_checkpoint(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    tok = MoonTokenizer.train(["red dress", "blue leather boots"], vocab_size=100)
    cfg = EncoderConfig(hidden_size=32, num_heads=2, vision_layers=1, text_layers=1, patch_size=16)
    path = tmp_path_factory.mktemp("ckpt") / "enc"
    build_encoder(cfg, tok).save_pretrained(path)
    return path


def test_eval_recall_cli_json(tiny_world: Path, untrained_checkpoint: Path, capsys) -> None:
    assert main(["eval", "recall", "--world", str(tiny_world), "--checkpoint",
                 str(untrained_checkpoint), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("recall@1", "recall@10", "recall@100", "by_dim", "text_recall@10", "probe_acc",
                "model_version"):
        assert key in r
    assert set(r["by_dim"]) == {"32", "64", "128", "256"}
    assert 0 <= r["recall@1"] <= r["recall@10"] <= r["recall@100"] <= 1
    assert set(r["baselines"]) == {"untrained", "color_histogram"}
    # the untrained baseline is the same architecture at its initial weights: here the
    # checkpoint itself is untrained, so the two agree exactly
    assert r["baselines"]["untrained"]["model_version"] == r["model_version"]
    assert r["baselines"]["untrained"]["recall@10"] == r["recall@10"]
    assert r["n_image_queries"] > 0
    # next-item recall: every world, the colour histogram too (a photo world)
    assert r["n_next_item_targets"] > 0
    for rec in (r, r["baselines"]["color_histogram"]):
        assert 0.0 <= rec["next_item_recall@10"] <= 1.0


def test_eval_recall_bad_checkpoint(tiny_world: Path, tmp_path: Path, capsys) -> None:
    assert main(["eval", "recall", "--world", str(tiny_world), "--checkpoint", str(tmp_path)]) == 2
    assert "error: no MOON encoder checkpoint" in capsys.readouterr().err


def test_text_only_world_reports_image_metrics_as_na(tiny_world: Path, untrained_checkpoint: Path,
                                                     tmp_path: Path, capsys) -> None:
    """The tiny world with its catalog photos removed is a text-only world: image-search
    recall and image-title alignment are "n/a" (None in JSON, same keys), products are
    encoded from title + attributes, text recall and the probe are still computed."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from moon_rec.encoders import MoonEncoder, product_text
    from moon_rec.retrieval.recall import embed_products, evaluate_encoder
    from moon_rec.training.data import load_world

    world = tmp_path / "text_only"
    shutil.copytree(tiny_world, world)
    items = pq.read_table(world / "items.parquet")
    i = items.column_names.index("image")
    pq.write_table(items.set_column(i, items.schema.field("image"),
                                    pa.nulls(items.num_rows, pa.binary())),
                   world / "items.parquet")
    data = load_world(world)
    assert data.text_only
    assert data.product_titles[3] == product_text(data.title[3], data.attributes[3])
    encoder = MoonEncoder.from_pretrained(untrained_checkpoint)
    r = evaluate_encoder(encoder, data)
    assert r["recall@1"] is None and r["recall@10"] is None and r["recall@100"] is None
    assert r["by_dim"] == {d: {"recall@1": None, "recall@10": None, "recall@100": None}
                           for d in ("32", "64", "128", "256")}
    assert r["image_title_align"] is None
    assert isinstance(r["text_recall@10"], float) and 0.0 <= r["text_recall@10"] <= 1.0
    assert 0.0 <= r["probe_acc"] <= 1.0
    assert 0.0 <= r["next_item_recall@10"] <= 1.0
    emb = embed_products(encoder, data.product_titles[:5], None, precision="fp32")
    with torch.no_grad():
        want = encoder.encode_text(data.product_titles[:5]).numpy()
    assert np.allclose(emb, want, atol=1e-6)

    assert main(["eval", "recall", "--world", str(world), "--checkpoint",
                 str(untrained_checkpoint), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recall@10"] is None and out["image_title_align"] is None
    assert out["baselines"]["color_histogram"]["recall@10"] is None
    assert out["baselines"]["color_histogram"]["next_item_recall@10"] is None
    assert main(["eval", "recall", "--world", str(world), "--checkpoint",
                 str(untrained_checkpoint)]) == 0
    assert "n/a" in capsys.readouterr().out


def _world_of(item_emb_ids: list[int], behaviours: list[tuple[int, int, int]],
              train_end: int) -> WorldData:
    """A text-only WorldData of the given items and (user, item, ts) behaviours."""
    n = len(item_emb_ids)
    z = np.zeros(0, np.int64)
    return WorldData(
        root=Path("by-hand"), train_end_us=train_end, image_size=0,
        item_id=np.asarray(item_emb_ids, np.int64), category_id=np.zeros(n, np.int64),
        spu_id=np.asarray(item_emb_ids, np.int64), launch_us=np.zeros(n, np.int64),
        title=[f"item {i}" for i in item_emb_ids], attributes=[""] * n, images=None,
        query_id=z, query_item_id=z, query_us=z,
        query_images=torch.zeros((0, 3, 1, 1), dtype=torch.uint8),
        beh_user=np.array([b[0] for b in behaviours], np.int64),
        beh_item=np.array([b[1] for b in behaviours], np.int64),
        beh_us=np.array([b[2] for b in behaviours], np.int64),
        beh_action=np.array(["click"] * len(behaviours), dtype=object),
        beh_text=[""] * len(behaviours), beh_image_query=np.full(len(behaviours), -1),
        exposure={})


def test_next_item_recall_by_hand() -> None:
    """User 1 liked 10 then 11 before the split and 12 (and 10 again) after: the mean of
    10 and 11 is nearest to 12 among the items it did not like yet (10 and 11 are left
    out; the repeat of 10 is no target). User 2 liked 13, then 15: 14 is nearer than 15.
    User 3 has no test behaviour, user 4 no train behaviour: neither counts."""
    ids = [10, 11, 12, 13, 14, 15]
    emb = np.array([[1, 0, 0], [0.8, 0.6, 0], [0.95, 0.3, 0],
                    [0, 0, 1], [0, 0.3, 0.95], [0, 0.6, 0.8]], np.float32)
    beh = [(1, 10, 1), (1, 11, 2), (1, 12, 200), (1, 10, 201),
           (2, 13, 5), (2, 15, 300), (3, 14, 7), (4, 11, 150)]
    data = _world_of(ids, beh, train_end=100)
    task = next_item_queries(data)
    assert task.n_targets == 2
    assert [t.tolist() for t in task.target_ids] == [[12], [15]]
    assert [data.item_id[h].tolist() for h in task.history_rows] == [[11, 10], [13]]
    assert next_item_recall(task, data.item_id, emb, k=1) == 0.5
    assert next_item_recall(task, data.item_id, emb, k=2) == 1.0
    # history 1: user 1 searches with 11 alone, whose nearest free item is still 12
    assert next_item_queries(data, history=1).history_rows[0].tolist() == [1]
    # no user with behaviours on both sides: n/a
    assert next_item_recall(next_item_queries(_world_of(ids, beh[6:], 100)),
                            data.item_id, emb) is None
