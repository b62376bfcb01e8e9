"""The synthetic world: reproducible, valid, and its signals are real (DESIGN section 4)."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.metrics import roc_auc_score

from moon_rec.data import world as world_mod
from moon_rec.data.errors import DataError
from moon_rec.data.io import read_table, read_world_meta
from moon_rec.data.render import COLORS, PATTERNS
from moon_rec.data.validation import validate_world
from moon_rec.data.world import (
    COLOR_SYNONYMS,
    PATTERN_SYNONYMS,
    build_catalog,
    build_universe,
    generate_world,
    item_texts,
    make_config,
)

TABLE_NAMES = ("items", "image_queries", "users", "behaviors", "impressions", "categories")


def test_world_json_has_the_contract_keys(tiny_world: Path) -> None:
    meta = read_world_meta(tiny_world)
    for key in ("preset", "seed", "n_items", "n_users", "n_impressions", "ctr",
                "n_cold_items_test", "oracle_auc_test", "train_end_ts", "config"):
        assert key in meta, key
    assert meta["preset"] == "tiny" and meta["seed"] == 1
    assert meta["n_items"] == read_table(tiny_world, "items").num_rows
    assert meta["n_impressions"] == read_table(tiny_world, "impressions").num_rows
    assert 0.02 < meta["ctr"] < 0.4
    assert 0.6 < meta["oracle_auc_test"] < 1.0


def test_tiny_world_validates_fully(tiny_world: Path) -> None:
    report = validate_world(tiny_world, full_images=True)
    assert set(report.tables) == set(TABLE_NAMES)


def test_same_seed_same_content_other_seed_differs(tiny_world: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_world(make_config("tiny", 1), again, progress=False)
    for name in TABLE_NAMES:
        assert read_table(again, name).equals(read_table(tiny_world, name)), name
    other = tmp_path / "other"
    generate_world(make_config("tiny", 2, n_requests=300), other, progress=False)
    a = read_table(tiny_world, "items").column("title")
    b = read_table(other, "items").column("title")
    assert not a.equals(b)


def test_killed_generation_resumes_to_identical_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config("tiny", 5, n_items=120, n_requests=900, chunk_requests=300, chunk_items=50)
    whole = tmp_path / "whole"
    generate_world(cfg, whole, progress=False)

    real = world_mod.simulate_requests
    calls = {"n": 0}

    def dies_on_third_chunk(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(world_mod, "simulate_requests", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        generate_world(cfg, resumed, progress=False)
    assert not (resumed / "world.json").exists()
    calls["n"] = 10  # no more deaths
    generate_world(cfg, resumed, progress=False)
    for name in TABLE_NAMES:
        assert read_table(resumed, name).equals(read_table(whole, name)), name
    assert (resumed / "impressions").is_dir()  # several parts: streamed, not one big table


def test_resume_refuses_a_different_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config("tiny", 5, n_items=60, n_requests=200)
    monkeypatch.setattr(world_mod, "summarize", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        generate_world(cfg, tmp_path / "w", progress=False)
    monkeypatch.undo()
    with pytest.raises(DataError, match="another config"):
        generate_world(make_config("tiny", 6, n_items=60, n_requests=200), tmp_path / "w", progress=False)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def test_taste_style_term_matters_more_in_look_driven_categories(tiny_world: Path) -> None:
    imps = read_table(tiny_world, "impressions")
    items = read_table(tiny_world, "items", ["item_id", "category_id"])
    cats = read_table(tiny_world, "categories")
    look_ids = set(pc.filter(cats.column("category_id"), cats.column("look_driven")).to_pylist())
    cat_of = dict(zip(items.column("item_id").to_pylist(), items.column("category_id").to_pylist(), strict=True))
    look = np.array([cat_of[i] in look_ids for i in imps.column("item_id").to_pylist()])
    y = imps.column("clicked").to_numpy()
    p = imps.column("oracle_p_click").to_numpy()
    without_style = _logit(p) - imps.column("oracle_logit_style").to_numpy()
    drop = {}
    for name, mask in (("look", look), ("other", ~look)):
        full = roc_auc_score(y[mask], p[mask])
        drop[name] = full - roc_auc_score(y[mask], without_style[mask])
    assert drop["look"] > 0.05
    assert drop["look"] > 3 * max(drop["other"], 0.0)


def _mentions(texts: list[str], words: tuple[str, ...]) -> np.ndarray:
    return np.array([any(f" {w} " in f" {t.lower()} " for w in words) for t in texts])


@pytest.mark.parametrize("omit_color,omit_pattern", [(0.5, 0.6), (0.0, 1.0), (0.9, 0.1)])
def test_titles_omit_colour_and_pattern_at_the_configured_rates(omit_color: float, omit_pattern: float) -> None:
    cfg = make_config("tiny", 3, n_items=2000, title_omit_color=omit_color, title_omit_pattern=omit_pattern)
    u = build_universe(cfg)
    cat = build_catalog(u)
    titles = [item_texts(u, cat, i)[0] for i in range(cfg.n_items)]
    color_words = [COLOR_SYNONYMS[COLORS[c][0]] for c in cat.color]
    pattern_words = [PATTERN_SYNONYMS[PATTERNS[p]] for p in cat.pattern]
    color_rate = np.mean([_mentions([t], w)[0] for t, w in zip(titles, color_words, strict=True)])
    pattern_rate = np.mean([_mentions([t], w)[0] for t, w in zip(titles, pattern_words, strict=True)])
    tol = 3 * math.sqrt(0.25 / cfg.n_items) + 0.01
    assert abs(color_rate - (1 - omit_color)) < tol
    assert abs(pattern_rate - (1 - omit_pattern)) < tol


def test_clicks_fall_with_position(tiny_world: Path) -> None:
    imps = read_table(tiny_world, "impressions", ["position", "clicked"])
    pos = imps.column("position").to_numpy()
    y = imps.column("clicked").to_numpy()
    ctr = np.array([y[pos == k].mean() for k in range(10)])
    assert ctr[:3].mean() > 1.3 * ctr[-3:].mean()
    assert np.corrcoef(np.arange(10), ctr)[0, 1] < -0.8


def test_test_period_has_cold_items(tiny_world: Path) -> None:
    meta = read_world_meta(tiny_world)
    items = read_table(tiny_world, "items", ["item_id", "launch_ts"])
    imps = read_table(tiny_world, "impressions", ["item_id", "ts"])
    end = pa.scalar(datetime.fromisoformat(meta["train_end_ts"]), pa.timestamp("us", tz="UTC"))
    cold = set(pc.filter(items.column("item_id"), pc.greater_equal(items.column("launch_ts"), end)).to_pylist())
    test_items = set(pc.filter(imps.column("item_id"), pc.greater_equal(imps.column("ts"), end)).to_pylist())
    train_items = set(pc.filter(imps.column("item_id"), pc.less(imps.column("ts"), end)).to_pylist())
    assert cold & test_items, "no cold item is shown in the test period"
    assert not cold & train_items, "a cold item was shown before its launch"
    assert meta["n_cold_items_test"] == len(cold & test_items)


def test_behaviours_follow_clicks_and_spus_group_colour_variants(tiny_world: Path) -> None:
    beh = read_table(tiny_world, "behaviors")
    imps = read_table(tiny_world, "impressions")
    assert beh.num_rows == int(pc.sum(imps.column("clicked")).as_py())
    actions = set(beh.column("action").to_pylist())
    assert actions == {"click", "cart", "buy"}
    items = read_table(tiny_world, "items").to_pandas()
    multi = items.groupby("spu_id").filter(lambda g: len(g) > 1)
    assert len(multi) > 0
    for _, g in multi.groupby("spu_id"):
        assert g["category_id"].nunique() == 1 and g["brand_id"].nunique() == 1
        assert g["oracle_pattern"].nunique() == 1


def test_image_queries_show_their_item(tiny_world: Path) -> None:
    """A user photo is closer (in pixels of the product colour) to its own item's catalog
    photo than to a random item: the queries are re-photographs, not new products."""
    from moon_rec.data.images import decode_image

    items = read_table(tiny_world, "items", ["item_id", "image"])
    queries = read_table(tiny_world, "image_queries", ["item_id", "image"])
    row_of = {i: r for r, i in enumerate(items.column("item_id").to_pylist())}

    def hist(data: bytes) -> np.ndarray:
        img = decode_image(data).astype(np.int32) // 64
        codes = img[..., 0] * 16 + img[..., 1] * 4 + img[..., 2]
        h = np.bincount(codes.ravel(), minlength=64).astype(float)
        return h / h.sum()

    item_h = np.stack([hist(b) for b in items.column("image").to_pylist()])
    hits = 0
    n = 60
    for q in range(n):
        hq = hist(queries.column("image")[q].as_py())
        sims = np.minimum(item_h, hq).sum(1)
        rank = (sims > sims[row_of[queries.column("item_id")[q].as_py()]]).sum()
        hits += rank < 40
    assert hits / n > 0.5


def test_make_config_rejects_bad_settings() -> None:
    with pytest.raises(DataError, match="preset"):
        make_config("huge", 0)
    with pytest.raises(DataError, match="n_items"):
        make_config("tiny", 0, n_items=0)
    with pytest.raises(DataError, match="unknown world setting"):
        make_config("tiny", 0, n_itemz=5)
