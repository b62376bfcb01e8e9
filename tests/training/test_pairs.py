"""Pair building from a world, and stage 2's data processing."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from moon_rec.training.data import WorldData, load_world
from moon_rec.training.pairs import (
    KIND_NAMES,
    KINDS,
    PairSet,
    build_pairs,
    co_engaged_items,
    dedup_hardest,
    drop_short_texts,
    resample_categories,
    sample_batch,
    session_next_items,
)


@pytest.fixture(scope="module")
def world(tiny_world: Path) -> WorldData:
    return load_world(tiny_world)


def _of(pairs: PairSet, kind: str) -> PairSet:
    return pairs.subset(np.flatnonzero(pairs.kind == KIND_NAMES.index(kind)))


def test_every_kind_is_built_without_leaking_the_test_period(world: WorldData) -> None:
    pairs = build_pairs(world, dict.fromkeys(KINDS, 1.0))
    counts = pairs.counts()
    assert set(counts) == set(KINDS), counts
    # catalog pairs: warm items only, query item == target item
    for k in ("title_image", "aug_product", "aug_image", "attributes_image"):
        p = _of(pairs, k)
        assert world.warm_item_mask[p.target_row].all()
        assert np.array_equal(p.query_ref, p.target_row)
    # user photos: never an evaluation query, the target is the item the photo shows
    for k in ("photo_product", "photo_image", "photo_click"):
        p = _of(pairs, k)
        assert not world.eval_query_mask[p.query_ref].any()
    assert all(world.attributes[r].strip() for r in _of(pairs, "attributes_image").query_ref)
    p = _of(pairs, "photo_product")
    assert np.array_equal(world.query_item_id[p.query_ref], world.item_id[p.target_row])
    # behaviour text pairs: before train_end, the behaviour's own item, non-empty text
    p = _of(pairs, "text_product")
    assert (world.beh_us[p.query_ref] < world.train_end_us).all()
    assert np.array_equal(world.beh_item[p.query_ref], world.item_id[p.target_row])
    assert all(world.beh_text[r].strip() for r in p.query_ref)


def test_actions_and_bought_items(world: WorldData) -> None:
    buys = build_pairs(world, {"text_product": 1.0, "photo_product": 1.0},
                       actions={"buy"}, items_bought_only=True)
    t = _of(buys, "text_product")
    assert len(t) and set(world.beh_action[t.query_ref]) == {"buy"}
    bought = set(world.beh_item[(world.beh_action == "buy") & (world.beh_us < world.train_end_us)])
    assert set(world.item_id[_of(buys, "photo_product").target_row]) <= bought


def test_session_next_items(world: WorldData) -> None:
    rows = np.flatnonzero(world.beh_us < world.train_end_us)
    a, b = session_next_items(world, rows, gap_s=1800)
    assert len(a) > 0 and (a != b).all()
    # every pair is two behaviours of one user at most 30 minutes apart
    by_item_user = {}
    for r in rows:
        by_item_user.setdefault(int(world.beh_user[r]), []).append(
            (int(world.beh_us[r]), int(world.beh_item[r])))
    ok = 0
    for x, y in zip(world.item_id[a][:50], world.item_id[b][:50], strict=True):
        for evs in by_item_user.values():
            evs = sorted(evs)
            if any(e1[1] == x and e2[1] == y and e2[0] - e1[0] <= 1800e6
                   for e1, e2 in itertools.pairwise(evs)):
                ok += 1
                break
    assert ok == min(50, len(a))


def test_dedup_keeps_the_hardest_pair_per_item() -> None:
    pairs = PairSet(kind=np.array([1, 1, 1, 1, 4]), query_ref=np.array([10, 11, 12, 13, 14]),
                    target_row=np.array([5, 5, 6, 6, 5]))
    sims = np.array([0.9, 0.2, 0.5, 0.7, 0.1])
    kept = dedup_hardest(pairs, sims, keep=1)
    assert sorted(kept.query_ref.tolist()) == [11, 12, 14]
    kept2 = dedup_hardest(pairs, sims, keep=2)
    assert sorted(kept2.query_ref.tolist()) == [10, 11, 12, 13, 14]


def test_category_resampling_matches_exposure(world: WorldData) -> None:
    pairs = build_pairs(world, {"aug_product": 1.0})
    rng = np.random.default_rng(0)
    out = resample_categories(world, pairs, 20000, rng)
    cats = world.category_id[out.target_row]
    present = np.unique(world.category_id[pairs.target_row])
    want = np.array([world.exposure.get(int(c), 0.0) for c in present])
    want = want / want.sum()
    got = np.array([(cats == c).mean() for c in present])
    assert np.abs(got - want).max() < 0.02


def test_drop_short_texts(world: WorldData) -> None:
    pairs = build_pairs(world, {"text_product": 1.0, "aug_product": 1.0})
    kept = drop_short_texts(world, pairs, 2)
    t = _of(kept, "text_product")
    assert all(len(world.beh_text[r].split()) >= 2 for r in t.query_ref)
    assert len(_of(kept, "aug_product")) == len(_of(pairs, "aug_product"))


def test_sample_batch_follows_the_mix(world: WorldData) -> None:
    pairs = build_pairs(world, {"aug_product": 1.0, "text_product": 1.0})
    rng = np.random.default_rng(0)
    kinds = np.concatenate([pairs.kind[sample_batch(pairs, {"aug_product": 3.0, "text_product": 1.0}, 64, rng)]
                            for _ in range(20)])
    frac = (kinds == KIND_NAMES.index("aug_product")).mean()
    assert 0.68 < frac < 0.82
    with pytest.raises(ValueError, match="no training pairs"):
        sample_batch(pairs, {"photo_click": 1.0}, 8, rng)


def test_sample_batch_from_few_categories(world: WorldData) -> None:
    pairs = build_pairs(world, {"aug_product": 1.0, "photo_product": 1.0})
    groups = world.category_id[pairs.target_row]
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = sample_batch(pairs, {"aug_product": 1.0, "photo_product": 1.0}, 32, rng,
                           groups=groups, n_groups=2)
        assert len(idx) == 32 and len(np.unique(groups[idx])) <= 2
    idx = sample_batch(pairs, {"aug_product": 1.0}, 32, rng)  # off by default
    assert len(np.unique(groups[idx])) > 2


def test_co_engaged_pairs_are_one_users_items_within_the_window(world: WorldData) -> None:
    rows = np.flatnonzero(world.beh_us < world.train_end_us)
    a, b = co_engaged_items(world, rows, window=3)
    assert len(a) and not np.any(a == b)
    assert len(np.unique(np.stack([a, b], 1), axis=0)) == len(a)  # each pair once
    # every pair: one user engaged with a, then with b at most 3 behaviours later
    order = rows[np.lexsort((world.beh_us[rows], world.beh_user[rows]))]
    seq: dict[int, list[int]] = {}
    for r in order:
        seq.setdefault(int(world.beh_user[r]), []).append(int(world.beh_item[r]))
    want = set()
    for items in seq.values():
        for i, x in enumerate(items):
            for y in items[i + 1: i + 4]:
                if x != y:
                    want.add((x, y))
    got = set(zip(world.item_id[a].tolist(), world.item_id[b].tolist(), strict=True))
    assert got == want
    wider, _ = co_engaged_items(world, rows, window=6)
    assert len(wider) > len(a)
    pairs = build_pairs(world, {"co_engaged": 1.0}, co_engaged_window=3)
    assert len(pairs) == len(a)
    with pytest.raises(ValueError, match="co_engaged_window"):
        co_engaged_items(world, rows, window=0)
