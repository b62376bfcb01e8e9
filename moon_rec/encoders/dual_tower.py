"""Dual-tower (SigLIP-style) MOON encoder: the CPU default backbone.

A `transformers` ``SiglipModel`` built from a small config: a ViT over the image (patches of
``patch_size``, mean-pooled, or SigLIP's attention-pooling head) and a bidirectional text transformer over the
word-piece tokens (mean-pooled over real tokens). Each tower has a linear projection to D.
A product is the fusion of its title and image: with ``fusion="mlp"`` the normalised tower
vectors are summed and a residual MLP over their concatenation adds the interaction
(``p = n(i) + n(t) + MLP([n(i); n(t)])``); with ``fusion="mean"`` it is ``n(i) + n(t)``;
with ``fusion="image"`` it is ``n(i) + MLP([n(i); n(t)])``: the product starts at its image
vector and the title adds what training finds useful (an image query has no text).
With ``conv_stem`` > 0 a small convolutional stem (3x3 stride-2 convolutions, GELU) turns
the image into a feature map at 1/4 of its side that the ViT patchifies: a better
inductive bias for photos under crop / rotation / scale than linear 16x16 patches, at little
CPU cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SiglipConfig, SiglipModel, SiglipTextConfig, SiglipVisionConfig

from moon_rec.encoders.base import MoonEncoder
from moon_rec.encoders.config import EncoderConfig
from moon_rec.encoders.tokenizer import MoonTokenizer


def siglip_config(config: EncoderConfig, vocab_size: int) -> SiglipConfig:
    """The `transformers` config of the two towers."""
    common: dict[str, Any] = {
        "hidden_size": config.hidden_size,
        "intermediate_size": config.mlp_size,
        "num_attention_heads": config.num_heads,
        "attention_dropout": 0.0,
    }
    text = SiglipTextConfig(
        vocab_size=vocab_size,
        num_hidden_layers=config.text_layers,
        max_position_embeddings=config.max_text_len,
        pad_token_id=MoonTokenizer.pad_id,
        bos_token_id=MoonTokenizer.bos_id,
        eos_token_id=MoonTokenizer.eos_id,
        projection_size=config.hidden_size,
        **common,
    )
    stem = 4 if config.conv_stem else 1  # the stem downsamples by 4
    vision = SiglipVisionConfig(
        num_hidden_layers=config.vision_layers,
        image_size=config.image_size // stem,
        patch_size=config.patch_size // stem,
        num_channels=config.conv_stem or 3,
        vision_use_head=config.vision_pool == "head",
        **common,
    )
    cfg = SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())
    cfg._attn_implementation = "sdpa"
    return cfg


class ConvStem(nn.Module):
    """[N, 3, S, S] -> [N, C, S/4, S/4]: two 3x3 stride-2 convolutions with GELU.

    Args:
        channels: C, the output channels (the first convolution has C/2).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = max(channels // 2, 8)
        self.net = nn.Sequential(
            nn.Conv2d(3, mid, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(mid, channels, 3, stride=2, padding=1), nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class ProductFusion(nn.Module):
    """Title vector + image vector -> product vector, both [N, D] -> [N, D] (unnormalised).

    Args:
        dim: D.
        mode: ``mlp`` (residual MLP over the concatenation), ``mean`` or ``image`` (the image
            vector plus the residual MLP, no plain title term).
    """

    def __init__(self, dim: int, mode: str = "mlp") -> None:
        super().__init__()
        self.mode = mode
        out = nn.Linear(dim, dim)
        if mode == "image":
            # Start next to the image vector, with a small title-dependent part.
            nn.init.normal_(out.weight, std=0.01)
        else:
            # Start as the plain sum, so the untrained product is the mean of its towers.
            nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), out)

    def forward(self, image: torch.Tensor, title: torch.Tensor) -> torch.Tensor:
        i, t = F.normalize(image, dim=-1), F.normalize(title, dim=-1)
        if self.mode == "mean":
            return i + t
        if self.mode == "image":
            return i + self.mlp(torch.cat([i, t], dim=-1))
        return i + t + self.mlp(torch.cat([i, t], dim=-1))


class DualTowerEncoder(MoonEncoder):
    """SigLIP-style towers + projections + product fusion.

    Example:
        >>> tok = MoonTokenizer.train(["red dress", "blue shoe"], vocab_size=60)
        >>> enc = DualTowerEncoder._build(EncoderConfig(), tok)
        >>> enc.encode_image(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 256])
    """

    backbone_name = "dual_tower"

    def __init__(self, config: EncoderConfig, tokenizer: MoonTokenizer,
                 backbone: SiglipModel) -> None:
        super().__init__(config, tokenizer)
        self.backbone = backbone
        h, d = config.hidden_size, config.embed_dim
        self.image_proj = nn.Linear(h, d)
        self.text_proj = nn.Linear(h, d)
        self.fusion = ProductFusion(d, config.fusion)
        self.stem = ConvStem(config.conv_stem) if config.conv_stem else None

    @classmethod
    def _build(cls, config: EncoderConfig, tokenizer: MoonTokenizer,
               backbone: SiglipModel | None = None) -> DualTowerEncoder:
        if backbone is None:
            backbone = SiglipModel(siglip_config(config, tokenizer.vocab_size))
        return cls(config, tokenizer, backbone)

    @classmethod
    def _load_backbone(cls, config: EncoderConfig, tokenizer: MoonTokenizer,
                       backbone_dir: Path) -> DualTowerEncoder:
        backbone = SiglipModel.from_pretrained(
            str(backbone_dir), local_files_only=True, attn_implementation="sdpa"
        )
        return cls(config, tokenizer, backbone)

    def _backbone_module(self) -> SiglipModel:
        return self.backbone

    def _head_modules(self) -> dict[str, nn.Module]:
        heads: dict[str, nn.Module] = {"image_proj": self.image_proj,
                                       "text_proj": self.text_proj, "fusion": self.fusion}
        if self.stem is not None:
            heads["stem"] = self.stem
        return heads

    def _text(self, texts: list[str]) -> torch.Tensor:
        ids, mask = self.tokenizer(texts, self.config.max_text_len)
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.backbone.text_model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.text_proj(pooled)

    def _image(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images - 0.5) / 0.5  # SigLIP normalisation
        if self.stem is not None:
            pixels = self.stem(pixels)
        out = self.backbone.vision_model(pixel_values=pixels)
        pooled = out.last_hidden_state.mean(1) if self.config.vision_pool == "mean" else out.pooler_output
        return self.image_proj(pooled)

    def _product(self, titles: list[str], images: torch.Tensor) -> torch.Tensor:
        return self.fusion(self._image(images), self._text(titles))
