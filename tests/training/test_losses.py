"""Each objective on hand-made inputs with answers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from moon_rec.training.losses import circle_loss, info_nce, matryoshka_loss


def test_info_nce_two_orthogonal_pairs() -> None:
    q = torch.eye(2)
    # logits [[1, 0], [0, 1]] / tau: loss = -log(e^(1/t) / (e^(1/t) + 1)) = log(1 + e^(-1/t))
    for tau in (1.0, 0.5):
        assert info_nce(q, q, temperature=tau).item() == pytest.approx(math.log(1 + math.exp(-1 / tau)))


def test_info_nce_extra_negative_and_mask() -> None:
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    extra = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # candidates: positive (1), extra0 (1), extra1 (0): -log(e / (e + e + 1))
    want = -math.log(math.e / (2 * math.e + 1))
    assert info_nce(q, k, temperature=1.0, extra=extra).item() == pytest.approx(want)
    # extra0 is the positive's own product: masked, no longer a negative
    same = torch.tensor([[True, True, False]])
    want = -math.log(math.e / (math.e + 1))
    assert info_nce(q, k, temperature=1.0, extra=extra, same=same).item() == pytest.approx(want)


def test_info_nce_duplicate_positive_is_not_a_negative() -> None:
    """Two queries with the same target item: each other's key is not a negative."""
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    same = torch.ones(2, 2, dtype=torch.bool)
    assert info_nce(q, k, temperature=0.1, same=same).item() == pytest.approx(0.0, abs=1e-6)
    assert info_nce(q, k, temperature=0.1).item() == pytest.approx(math.log(2))


def test_circle_loss_single_anchor_by_hand() -> None:
    m, gamma = 0.25, 1.0
    sp, sn = 0.8, 0.3
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[sp, math.sqrt(1 - sp**2)]])
    neg = torch.tensor([[sn, math.sqrt(1 - sn**2)]])
    ap, an = 1 + m - sp, sn + m  # 0.45, 0.55
    want = math.log1p(math.exp(gamma * an * (sn - m) - gamma * ap * (sp - (1 - m))))
    got = circle_loss(q, k, margin=m, gamma=gamma, extra=neg).item()
    assert got == pytest.approx(want, rel=1e-5)


def test_circle_loss_prefers_separated_pairs() -> None:
    good = circle_loss(torch.eye(3), torch.eye(3))
    bad = circle_loss(torch.eye(3), F.normalize(torch.ones(3, 3) + 0.01 * torch.eye(3), dim=1))
    assert good.item() < bad.item()


def test_matryoshka_loss_is_the_sum_over_renormalised_prefixes() -> None:
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    k = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    dims = (2, 4, 8)
    want = sum(w * info_nce(F.normalize(q[:, :d], dim=1), F.normalize(k[:, :d], dim=1), temperature=0.1)
               for d, w in zip(dims, (1.0, 0.5, 2.0), strict=True))
    got = matryoshka_loss(q, k, dims, info_nce, weights=(1.0, 0.5, 2.0), temperature=0.1)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_matryoshka_small_prefix_that_cannot_tell_items_apart() -> None:
    """Keys identical in their first 2 dims: the 2-dim loss is log(B) (uniform softmax)."""
    q = torch.tensor([[1.0, 0, 1, 0], [1.0, 0, 0, 1]])
    k = q.clone()
    at2 = matryoshka_loss(q, k, (2,), info_nce, temperature=1.0)
    assert at2.item() == pytest.approx(math.log(2))
    at4 = matryoshka_loss(q, k, (4,), info_nce, temperature=0.1)
    assert at4.item() < 0.01
    with pytest.raises(ValueError, match="weights"):
        matryoshka_loss(q, k, (2, 4), info_nce, weights=(1.0,))


def test_gradient_only_pulls_positive_closer() -> None:
    q = F.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0]]), dim=1).requires_grad_(True)
    k = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    loss = info_nce(q, k, temperature=0.1)
    loss.backward()
    step = q.detach() - 0.1 * q.grad
    before = (q.detach() * k).sum(1)
    after = (F.normalize(step, dim=1) * k).sum(1)
    assert (after > before).all()


@pytest.mark.parametrize("loss", [info_nce, circle_loss])
def test_losses_stay_on_the_inputs_device(loss) -> None:
    """On ``meta``, a mask or index built on the CPU without ``device=`` would fail."""
    meta = torch.device("meta")
    q = F.normalize(torch.randn(4, 8), dim=-1).to(meta)
    same = torch.zeros(4, 6, dtype=torch.bool, device=meta)
    out = matryoshka_loss(q, q, (4, 8), loss, extra=q[:2], same=same)
    assert out.device == meta and out.shape == ()
