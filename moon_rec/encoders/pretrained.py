"""A dual-tower MOON encoder whose image side (and maybe text side) is pretrained.

Two ways in, both from local paths in the ``EncoderConfig``:

- ``pretrained``: a full Hugging Face dual encoder (CLIP, SigLIP, any model with
  ``get_image_features`` / ``get_text_features``) with its tokenizer and image processor.
  Image and text go through the model's own towers and projections into its joint space;
  the Matryoshka heads (a linear map per modality to D) start as one shared orthonormal
  map, so the pretrained image-text alignment survives them at step 0.
- ``image_tower``: a Hugging Face vision model folder or a CNN state-dict file
  (``ImageTower``), beside a text side that is the pretrained ``text_tower`` (mean-pooled,
  e.g. all-MiniLM-L6-v2) or, without one, the SigLIP text transformer of the config with
  the catalog tokenizer.

Every image is resized and normalised inside the encoder as the checkpoint's processor
says (``ImageProcessing``), at ``image_resolution`` when set. A product is the fusion of
its image and title vectors (``ProductFusion``, ``fusion`` as in the dual tower).

Checkpoint folders (beside moon_encoder.json / heads.safetensors)::

    backbone/      the full dual encoder (config, weights, its tokenizer), or the SigLIP
                   text transformer of a scratch text side
    image_tower/   the image tower (a transformers folder or the CNN's weights + cnn.json)
    text_tower/    the pretrained text tower and / or the pretrained tokenizer
    processing.json  the image preprocessing of a full dual encoder
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, SiglipTextConfig, SiglipTextModel

from moon_rec.encoders.backbones import (
    PROCESSING_FILE,
    ImageProcessing,
    ImageTower,
    dual_encoder_parts,
    dual_image_features,
    dual_projection_dim,
    dual_text_features,
    load_dual_encoder,
    longest_layer_list,
    mean_pooled_text,
    native_size,
)
from moon_rec.encoders.base import BACKBONE_DIR, MoonEncoder
from moon_rec.encoders.config import EncoderConfig
from moon_rec.encoders.dual_tower import ProductFusion, load_text_tower, siglip_config
from moon_rec.encoders.tokenizer import TEXT_TOWER_DIR, TextTokenizer

IMAGE_TOWER_DIR = "image_tower"


class _DualPart:
    """Saves a full dual encoder with its tokenizer, so backbone/ is itself a complete
    `transformers` folder another run can start from (``pretrained: .../backbone``)."""

    def __init__(self, model: PreTrainedModel, tokenizer: TextTokenizer,
                 processing: ImageProcessing) -> None:
        self.model, self.tokenizer, self.processing = model, tokenizer, processing

    def save_pretrained(self, folder: Path) -> None:
        self.model.save_pretrained(str(folder))
        hf = getattr(self.tokenizer, "hf", None)
        if hf is not None:
            hf.save_pretrained(str(folder))
        (Path(folder) / PROCESSING_FILE).write_text(json.dumps(asdict(self.processing), indent=2))


class _TowerPart:
    def __init__(self, tower: ImageTower) -> None:
        self.tower = tower

    def save_pretrained(self, folder: Path) -> None:
        self.tower.save(folder)


class PretrainedTowersEncoder(MoonEncoder):
    """Pretrained image side + text side + Matryoshka heads + product fusion.

    Args:
        config: the architecture (``pretrained`` or ``image_tower`` set).
        tokenizer: the dual encoder's / text tower's tokenizer, or the catalog's.
        dual: a full dual encoder (then ``processing`` is its preprocessing), or None.
        image_tower: the image tower beside a separate text side, or None.
        text_tower: a pretrained text model (mean-pooled), or None.
        text_model: a SigLIP text transformer trained from scratch, or None.

    Example:
        >>> enc = build_encoder(EncoderConfig(image_tower="lite0.pth"), tok)  # doctest: +SKIP
        >>> enc.encode_image(torch.rand(2, 3, 64, 64)).shape  # doctest: +SKIP
        torch.Size([2, 256])
    """

    backbone_name = "dual_tower"

    def __init__(self, config: EncoderConfig, tokenizer: TextTokenizer, *,
                 dual: PreTrainedModel | None = None, processing: ImageProcessing | None = None,
                 image_tower: ImageTower | None = None, text_tower: PreTrainedModel | None = None,
                 text_model: SiglipTextModel | None = None) -> None:
        super().__init__(config, tokenizer)
        d = config.embed_dim
        self.dual = dual
        self.processing = processing
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.text_model = text_model
        if dual is not None:
            assert processing is not None
            native = native_size(dual)
            self._native = native is None or native == processing.out_size
            p = dual_projection_dim(dual)
            self.image_proj = nn.Linear(p, d)
            self.text_proj = nn.Linear(p, d)
            # one orthonormal map for both: the joint space's alignment survives it
            nn.init.orthogonal_(self.image_proj.weight)
            with torch.no_grad():
                self.text_proj.weight.copy_(self.image_proj.weight)
            for lin in (self.image_proj, self.text_proj):
                nn.init.zeros_(lin.bias)
        else:
            assert image_tower is not None
            self.image_proj = nn.Linear(image_tower.feature_dim, d)
            nn.init.orthogonal_(self.image_proj.weight)
            nn.init.zeros_(self.image_proj.bias)
            width = (text_tower.config.hidden_size if text_tower is not None
                     else config.hidden_size)
            self.text_proj = nn.Linear(width, d)
            if text_tower is not None:
                nn.init.orthogonal_(self.text_proj.weight)
                nn.init.zeros_(self.text_proj.bias)
        self.fusion = ProductFusion(d, config.fusion)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def _build(cls, config: EncoderConfig, tokenizer: TextTokenizer,
               backbone: Any = None) -> PretrainedTowersEncoder:
        if config.pretrained is not None:
            model, processing = load_dual_encoder(config.pretrained, config.pretrained_init)
            torch.manual_seed(config.seed)
            return cls(config, tokenizer, dual=model,
                       processing=processing.at(config.image_resolution))
        assert config.image_tower is not None
        tower = ImageTower.from_source(config.image_tower, arch=config.image_tower_arch,
                                       init=config.image_tower_init,
                                       resolution=config.image_resolution,
                                       pool=config.vision_pool,
                                       stages=tuple(config.image_tower_stages))
        # the fresh parts start the same whichever form (file, checkpoint folder) the tower
        # was read from: loading draws from the RNG differently
        torch.manual_seed(config.seed)
        return cls(config, tokenizer, image_tower=tower, **_text_side(config, tokenizer))

    @classmethod
    def _load_backbone(cls, config: EncoderConfig, tokenizer: TextTokenizer,
                       backbone_dir: Path) -> PretrainedTowersEncoder:
        root = backbone_dir.parent
        if config.pretrained is not None:
            from transformers import AutoModel

            model = AutoModel.from_pretrained(str(backbone_dir), local_files_only=True)
            processing = ImageProcessing.from_folder(backbone_dir)
            return cls(config, tokenizer, dual=model, processing=processing)
        tower = ImageTower.load(root / IMAGE_TOWER_DIR)
        if config.text_tower is not None:
            return cls(config, tokenizer, image_tower=tower,
                       text_tower=load_text_tower(root / TEXT_TOWER_DIR))
        text_model = SiglipTextModel.from_pretrained(str(backbone_dir), local_files_only=True,
                                                     attn_implementation="sdpa")
        return cls(config, tokenizer, image_tower=tower, text_model=text_model)

    # -- checkpoint parts ----------------------------------------------------------------
    def _backbone_module(self) -> Any:
        return self.dual if self.dual is not None else self.text_model

    def _pretrained_parts(self) -> dict[str, Any]:
        parts: dict[str, Any] = {}
        if self.dual is not None:
            assert self.processing is not None
            parts[BACKBONE_DIR] = _DualPart(self.dual, self.tokenizer, self.processing)
            return parts
        assert self.image_tower is not None
        parts[IMAGE_TOWER_DIR] = _TowerPart(self.image_tower)
        if self.text_tower is not None:
            parts[TEXT_TOWER_DIR] = self.text_tower
        if self.text_model is not None:
            parts[BACKBONE_DIR] = self.text_model
        return parts

    def _head_modules(self) -> dict[str, nn.Module]:
        return {"image_proj": self.image_proj, "text_proj": self.text_proj,
                "fusion": self.fusion}

    # -- parameter groups ----------------------------------------------------------------
    def pretrained_text_parameters(self) -> list[nn.Parameter]:
        if self.dual is not None:
            return dual_encoder_parts(self.dual)[0]
        return [] if self.text_tower is None else list(self.text_tower.parameters())

    def pretrained_image_parameters(self) -> list[nn.Parameter]:
        if self.dual is not None:
            return dual_encoder_parts(self.dual)[1]
        assert self.image_tower is not None
        return list(self.image_tower.parameters())

    def image_blocks(self) -> list[nn.Module]:
        if self.image_tower is not None:
            return self.image_tower.blocks()
        assert self.dual is not None
        vision = getattr(self.dual, "vision_model", None)
        if vision is None:
            return []
        embeddings = [m for n, m in vision.named_children() if "embed" in n]
        return [*embeddings, *longest_layer_list(vision)]

    def image_tower_module(self) -> ImageTower | None:
        return self.image_tower

    def text_tower_module(self) -> nn.Module | None:
        return self.text_tower

    # -- the towers ------------------------------------------------------------------------
    def _text(self, texts: list[str]) -> torch.Tensor:
        ids, mask = self.tokenizer(texts, self.config.max_text_len)
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.dual is not None:
            return self.text_proj(dual_text_features(self.dual, ids, mask))
        model = self.text_tower if self.text_tower is not None else self.text_model
        assert model is not None
        return self.text_proj(mean_pooled_text(model, ids, mask, self.text_feature_cache))

    def _image(self, images: torch.Tensor) -> torch.Tensor:
        if self.dual is not None:
            assert self.processing is not None
            feats = dual_image_features(self.dual, self.processing(images), self._native)
            return self.image_proj(feats)
        assert self.image_tower is not None
        return self.image_proj(self.image_tower(images))

    def _product(self, titles: list[str], images: torch.Tensor) -> torch.Tensor:
        return self.fusion(self._image(images), self._text(titles))


def _text_side(config: EncoderConfig, tokenizer: TextTokenizer) -> dict[str, Any]:
    """The text side beside an image tower: the pretrained text tower, or the SigLIP text
    transformer of the config (the catalog tokenizer's vocabulary)."""
    if config.text_tower is not None:
        tower = load_text_tower(config.text_tower, config.text_tower_init)
        limit = getattr(tower.config, "max_position_embeddings", None)
        if limit is not None and config.max_text_len > limit:
            raise ValueError(f"max_text_len {config.max_text_len} exceeds the text tower's "
                             f"{limit} positions")
        return {"text_tower": tower}
    text_cfg = siglip_config(config, tokenizer.vocab_size).text_config
    assert isinstance(text_cfg, SiglipTextConfig)
    text_cfg._attn_implementation = "sdpa"
    return {"text_model": SiglipTextModel(text_cfg)}
