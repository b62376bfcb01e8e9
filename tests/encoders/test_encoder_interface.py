"""The MoonEncoder interface on both backbones (tiny configs, built from configs offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moon_rec.data.errors import DataError
from moon_rec.encoders import (
    EncoderConfig,
    MoonEncoder,
    MoonTokenizer,
    build_encoder,
    images_to_tensor,
    matryoshka,
)

TEXTS = [
    "Yoxa leather dark blue stripes boots",
    "Yoko silk crimson gradient limited skirt",
    "Venrizu glass chocolate plain classic headphones",
    "Rarita best seller slim muffler",
    "color: red; pattern: dots; material: wool",
] * 4


@pytest.fixture(scope="module")
def tokenizer() -> MoonTokenizer:
    return MoonTokenizer.train(TEXTS, vocab_size=120)


def tiny_config(backbone: str) -> EncoderConfig:
    return EncoderConfig(backbone=backbone, hidden_size=32, num_heads=2, vision_layers=1,
                         text_layers=1, patch_size=16 if backbone == "dual_tower" else 8,
                         max_text_len=12, dims=(8, 16, 64), embed_dim=64)


@pytest.fixture(scope="module", params=["dual_tower", "mllm"])
def encoder(request: pytest.FixtureRequest, tokenizer: MoonTokenizer) -> MoonEncoder:
    torch.set_num_threads(1)
    enc = build_encoder(tiny_config(request.param), tokenizer)
    enc.eval()
    return enc


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 3, 64, 64), generator=torch.Generator().manual_seed(seed))


def test_shapes_norms_and_matryoshka(encoder: MoonEncoder) -> None:
    with torch.no_grad():
        t = encoder.encode_text(["red dress", "blue boots", "x"])
        i = encoder.encode_image(_images(2))
        p = encoder.encode_product(["red dress", "blue boots"], _images(2))
    assert t.shape == (3, 64) and i.shape == (2, 64) and p.shape == (2, 64)
    for x in (t, i, p):
        assert torch.allclose(x.norm(dim=1), torch.ones(x.shape[0]), atol=1e-5)
    assert encoder.dims == (8, 16, 64)
    for d in encoder.dims:
        m = matryoshka(p, d)
        assert m.shape == (2, d)
        assert torch.allclose(m.norm(dim=1), torch.ones(2), atol=1e-5)
        assert torch.allclose(m, p[:, :d] / p[:, :d].norm(dim=1, keepdim=True), atol=1e-6)
    # the product depends on both its title and its image
    with torch.no_grad():
        p2 = encoder.encode_product(["red dress", "red dress"], _images(2))
        p3 = encoder.encode_product(["red dress", "blue boots"], _images(2, seed=1))
    assert not torch.allclose(p[1], p2[1], atol=1e-4)
    assert not torch.allclose(p[0], p3[0], atol=1e-4)


def test_save_load_roundtrip_and_version(encoder: MoonEncoder, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = encoder.save_pretrained(tmp_path / "ckpt")
    assert (path / "tokenizer.json").exists() and (path / "backbone" / "config.json").exists()
    loaded = MoonEncoder.from_pretrained(path)
    assert type(loaded) is type(encoder)
    assert loaded.model_version == encoder.model_version
    imgs = _images(3)
    with torch.no_grad():
        a = encoder.encode_product(["red dress", "boots", "silk skirt"], imgs)
        b = loaded.encode_product(["red dress", "boots", "silk skirt"], imgs)
    assert torch.allclose(a, b, atol=1e-5)
    # the version is a hash of config + weights: a weight change changes it
    with torch.no_grad():
        next(loaded.parameters()).add_(0.01)
    assert loaded.model_version != encoder.model_version


def test_version_is_deterministic(tokenizer: MoonTokenizer) -> None:
    a = build_encoder(tiny_config("dual_tower"), tokenizer)
    b = build_encoder(tiny_config("dual_tower"), tokenizer)
    c = build_encoder(tiny_config("dual_tower").model_copy(update={"seed": 1}), tokenizer)
    assert a.model_version == b.model_version != c.model_version
    assert len(a.model_version) == 12


def test_missing_checkpoint_is_clear(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no MOON encoder checkpoint"):
        MoonEncoder.from_pretrained(tmp_path)


@pytest.mark.parametrize("bad", [None, "not a tensor"])
def test_missing_image(encoder: MoonEncoder, bad: object) -> None:
    with pytest.raises(DataError, match="image"):
        encoder.encode_image(bad)  # type: ignore[arg-type]


def test_wrong_image_size(encoder: MoonEncoder) -> None:
    with pytest.raises(DataError, match=r"column 'image'.*wrong image size 32x32"):
        encoder.encode_image(torch.rand(2, 3, 32, 32))
    with pytest.raises(DataError, match=r"shape"):
        encoder.encode_image(torch.rand(2, 64, 64))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        encoder.encode_image(torch.rand(1, 3, 64, 64) * 255)


def test_empty_text(encoder: MoonEncoder) -> None:
    with pytest.raises(DataError, match=r"column 'text': row 1: empty text"):
        encoder.encode_text(["red dress", "  "])
    with pytest.raises(DataError, match=r"column 'title': row 0"):
        encoder.encode_product([""], _images(1))
    with pytest.raises(DataError, match="titles but"):
        encoder.encode_product(["a", "b"], _images(1))


def test_images_to_tensor_names_the_row() -> None:
    ok = np.zeros((64, 64, 3), np.uint8)
    x = images_to_tensor([ok, ok + 255], 64)
    assert x.shape == (2, 3, 64, 64) and float(x.max()) == 1.0
    with pytest.raises(DataError, match="row 1: missing image"):
        images_to_tensor([ok, None], 64)
    with pytest.raises(DataError, match="row 0: wrong image size"):
        images_to_tensor([np.zeros((32, 32, 3), np.uint8)], 64)


def test_tokenizer_roundtrip(tokenizer: MoonTokenizer, tmp_path) -> None:
    tokenizer.save(tmp_path)
    again = MoonTokenizer.load(tmp_path)
    ids, mask = again(["leather boots", "unknownword"], max_len=6)
    ids0, _ = tokenizer(["leather boots", "unknownword"], max_len=6)
    assert torch.equal(ids, ids0)
    assert ids.shape == (2, 6) and mask[:, 0].all()
    assert again.decode(ids[0][mask[0] == 1].tolist()) == "leather boots"


def test_encode_keeps_autograd(encoder: MoonEncoder) -> None:
    """Training calls the same methods: gradients reach the backbone."""
    encoder.zero_grad()
    loss = encoder.encode_product(["red dress"], _images(1)).sum() + encoder.encode_text(["x"]).sum()
    loss.backward()
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    encoder.zero_grad()


def test_conv_stem_and_image_fusion_roundtrip(tokenizer: MoonTokenizer, tmp_path) -> None:
    """The conv stem (a head module) and the image-anchored fusion save, load and version."""
    cfg = tiny_config("dual_tower").model_copy(update={"conv_stem": 16, "fusion": "image"})
    enc = build_encoder(cfg, tokenizer).eval()
    assert enc.backbone.vision_model.embeddings.patch_embedding.in_channels == 16
    imgs = _images(2)
    with torch.no_grad():
        p = enc.encode_product(["red dress", "blue boots"], imgs)
        i = enc.encode_image(imgs)
        p2 = enc.encode_product(["blue boots", "red dress"], imgs)
    # the untrained product sits next to its image (an image query has no text) ...
    assert float((p * i).sum(1).min()) > 0.95
    # ... and still depends on the title
    assert not torch.allclose(p, p2, atol=1e-6)
    loaded = MoonEncoder.from_pretrained(enc.save_pretrained(tmp_path / "ckpt"))
    assert loaded.model_version == enc.model_version
    with torch.no_grad():
        assert torch.allclose(loaded.encode_product(["red dress", "blue boots"], imgs), p, atol=1e-5)


def test_conv_stem_needs_patch_multiple_of_4() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        EncoderConfig(conv_stem=16, patch_size=2)
    with pytest.raises(ValueError, match="dual_tower option"):
        EncoderConfig(backbone="mllm", conv_stem=16)
