"""The Qwen2-VL-style MLLM backbone: bidirectional attention, M-RoPE ids, title generation."""

from __future__ import annotations

import pytest
import torch

from moon_rec.encoders import EncoderConfig, MoonTokenizer, build_encoder
from moon_rec.encoders.mllm import MllmEncoder


@pytest.fixture(scope="module")
def mllm() -> MllmEncoder:
    torch.set_num_threads(1)
    tok = MoonTokenizer.train(["red silk dress", "blue leather boots", "green wool scarf"] * 3,
                              vocab_size=80)
    cfg = EncoderConfig(backbone="mllm", hidden_size=32, num_heads=2, vision_layers=1,
                        text_layers=2, patch_size=8, max_text_len=8, dims=(16, 64), embed_dim=64)
    enc = build_encoder(cfg, tok)
    assert isinstance(enc, MllmEncoder)
    return enc.eval()


def _first_token_state(enc: MllmEncoder, title: str, causal: bool) -> torch.Tensor:
    seq = enc._sequence([title], torch.zeros(1, 3, 64, 64))
    with torch.no_grad():
        return enc._hidden(seq, causal=causal)[0, 0]


def test_attention_is_bidirectional(mllm: MllmEncoder) -> None:
    """The first (image) token sees the last title token only with bidirectional attention."""
    a = _first_token_state(mllm, "red silk dress", causal=False)
    b = _first_token_state(mllm, "red silk scarf", causal=False)
    assert not torch.allclose(a, b, atol=1e-5)
    a_c = _first_token_state(mllm, "red silk dress", causal=True)
    b_c = _first_token_state(mllm, "red silk scarf", causal=True)
    assert torch.allclose(a_c, b_c, atol=1e-6)


def test_padding_does_not_leak(mllm: MllmEncoder) -> None:
    """Mean pooling over real tokens: a batch-mate's length does not change an embedding."""
    with torch.no_grad():
        alone = mllm.encode_text(["red dress"])
        padded = mllm.encode_text(["red dress", "blue leather boots green wool scarf"])[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_position_ids_match_transformers(mllm: MllmEncoder) -> None:
    seq = mllm._sequence(["red dress", "blue leather boots"], torch.rand(2, 3, 64, 64))
    ref, _ = mllm.backbone.model.get_rope_index(
        seq["input_ids"], mm_token_type_ids=seq["mm_token_type_ids"],
        image_grid_thw=seq["image_grid_thw"], attention_mask=seq["attention_mask"])
    real = seq["attention_mask"].bool()
    assert torch.equal(seq["position_ids"][:, real], ref[:, real])


def test_caption_loss_trains(mllm: MllmEncoder) -> None:
    torch.manual_seed(0)
    titles, images = ["red silk dress", "blue leather boots"], torch.rand(2, 3, 64, 64)
    enc = build_encoder(mllm.config, mllm.tokenizer)
    opt = torch.optim.AdamW(enc.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = enc.caption_loss(titles, images)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7
