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

With ``text_tower`` (a local folder) the text side is that pretrained `transformers` model
(``AutoModel``, e.g. all-MiniLM-L6-v2, a BERT) with its own tokenizer, mean-pooled over real
tokens as sentence-transformers does, and the vision side a ``SiglipVisionModel`` alone;
the text projection starts semi-orthogonal so that the pretrained geometry survives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    PreTrainedModel,
    SiglipConfig,
    SiglipModel,
    SiglipTextConfig,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from moon_rec.encoders.backbones import mean_pooled_text
from moon_rec.encoders.base import MoonEncoder
from moon_rec.encoders.config import EncoderConfig
from moon_rec.encoders.tokenizer import TEXT_TOWER_DIR, MoonTokenizer, TextTokenizer


def load_text_tower(path: str | Path, init: str = "pretrained") -> PreTrainedModel:
    """A pretrained `transformers` text model from a local folder (offline); with
    ``init="random"`` the same architecture (the folder's ``config.json``) with fresh
    weights, seeded by the caller's torch RNG.

    Raises:
        FileNotFoundError: no such folder, or no ``config.json`` in it.
    """
    p = Path(path)
    if not (p / "config.json").is_file():
        why = "no such folder" if not p.is_dir() else "not a transformers model folder (no config.json)"
        raise FileNotFoundError(f"text tower {p}: {why}")
    if init == "random":
        fresh: PreTrainedModel = AutoModel.from_config(
            AutoConfig.from_pretrained(str(p), local_files_only=True)
        )
        return fresh
    model: PreTrainedModel = AutoModel.from_pretrained(str(p), local_files_only=True)
    return model


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
    vision = siglip_vision_config(config)
    cfg = SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())
    cfg._attn_implementation = "sdpa"
    return cfg


def siglip_vision_config(config: EncoderConfig) -> SiglipVisionConfig:
    """The `transformers` config of the vision tower."""
    stem = 4 if config.conv_stem else 1  # the stem downsamples by 4
    vision = SiglipVisionConfig(
        hidden_size=config.hidden_size,
        intermediate_size=config.mlp_size,
        num_attention_heads=config.num_heads,
        attention_dropout=0.0,
        num_hidden_layers=config.vision_layers,
        image_size=config.image_size // stem,
        patch_size=config.patch_size // stem,
        num_channels=config.conv_stem or 3,
        vision_use_head=config.vision_pool == "head",
    )
    vision._attn_implementation = "sdpa"
    return vision


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

    def __init__(self, config: EncoderConfig, tokenizer: TextTokenizer,
                 backbone: SiglipModel | SiglipVisionModel,
                 text_tower: PreTrainedModel | None = None) -> None:
        super().__init__(config, tokenizer)
        self.backbone = backbone
        self.text_tower = text_tower
        h, d = config.hidden_size, config.embed_dim
        self.image_proj = nn.Linear(h, d)
        self.text_proj = nn.Linear(h if text_tower is None else text_tower.config.hidden_size, d)
        if text_tower is not None:
            # a random Gaussian projection would scramble the pretrained sentence geometry
            # before training starts; orthonormal rows keep it (up to the dropped directions)
            nn.init.orthogonal_(self.text_proj.weight)
            nn.init.zeros_(self.text_proj.bias)
        self.fusion = ProductFusion(d, config.fusion)
        self.stem = ConvStem(config.conv_stem) if config.conv_stem else None

    @classmethod
    def _build(cls, config: EncoderConfig, tokenizer: TextTokenizer,
               backbone: SiglipModel | SiglipVisionModel | None = None) -> DualTowerEncoder:
        if config.text_tower is None:
            if backbone is None:
                backbone = SiglipModel(siglip_config(config, tokenizer.vocab_size))
            return cls(config, tokenizer, backbone)
        tower = load_text_tower(config.text_tower, config.text_tower_init)
        limit = getattr(tower.config, "max_position_embeddings", None)
        if limit is not None and config.max_text_len > limit:
            raise ValueError(f"max_text_len {config.max_text_len} exceeds the text tower's "
                             f"{limit} positions")
        if backbone is None:
            backbone = SiglipVisionModel(siglip_vision_config(config))
        return cls(config, tokenizer, backbone, tower)

    @classmethod
    def _load_backbone(cls, config: EncoderConfig, tokenizer: TextTokenizer,
                       backbone_dir: Path) -> DualTowerEncoder:
        if config.text_tower is None:
            backbone = SiglipModel.from_pretrained(
                str(backbone_dir), local_files_only=True, attn_implementation="sdpa"
            )
            return cls(config, tokenizer, backbone)
        vision = SiglipVisionModel.from_pretrained(
            str(backbone_dir), local_files_only=True, attn_implementation="sdpa"
        )
        return cls(config, tokenizer, vision, load_text_tower(backbone_dir.parent / TEXT_TOWER_DIR))

    def _backbone_module(self) -> SiglipModel | SiglipVisionModel:
        return self.backbone

    def _pretrained_parts(self) -> dict[str, Any]:
        parts = super()._pretrained_parts()
        if self.text_tower is not None:
            parts[TEXT_TOWER_DIR] = self.text_tower
        return parts

    def pretrained_text_parameters(self) -> list[nn.Parameter]:
        return [] if self.text_tower is None else list(self.text_tower.parameters())

    def text_tower_module(self) -> nn.Module | None:
        return self.text_tower

    def _head_modules(self) -> dict[str, nn.Module]:
        heads: dict[str, nn.Module] = {"image_proj": self.image_proj,
                                       "text_proj": self.text_proj, "fusion": self.fusion}
        if self.stem is not None:
            heads["stem"] = self.stem
        return heads

    def _vision(self) -> SiglipVisionModel:
        """The vision tower (the whole backbone beside a pretrained text tower)."""
        if isinstance(self.backbone, SiglipModel):
            vision: SiglipVisionModel = self.backbone.vision_model
            return vision
        return self.backbone

    def _text(self, texts: list[str]) -> torch.Tensor:
        ids, mask = self.tokenizer(texts, self.config.max_text_len)
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.text_tower is not None:
            model: nn.Module = self.text_tower
        else:
            assert isinstance(self.backbone, SiglipModel)
            model = self.backbone.text_model
        return self.text_proj(mean_pooled_text(model, ids, mask, self.text_feature_cache))

    def _image(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images - 0.5) / 0.5  # SigLIP normalisation
        if self.stem is not None:
            pixels = self.stem(pixels)
        out = self._vision()(pixel_values=pixels)
        pooled = out.last_hidden_state.mean(1) if self.config.vision_pool == "mean" else out.pooler_output
        return self.image_proj(pooled)

    def _product(self, titles: list[str], images: torch.Tensor) -> torch.Tensor:
        return self.fusion(self._image(images), self._text(titles))
