"""The encoder's architecture, as a strict config: a typo in YAML is an error.

Both backbones share one config object; the fields of the other backbone are ignored.
Defaults are the CPU-sized "tiny" architecture used by tests (64x64 images). Pretrained
parts (a text tower, an image tower, a full dual encoder, an MLLM checkpoint) load from
local paths named here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Backbone = Literal["dual_tower", "mllm"]
# The Matryoshka sizes of an encoder that declares none: the one place sizes are declared
# (with the ``dims`` of the YAMLs in configs/encoder/). Everything downstream (the
# snapshot, Feast, rankers, serving) takes its sizes from the snapshot it reads.
DEFAULT_DIMS: tuple[int, ...] = (32, 64, 128, 256)


class LoraConfig(BaseModel):
    """Low-rank adapters (peft) on a pretrained MLLM's decoder.

    Args:
        r: adapter rank.
        alpha: scaling numerator (the update is scaled by alpha / r).
        dropout: dropout on the adapter input.
        target_modules: module names adapted (the attention projections by default).
    """

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj",
                                                                "o_proj"])


class EncoderConfig(BaseModel):
    """Architecture of a MOON encoder.

    Args:
        backbone: ``dual_tower`` (SigLIP-style vision + text towers, the CPU default) or
            ``mllm`` (a Qwen2-VL-style vision-language decoder run with bidirectional
            attention, mean-pooled).
        embed_dim: D, the full output dimension.
        dims: the Matryoshka prefixes that are trained to work alone (ascending, last == D).
        image_size: square input images, in pixels (the world's default is 64).
        patch_size: vision patch size in pixels.
        hidden_size: width of both towers (dual tower) or of the decoder (mllm).
        vision_layers / text_layers: depth of each tower (mllm: vision_layers for its
            vision encoder, text_layers for its decoder).
        num_heads: attention heads in every transformer.
        intermediate_size: MLP width (0: 2 * hidden_size).
        max_text_len: tokens per text, after truncation.
        vocab_size: target size of the word-piece vocabulary trained on the catalog text.
        vision_pool: dual tower: ``mean`` of the patch tokens (default; learned faster and
            generalised better to user photos in our runs) or SigLIP's attention-pooling
            ``head``.
        fusion: how a product (title + image) becomes one vector in the dual tower:
            ``mlp`` (residual MLP over both normalised tower outputs), ``mean``, or
            ``image`` (the image vector plus a residual MLP over both: an image query, which
            has no text, then sits next to its product; the best for image search).
        conv_stem: dual tower only: channels of a small convolutional stem (two 3x3
            stride-2 convolutions) in front of the ViT, which then patchifies the stem's
            feature map (``patch_size`` stays in input pixels, a multiple of 4); 0: the
            plain linear patch embedding.
        spatial_merge_size: mllm only, 2x2 patches merge into one decoder token.
        seed: initialisation seed.
        text_tower: dual tower only: a local folder holding a pretrained `transformers` text
            model and its tokenizer (e.g. all-MiniLM-L6-v2: ``config.json``,
            ``model.safetensors``, tokenizer files), loaded offline. It replaces the SigLIP
            text transformer and the catalog word-piece tokenizer; its own config sets its
            width and depth (``hidden_size`` / ``text_layers`` / ``vocab_size`` then size the
            vision tower only). The Matryoshka head (a projection to ``embed_dim``) sits on
            top. Read once, when a fresh encoder is built: a checkpoint carries its copy of
            the tower, so the path is provenance and is not part of ``model_version``.
        text_tower_init: ``pretrained`` (default) loads the tower's weights; ``random``
            builds the same architecture from its ``config.json`` with fresh weights (and
            its tokenizer): the trained-from-scratch ablation of a pretrained tower.
        pretrained: a local folder holding a pretrained backbone with its tokenizer and
            image processor. ``dual_tower``: a full Hugging Face dual encoder (CLIP,
            SigLIP, any model with ``get_image_features`` / ``get_text_features``): both
            towers, projected features, its own preprocessing. ``mllm``: a
            Qwen2-VL-family checkpoint (``Qwen2VLForConditionalGeneration``). Its own config
            then sets widths and depths (``hidden_size`` / ``*_layers`` / ``patch_size`` are
            ignored).
        pretrained_init: ``pretrained`` or ``random`` (the same architecture, fresh weights).
        image_tower: dual_tower only: a pretrained image backbone beside the text side
            (``text_tower``, or the SigLIP text transformer from this config): a Hugging Face
            vision model folder (ViT, DINOv2, ConvNeXt, SigLIP vision: ``AutoModel`` +
            ``AutoImageProcessor``) or a CNN state-dict file (EfficientNet-Lite ``.pth``,
            ``moon_rec.encoders.cnn``).
        image_tower_arch: the CNN of a state-dict file (``efficientnet_lite0`` / ``1`` /
            ``2``; None: read from the file name).
        image_tower_init: ``pretrained`` or ``random`` (the ablation).
        image_tower_stages: a CNN image tower only: pool these of its stage maps (0 the
            stem, 1-7 its stages, 8 the head) by channel mean and std, concatenated, instead
            of the head's mean; the trunk above the last one is not run. Probed on the small
            world (``benchmarks/look_layers.py --cnn``), the middle stages keep colour,
            pattern and shape that the ImageNet head pools away.
        image_resolution: pixels a pretrained image side runs at (the photos of
            ``image_size`` are resized to it inside the encoder); 0: its processor's size.
        lora: mllm with ``pretrained`` only: train low-rank adapters (peft) on the decoder
            instead of its full weights.
        Like ``text_tower``, the source paths are provenance: a checkpoint carries its copy
        of every pretrained part, and they are not part of ``model_version``.
    """

    model_config = ConfigDict(extra="forbid")

    backbone: Backbone = "dual_tower"
    embed_dim: int = 256
    dims: tuple[int, ...] = DEFAULT_DIMS
    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 128
    vision_layers: int = 2
    text_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 0
    max_text_len: int = 32
    vocab_size: int = 2000
    vision_pool: Literal["mean", "head"] = "mean"
    fusion: Literal["mlp", "mean", "image"] = "mlp"
    conv_stem: int = 0
    spatial_merge_size: int = 2
    seed: int = 0
    text_tower: str | None = None
    text_tower_init: Literal["pretrained", "random"] = "pretrained"
    pretrained: str | None = None
    pretrained_init: Literal["pretrained", "random"] = "pretrained"
    image_tower: str | None = None
    image_tower_arch: Literal["efficientnet_lite0", "efficientnet_lite1",
                              "efficientnet_lite2"] | None = None
    image_tower_init: Literal["pretrained", "random"] = "pretrained"
    image_tower_stages: tuple[int, ...] = ()
    image_resolution: int = Field(default=0, ge=0)
    lora: LoraConfig | None = None

    @field_validator("dims")
    @classmethod
    def _ascending(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or list(v) != sorted(set(v)) or v[0] <= 0:
            raise ValueError(f"dims must be ascending positive integers, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EncoderConfig:
        if self.dims[-1] != self.embed_dim:
            raise ValueError(f"dims {self.dims} must end at embed_dim {self.embed_dim}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by {self.num_heads}")
        if self.conv_stem:
            if self.backbone != "dual_tower":
                raise ValueError("conv_stem is a dual_tower option")
            if self.patch_size % 4:
                raise ValueError(f"conv_stem needs patch_size a multiple of 4, got {self.patch_size}")
        if self.text_tower is not None:
            if self.backbone != "dual_tower":
                raise ValueError("text_tower (a pretrained text model) is a dual_tower option")
            if not self.text_tower.strip():
                raise ValueError("text_tower is an empty path")
        for name in ("pretrained", "image_tower"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ValueError(f"{name} is an empty path")
        if self.image_tower_stages and self.image_tower is None:
            raise ValueError(f"image_tower_stages {list(self.image_tower_stages)}: an option of "
                             "a pretrained CNN image tower, and image_tower is not set "
                             "(--image-tower FILE)")
        if self.image_tower is not None and self.backbone != "dual_tower":
            raise ValueError("image_tower (a pretrained image model) is a dual_tower option")
        if self.pretrained is not None and self.backbone == "dual_tower" and (
                self.text_tower is not None or self.image_tower is not None):
            raise ValueError("pretrained (a full dual encoder) brings both towers: drop "
                             "text_tower / image_tower, or drop pretrained")
        if self.lora is not None and (self.backbone != "mllm" or self.pretrained is None):
            raise ValueError("lora adapts a pretrained mllm backbone (backbone: mllm with "
                             "pretrained)")
        if self.backbone == "mllm" and self.pretrained is None:
            grid = self.image_size // self.patch_size
            if grid % self.spatial_merge_size:
                raise ValueError(
                    f"patch grid {grid} is not a multiple of spatial_merge_size "
                    f"{self.spatial_merge_size}"
                )
            if (self.hidden_size // self.num_heads) % 4:
                raise ValueError("mllm head_dim must be a multiple of 4 (M-RoPE sections)")
        return self

    @property
    def mlp_size(self) -> int:
        return self.intermediate_size or 2 * self.hidden_size

    @property
    def tokenizer_folder(self) -> str | None:
        """The folder of a pretrained tokenizer (a text tower's or a pretrained backbone's);
        None: the catalog word-piece tokenizer."""
        return self.text_tower if self.text_tower is not None else self.pretrained

    @property
    def pretrained_towers(self) -> bool:
        """Whether a dual tower has a pretrained image side (``PretrainedTowersEncoder``)."""
        return self.backbone == "dual_tower" and (self.pretrained is not None
                                                  or self.image_tower is not None)

    @property
    def sources(self) -> list[str]:
        """The local paths a fresh encoder of this config reads."""
        return [p for p in (self.text_tower, self.pretrained, self.image_tower) if p]
