"""Behaviour modules, the content lookup and id remapping on hand-made inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moon_rec.ranking.behaviours import (
    BehaviourInputs,
    CubeModule,
    DinModule,
    SimModule,
    masked_softmax,
)
from moon_rec.ranking.config import BehaviourConfig, OverArchConfig
from moon_rec.ranking.item_tables import MoonContentArch
from moon_rec.ranking.over_arch import OverArch
from moon_rec.ranking.sparse import remap_ids

E, C = 6, 4


def _inputs(lengths: list[int], length: int = 5, seed: int = 0) -> BehaviourInputs:
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    content = torch.nn.functional.normalize(torch.randn(b, length, C, generator=g), dim=-1)
    return BehaviourInputs(
        target_id=torch.randn(b, E, generator=g),
        behaviour_id=torch.randn(b, length, E, generator=g),
        mask=mask,
        target_content=torch.nn.functional.normalize(torch.randn(b, C, generator=g), dim=-1),
        behaviour_content=content,
        content_mask=mask.clone(),
        query_content=torch.nn.functional.normalize(torch.randn(b, C, generator=g), dim=-1),
        query_mask=torch.ones(b, dtype=torch.bool),
    )


def _modules() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [
        DinModule(E, BehaviourConfig(module="din", attention_hidden=[8])),
        CubeModule(E, C, BehaviourConfig(module="cube", attention_hidden=[8])),
        SimModule(E, C, BehaviourConfig(module="sim", attention_hidden=[8], top_k=3)),
    ]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_output_shape_matches_output_dim(index: int) -> None:
    module = _modules()[index]
    out = module(_inputs([5, 2, 0]))
    assert out.shape == (3, module.output_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("index", [0, 1, 2])
def test_padding_is_never_read(index: int) -> None:
    module = _modules()[index]
    inputs = _inputs([3, 1, 0])
    ref = module(inputs)
    pad = ~inputs.mask
    noisy = BehaviourInputs(
        target_id=inputs.target_id,
        behaviour_id=inputs.behaviour_id.masked_fill(pad[..., None], 1e3),
        mask=inputs.mask,
        target_content=inputs.target_content,
        behaviour_content=inputs.behaviour_content.masked_fill(pad[..., None], -7.0),
        content_mask=inputs.content_mask,
        query_content=inputs.query_content,
        query_mask=inputs.query_mask,
    )
    torch.testing.assert_close(module(noisy), ref)


def test_empty_sequence_pools_to_zero() -> None:
    din = _modules()[0]
    out = din(_inputs([0, 0]))
    assert torch.equal(out, torch.zeros_like(out))


def test_factored_attention_equals_din_first_layer() -> None:
    """W [t, h, t - h, t * h] == (W_t + W_d) t + (W_h - W_d) h + W_p (t * h)."""
    from moon_rec.ranking.behaviours import TargetAttention

    torch.manual_seed(0)
    att = TargetAttention(E, [])
    w = torch.randn(1, 4 * E)
    with torch.no_grad():
        wt, wh, wd, wp = w.split(E, dim=1)
        att.target_proj.weight.copy_(wt + wd)
        att.target_proj.bias.zero_()
        att.key_proj.weight.copy_(wh - wd)
        att.product_proj.weight.copy_(wp)
    inputs = _inputs([5, 3])
    t = inputs.target_id.unsqueeze(1).expand_as(inputs.behaviour_id)
    h = inputs.behaviour_id
    scores = (torch.cat([t, h, t - h, t * h], dim=-1) @ w.T).squeeze(-1)
    _, weights = att(inputs.target_id, h, inputs.mask)
    torch.testing.assert_close(weights, masked_softmax(scores, inputs.mask))


def test_masked_softmax_zero_rows_and_sums() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    w = masked_softmax(scores, mask)
    assert torch.allclose(w[0].sum(), torch.tensor(1.0))
    assert w[0, 2] == 0
    assert torch.equal(w[1], torch.zeros(3))


def _hand_inputs(content_mask: list[bool], **extra: torch.Tensor) -> BehaviourInputs:
    """One impression, target content [1, 0]; behaviours: two real ones with contents
    [0.6, 0.8] and [0, 1], then a padded slot (content [1, 0], never attended)."""
    return BehaviourInputs(
        target_id=torch.zeros(1, 2),
        behaviour_id=torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]]),
        mask=torch.tensor([[True, True, False]]),
        target_content=torch.tensor([[1.0, 0.0]]),
        behaviour_content=torch.tensor([[[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]]]),
        content_mask=torch.tensor([content_mask]),
        **extra,
    )


def test_cube_similarities_match_hand_computation() -> None:
    cube = CubeModule(
        2, 2, BehaviourConfig(module="cube", attention_hidden=[4], similarity_scale=1.0)
    )
    inputs = _hand_inputs(
        content_mask=[True, True, True],
        query_content=torch.tensor([[3.0, 4.0]]),  # not normalised: cosine = 0.6
        query_mask=torch.tensor([True]),
    )
    s_b, valid, s_q = cube.similarities(inputs)
    torch.testing.assert_close(s_b, torch.tensor([[0.6, 0.0, 0.0]]))
    assert valid.tolist() == [[True, True, False]]
    torch.testing.assert_close(s_q, torch.tensor([0.6]))
    out = cube(inputs)
    # softmax(1 * [0.6, 0.0]) over the two real behaviours
    w0 = torch.exp(torch.tensor(0.6)) / (torch.exp(torch.tensor(0.6)) + 1.0)
    w = torch.stack([w0, 1 - w0])
    fusion = w[0] * torch.tensor([1.0, 0.0]) + w[1] * torch.tensor([0.0, 1.0])
    content = w[0] * torch.tensor([0.6, 0.8]) + w[1] * torch.tensor([0.0, 1.0])
    torch.testing.assert_close(out[0, 2:4], fusion)
    torch.testing.assert_close(out[0, 4:6], content)
    sims = torch.tensor([0.6, 0.6, 0.3, float(w[0] * 0.6)])
    torch.testing.assert_close(out[0, 6:10], sims)
    assert out.shape == (1, cube.output_dim) == (1, 2 * 2 + 2 + 4 + 2 + 4)


def test_cube_user_content_profile_matches_hand_computation() -> None:
    cube = CubeModule(2, 2, BehaviourConfig(module="cube", attention_hidden=[4]))
    with torch.no_grad():
        cube.gate.weight.zero_()
        cube.gate.bias.zero_()  # g_b = 0.5 at every real behaviour
        cube.raw_shrink.fill_(0.0)  # k = softplus(0) = log 2
        cube.taste_weight.weight.zero_()
        cube.taste_weight.bias.fill_(2.0)  # a(t) = 2
    inputs = _hand_inputs(content_mask=[True, False, True])  # the second has no content
    out = cube(inputs)
    k = torch.log(torch.tensor(2.0))
    profile = 0.5 * torch.tensor([0.6, 0.8]) / (0.5 + k)
    torch.testing.assert_close(out[0, 10:12], profile)
    s_u = profile[0]
    # the learned metric starts at the identity: s_m = s_u
    torch.testing.assert_close(out[0, 12:], torch.stack([s_u, 2 * s_u, s_u, 2 * s_u]))
    plain = CubeModule(
        2, 2, BehaviourConfig(module="cube", attention_hidden=[4], user_content=False)
    )
    assert plain(inputs).shape == (1, 2 * 2 + 2 + 4)


def test_cube_ignores_missing_query_and_content() -> None:
    cube = _modules()[1]
    inputs = _inputs([4])
    inputs.query_mask = torch.tensor([False])
    inputs.content_mask = torch.tensor([[True, False, False, False, False]])
    s_b, valid, s_q = cube.similarities(inputs)
    assert s_q.item() == 0.0
    assert valid.tolist() == [[True, False, False, False, False]]
    assert (s_b[0, 1:] == 0).all()


def test_sim_keeps_top_k_by_content_similarity() -> None:
    sim = SimModule(E, C, BehaviourConfig(module="sim", top_k=2, attention_hidden=[4]))
    inputs = _inputs([4], length=6)
    s_b, _, _ = sim.cube.similarities(inputs)
    kept = sim.search(inputs)
    expected = s_b[0, :4].topk(2).values
    got, _, _ = sim.cube.similarities(kept)
    torch.testing.assert_close(got[0].sort(descending=True).values, expected)
    assert kept.mask.all()


def test_sim_never_prefers_padding() -> None:
    sim = SimModule(E, C, BehaviourConfig(module="sim", top_k=4, attention_hidden=[4]))
    kept = sim.search(_inputs([2], length=6))
    assert kept.mask.sum().item() == 2


@settings(max_examples=25, deadline=None)
@given(
    ids=st.lists(st.integers(min_value=-(2**40), max_value=2**40), min_size=1, max_size=20),
    rows=st.integers(min_value=2, max_value=1000),
    policy=st.sampled_from(["oov", "hash"]),
)
def test_remap_ids_stays_in_table(ids: list[int], rows: int, policy: str) -> None:
    t = torch.tensor(ids)
    out = remap_ids(t, torch.full_like(t, rows), policy)
    assert ((out >= 0) & (out < rows)).all()
    inside = (t >= 0) & (t < rows - 1)
    if policy == "oov":
        assert torch.equal(out[inside], t[inside])
        assert (out[~inside] == rows - 1).all()


def test_content_lookup_unknown_ids_are_zero() -> None:
    arch = MoonContentArch(torch.tensor([3, 7, 9]), torch.eye(3))
    vec, found = arch(torch.tensor([[9, 5, -1, 3]]))
    assert found.tolist() == [[True, False, False, True]]
    torch.testing.assert_close(vec[0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(vec[0, 1], torch.zeros(3))
    assert torch.equal(vec[0, 2], torch.zeros(3))


@pytest.mark.parametrize("cross", [(0, 0), (2, 0), (2, 3)])
def test_over_arch_shapes(cross: tuple[int, int]) -> None:
    over = OverArch(
        10, OverArchConfig(layer_sizes=[8], cross_layers=cross[0], cross_low_rank=cross[1])
    )
    assert over(torch.rand(4, 10)).shape == (4,)


def test_sim_profile_reads_the_whole_sequence() -> None:
    sim = SimModule(E, C, BehaviourConfig(module="sim", top_k=2, attention_hidden=[4]))
    inputs = _inputs([5], length=6)
    out = sim(inputs)
    full = sim.cube(inputs)  # CUBE on every behaviour: same profile columns
    n = sim.cube.output_dim
    profile = slice(n - C - 4, n)
    torch.testing.assert_close(out[:, profile], full[:, profile])
    kept = sim.cube(sim.search(inputs))
    assert not torch.allclose(kept[:, profile], full[:, profile])


def test_item_id_dropout_replaces_target_rows_in_training_only() -> None:
    """item_id_dropout swaps target item ids for the OOV row in training mode only, and
    never touches the behaviours or the other features."""
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from moon_rec.data.feature_spec import FittedFeatures, load_feature_spec
    from moon_rec.ranking.config import RankerConfig
    from moon_rec.ranking.sparse import RankerTables, SparseArch

    fitted = FittedFeatures(spec=load_feature_spec("ids"), rows={"brand_id": 5})
    tables = RankerTables({"user": 10, "item": 20, "category": 5, "query_token": 64,
                           "position": 8}, fitted)
    arch = SparseArch(RankerConfig(item_id_dropout=0.5, max_seq_len=3), tables)
    b = 400
    targets = torch.randint(0, 19, (b,))
    hist = torch.randint(0, 19, (2 * b,))
    seq = KeyedJaggedTensor.from_lengths_sync(
        keys=["item_id", "category_id", "hist_item_ids", "hist_category_ids"],
        values=torch.cat([targets, torch.zeros(b, dtype=torch.long), hist, hist % 5]),
        lengths=torch.cat([torch.ones(2 * b), torch.full((2 * b,), 2)]).int(),
    )
    arch.eval()
    assert torch.equal(arch._drop_item_ids(seq).values(), seq.values())
    arch.train()
    torch.manual_seed(0)
    out = arch._drop_item_ids(seq).values()
    dropped = out[:b] == tables.rows["item"] - 1
    assert 0.4 < dropped.float().mean() < 0.6
    assert torch.equal(out[:b][~dropped], targets[~dropped])
    assert torch.equal(out[b:], seq.values()[b:])


def test_attention_on_packed_behaviours_equals_the_gather() -> None:
    """TargetAttention scores ``packed`` (= keys[mask], as the jagged lookup gives it) the
    same as it scores its own gather, and ignores a packed tensor that does not fit."""
    from moon_rec.ranking.behaviours import TargetAttention

    torch.manual_seed(0)
    att = TargetAttention(8, [16, 8])
    target, keys = torch.rand(4, 8), torch.rand(4, 5, 8)
    mask = torch.arange(5)[None, :] < torch.tensor([3, 0, 5, 1])[:, None]
    want, w_want = att(target, keys, mask)
    got, w_got = att(target, keys, mask, keys[mask])
    assert torch.allclose(got, want) and torch.allclose(w_got, w_want)
    odd, _ = att(target, keys, mask, torch.rand(int(mask.sum()) + 2, 8))
    assert torch.allclose(odd, want)
