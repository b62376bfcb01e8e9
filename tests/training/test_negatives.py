"""Negative samplers: queue contents, same-category hard negatives, no positive among its
own negatives, all-gather without a process group."""

from __future__ import annotations

import numpy as np
import torch

from moon_rec.training.negatives import (
    CategoryHardNegatives,
    MinedHardNegatives,
    TemporalNegativeQueue,
    gather_with_local_grad,
    same_product_mask,
)


def test_queue_is_fifo_with_ids() -> None:
    q = TemporalNegativeQueue(dim=2, size=4)
    assert len(q) == 0 and q.embeddings().shape == (0, 2)
    e = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    q.push(e[:2], torch.tensor([1, 2]), torch.tensor([10, 20]))
    assert q.item_ids().tolist() == [1, 2]
    q.push(e[2:5], torch.tensor([3, 4, 5]), torch.tensor([30, 40, 50]))
    assert len(q) == 4
    assert q.item_ids().tolist() == [2, 3, 4, 5]  # oldest (1) overwritten
    assert q.spu_ids().tolist() == [20, 30, 40, 50]
    assert torch.equal(q.embeddings(), e[1:5])
    state = q.state_dict()
    again = TemporalNegativeQueue(dim=2, size=4)
    again.load_state_dict(state)
    assert torch.equal(again.embeddings(), q.embeddings())
    q.push(e[:6], torch.arange(6), torch.arange(6))  # more than capacity: keeps the last 4
    assert q.item_ids().tolist() == [2, 3, 4, 5] and torch.equal(q.embeddings(), e[2:6])


def test_queue_is_detached_and_disabled_at_zero() -> None:
    q = TemporalNegativeQueue(dim=2, size=2)
    x = torch.ones(1, 2, requires_grad=True)
    q.push(x * 2, torch.tensor([1]), torch.tensor([1]))
    assert not q.embeddings().requires_grad
    off = TemporalNegativeQueue(dim=2, size=0)
    off.push(x, torch.tensor([1]), torch.tensor([1]))
    assert len(off) == 0


def test_hard_negatives_come_from_the_category_never_the_spu() -> None:
    items = np.arange(100, 120)
    cats = np.repeat([1, 2, 3, 4], 5)
    spus = items // 2  # pairs of variants
    s = CategoryHardNegatives(items, cats, spus)
    rng = np.random.default_rng(0)
    pos = items[::3]
    neg = s.sample(pos, k=3, rng=rng)
    assert neg.shape == (len(pos), 3)
    cat_of = dict(zip(items, cats, strict=True))
    spu_of = dict(zip(items, spus, strict=True))
    for p, row in zip(pos, neg, strict=True):
        for n in row[row >= 0]:
            assert cat_of[n] == cat_of[p]
            assert n != p and spu_of[n] != spu_of[p]
    # a category with fewer candidates than k: padded with -1
    few = s.sample(np.array([100]), k=10, rng=rng)
    assert (few[0] >= 0).sum() == 3 and (few[0][3:] == -1).all()


def test_mined_hard_negatives_are_the_nearest_items() -> None:
    items = np.array([10, 11, 12, 13])
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    nb = MinedHardNegatives.mine(items, emb, k=1, chunk=3)
    assert nb[:, 0].tolist() == [11, 10, 13, 12]  # never itself
    s = MinedHardNegatives(items, MinedHardNegatives.mine(items, emb, k=2))
    neg = s.sample(np.array([10, 12, 99]), k=2, rng=np.random.default_rng(0))
    assert set(neg[0]) == {11, 13} and set(neg[1]) == {13, 11} and (neg[2] == -1).all()


def test_same_product_mask() -> None:
    pos_ids, pos_spu = torch.tensor([1, 2]), torch.tensor([7, 8])
    cand_ids, cand_spu = torch.tensor([1, 2, 3, 1]), torch.tensor([7, 8, 7, 7])
    m = same_product_mask(pos_ids, pos_spu, cand_ids, cand_spu)
    assert m.tolist() == [[True, False, True, True], [False, True, False, False]]
    m = same_product_mask(pos_ids, pos_spu, cand_ids, cand_spu, merge_spu=False)
    assert m.tolist() == [[True, False, False, True], [False, True, False, False]]


def test_gather_without_process_group_is_identity() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    y = gather_with_local_grad(x)
    assert y is x


def test_attribute_negatives_share_the_category_and_the_value() -> None:
    ids = np.arange(1, 9)
    cat = np.array([1, 1, 1, 1, 2, 2, 1, 1])
    spu = np.array([1, 2, 3, 4, 5, 6, 1, 7])
    colour = np.array(["red", "red", "blue", "", "red", "red", "red", "red"])
    s = CategoryHardNegatives.sharing(ids, cat, spu, colour)
    rng = np.random.default_rng(0)
    for _ in range(20):
        got = s.sample(np.array([1, 3]), k=2, rng=rng)
        # item 1: red, category 1, SPU 1 -> only items 2 and 8 (7 is its own SPU)
        assert sorted(got[0].tolist()) == [2, 8]
        assert got[1].tolist() == [-1, -1]  # no other blue item in category 1
