"""MLLM MOON encoder: a Qwen2-VL-style vision-language decoder, run bidirectionally.

Built from a tiny `transformers` ``Qwen2VLConfig``. The image goes through Qwen2-VL's
vision transformer (patches, 2x2 spatial merge) and its tokens are placed before the title
tokens; the decoder runs with **bidirectional** attention and the last hidden states of the
real tokens are mean-pooled and projected to D, as in MOON.

How attention is made bidirectional: Qwen2-VL's text model accepts a precomputed mask
mapping ``{"full_attention": mask}`` instead of building its causal mask, and its SDPA
attention takes ``is_causal`` from the call's kwargs. We pass a padding-only mask built by
``transformers.masking_utils.create_bidirectional_mask`` and ``is_causal=False``; a test
checks that the first token's state depends on the last token. For the generative
pretraining objective (title generation from the image) the same model runs causally with
its language-model head.

Position ids are Qwen2-VL's M-RoPE ids (temporal, height, width): image tokens at
(0, row, col), text tokens after them at ``max(grid_h, grid_w) + k`` on all three axes,
exactly what ``Qwen2VLModel.get_rope_index`` computes (tested), but vectorised.

From a local Qwen2-VL-family checkpoint (``EncoderConfig.pretrained``): the model, its
tokenizer and its image processor's mean / std and patch / merge sizes; the photos are
resized inside the encoder to the nearest multiple of ``patch_size * merge_size`` (or to
``image_resolution``). With ``EncoderConfig.lora`` the decoder's base weights are frozen and
low-rank adapters (peft) train in their place; a checkpoint keeps the base weights under
their own names in ``backbone/`` and the adapters in ``backbone/lora.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.masking_utils import create_bidirectional_mask

from moon_rec.encoders.backbones import PROCESSING_FILE, ImageProcessing, longest_layer_list
from moon_rec.encoders.base import BACKBONE_DIR, MoonEncoder
from moon_rec.encoders.config import EncoderConfig, LoraConfig
from moon_rec.encoders.tokenizer import MoonTokenizer, TextTokenizer

TEMPORAL_PATCH = 2
LORA_FILE = "lora.safetensors"
# model_type -> the `transformers` class of a Qwen2-VL-family checkpoint
MLLM_FAMILY = {"qwen2_vl": "Qwen2VLForConditionalGeneration"}


def qwen2vl_config(config: EncoderConfig, vocab_size: int) -> Qwen2VLConfig:
    """The tiny Qwen2-VL config (vision encoder + decoder) of an MLLM encoder."""
    head_dim = config.hidden_size // config.num_heads
    half = head_dim // 2
    t = half // 4
    section = [t, (half - t) // 2, half - t - (half - t) // 2]
    text = {
        "vocab_size": vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.mlp_size,
        "num_hidden_layers": config.text_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_heads,
        "max_position_embeddings": 4 * (config.max_text_len + 256),
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                            "mrope_section": section},
        "pad_token_id": MoonTokenizer.pad_id,
        "bos_token_id": MoonTokenizer.bos_id,
        "eos_token_id": MoonTokenizer.eos_id,
        "use_cache": False,
    }
    vision = {
        "depth": config.vision_layers,
        "embed_dim": config.hidden_size,
        "hidden_size": config.hidden_size,
        "num_heads": config.num_heads,
        "mlp_ratio": max(1, config.mlp_size // config.hidden_size),
        "patch_size": config.patch_size,
        "spatial_merge_size": config.spatial_merge_size,
        "temporal_patch_size": TEMPORAL_PATCH,
        "in_channels": 3,
    }
    cfg = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=MoonTokenizer.img_id,
        video_token_id=MoonTokenizer.vid_id,
        vision_start_token_id=MoonTokenizer.bos_id,
        vision_end_token_id=MoonTokenizer.eos_id,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


def patchify(images: torch.Tensor, patch: int, merge: int,
             temporal: int = TEMPORAL_PATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 3, H, W] -> Qwen2-VL's flat patches [N * gh * gw, 3 * T * patch * patch]
    and grid_thw [N, 3] (the same layout as ``Qwen2VLImageProcessor``; a still image is
    repeated over the T temporal frames of a patch)."""
    n, c, h, w = images.shape
    gh, gw = h // patch, w // patch
    x = images.reshape(n, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)
    x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, temporal, -1, -1)
    flat = x.reshape(n * gh * gw, c * temporal * patch * patch)
    grid = torch.tensor([[1, gh, gw]] * n, dtype=torch.long, device=images.device)
    return flat, grid


class MllmEncoder(MoonEncoder):
    """Qwen2-VL-style MLLM embedding model (bidirectional, mean-pooled).

    Example:
        >>> tok = MoonTokenizer.train(["red dress", "blue shoe"], vocab_size=60)
        >>> enc = MllmEncoder._build(EncoderConfig(backbone="mllm"), tok)
        >>> enc.encode_product(["red dress"], torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 256])
    """

    backbone_name = "mllm"

    def __init__(self, config: EncoderConfig, tokenizer: TextTokenizer,
                 backbone: Qwen2VLForConditionalGeneration,
                 processing: ImageProcessing | None = None) -> None:
        if config.pretrained is None and not isinstance(tokenizer, MoonTokenizer):
            raise ValueError("the mllm backbone built from a config needs the catalog "
                             "MoonTokenizer (its special tokens name the image positions)")
        super().__init__(config, tokenizer)
        self.backbone = backbone
        vision: Any = backbone.config.vision_config
        self.patch = int(vision.patch_size)
        self.merge = int(vision.spatial_merge_size)
        self.temporal = int(getattr(vision, "temporal_patch_size", TEMPORAL_PATCH))
        self.image_token_id = int(backbone.config.image_token_id)
        # a pretrained checkpoint's own preprocessing; None: (x - 0.5) / 0.5 at image_size
        self.processing = processing
        side = processing.out_size if processing is not None else config.image_size
        text: Any = backbone.config.text_config
        self.proj = nn.Linear(int(text.hidden_size), config.embed_dim)
        self.image_grid = side // self.patch // self.merge  # decoder tokens per side

    @classmethod
    def _build(cls, config: EncoderConfig, tokenizer: TextTokenizer,
               backbone: Qwen2VLForConditionalGeneration | None = None) -> MllmEncoder:
        if config.pretrained is not None:
            model, processing = load_mllm(config)
            torch.manual_seed(config.seed)  # the head starts the same however it was read
            return cls(config, tokenizer, model, processing)
        if backbone is None:
            backbone = Qwen2VLForConditionalGeneration(qwen2vl_config(config, tokenizer.vocab_size))
        return cls(config, tokenizer, backbone)

    @classmethod
    def _load_backbone(cls, config: EncoderConfig, tokenizer: TextTokenizer,
                       backbone_dir: Path) -> MllmEncoder:
        backbone = Qwen2VLForConditionalGeneration.from_pretrained(
            str(backbone_dir), local_files_only=True, attn_implementation="sdpa"
        )
        if config.pretrained is None:
            return cls(config, tokenizer, backbone)
        processing = ImageProcessing.from_folder(backbone_dir)
        if config.lora is not None:
            add_lora(backbone, config.lora)
            lora = load_file(str(backbone_dir / LORA_FILE))
            missing = set(lora) ^ {k for k in backbone.state_dict() if "lora_" in k}
            if missing:
                raise ValueError(f"{backbone_dir / LORA_FILE}: adapters do not match the "
                                 f"config's lora ({sorted(missing)[:3]} ...)")
            backbone.load_state_dict(lora, strict=False)
        return cls(config, tokenizer, backbone, processing)

    def _backbone_module(self) -> Qwen2VLForConditionalGeneration:
        return self.backbone

    def _pretrained_parts(self) -> dict[str, Any]:
        if self.config.pretrained is None:
            return super()._pretrained_parts()
        assert self.processing is not None
        return {BACKBONE_DIR: _PretrainedMllmPart(self.backbone, self.tokenizer, self.processing)}

    def pretrained_text_parameters(self) -> list[nn.Parameter]:
        if self.config.pretrained is None:
            return []
        visual = {id(p) for p in self.backbone.model.visual.parameters()}
        return [p for p in self.backbone.parameters() if id(p) not in visual]

    def pretrained_image_parameters(self) -> list[nn.Parameter]:
        if self.config.pretrained is None:
            return []
        return list(self.backbone.model.visual.parameters())

    def image_blocks(self) -> list[nn.Module]:
        if self.config.pretrained is None:
            return []
        visual = self.backbone.model.visual
        return [visual.patch_embed, *longest_layer_list(visual)]

    def _head_modules(self) -> dict[str, nn.Module]:
        return {"proj": self.proj}

    # -- sequence assembly -------------------------------------------------------------
    @property
    def n_image_tokens(self) -> int:
        return self.image_grid * self.image_grid

    def _sequence(
        self, titles: list[str] | None, images: torch.Tensor | None, *, add_eos: bool = False
    ) -> dict[str, torch.Tensor]:
        """input_ids / attention_mask [N, L], position_ids [3, N, L], mm_token_type_ids,
        and the vision inputs, for [image tokens][title tokens][padding]."""
        dev = self.device
        parts_ids, parts_mask, parts_type = [], [], []
        n = len(titles) if titles is not None else int(images.shape[0])  # type: ignore[union-attr]
        if images is not None:
            k = self.n_image_tokens
            parts_ids.append(torch.full((n, k), self.image_token_id, dtype=torch.long))
            parts_mask.append(torch.ones((n, k), dtype=torch.long))
            parts_type.append(torch.ones((n, k), dtype=torch.long))
        if titles is not None:
            ids, mask = self.tokenizer(titles, self.config.max_text_len, field="title",
                                       add_eos=add_eos)
            parts_ids.append(ids)
            parts_mask.append(mask)
            parts_type.append(torch.zeros_like(ids))
        input_ids = torch.cat(parts_ids, 1).to(dev)
        mask = torch.cat(parts_mask, 1).to(dev)
        types = torch.cat(parts_type, 1).to(dev)
        # M-RoPE positions (see module docstring).
        length = input_ids.shape[1]
        pos = torch.zeros((3, n, length), dtype=torch.long, device=dev)
        offset = 0
        if images is not None:
            g = self.image_grid
            rows = torch.arange(g, device=dev).repeat_interleave(g)
            cols = torch.arange(g, device=dev).repeat(g)
            pos[1, :, : g * g] = rows
            pos[2, :, : g * g] = cols
            offset = g
        start = self.n_image_tokens if images is not None else 0
        pos[:, :, start:] = offset + torch.arange(length - start, device=dev)
        out = {"input_ids": input_ids, "attention_mask": mask, "position_ids": pos,
               "mm_token_type_ids": types}
        if images is not None:
            pixels = (images - 0.5) / 0.5 if self.processing is None else self.processing(images)
            flat, grid = patchify(pixels, self.patch, self.merge, self.temporal)
            out["pixel_values"] = flat
            out["image_grid_thw"] = grid
        return out

    def _hidden(self, seq: dict[str, torch.Tensor], *, causal: bool) -> torch.Tensor:
        model = self.backbone.model
        embeds = model.get_input_embeddings()(seq["input_ids"])
        if "pixel_values" in seq:
            img = model.get_image_features(seq["pixel_values"], seq["image_grid_thw"],
                                           return_dict=True)
            img_embeds = torch.cat(list(img.pooler_output), 0).to(embeds.dtype)
            mask = (seq["input_ids"] == self.image_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(mask, img_embeds)
        lm = model.language_model
        if causal:
            attn: object = seq["attention_mask"]
            kwargs: dict[str, object] = {}
        else:
            bidir = create_bidirectional_mask(
                config=lm.config, inputs_embeds=embeds, attention_mask=seq["attention_mask"]
            )
            attn = {"full_attention": bidir}
            kwargs = {"is_causal": False}
        out = lm(inputs_embeds=embeds, attention_mask=attn, position_ids=seq["position_ids"],
                 use_cache=False, **kwargs)
        return out.last_hidden_state

    def _pool(self, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self._hidden(seq, causal=False)
        m = seq["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.proj(pooled)

    def _text(self, texts: list[str]) -> torch.Tensor:
        return self._pool(self._sequence(texts, None))

    def _image(self, images: torch.Tensor) -> torch.Tensor:
        return self._pool(self._sequence(None, images))

    def _product(self, titles: list[str], images: torch.Tensor) -> torch.Tensor:
        return self._pool(self._sequence(titles, images))

    def caption_loss(self, titles: list[str], images: torch.Tensor) -> torch.Tensor:
        """Generative pretraining: next-token cross-entropy of the title (+EOS) given the
        image, causal attention, the backbone's LM head. Returns a scalar."""
        self._check_texts(titles, "title")
        seq = self._sequence(titles, images.to(self.device), add_eos=True)
        hidden = self._hidden(seq, causal=True)
        logits = self.backbone.lm_head(hidden[:, :-1])
        target = seq["input_ids"][:, 1:].clone()
        target[seq["attention_mask"][:, 1:] == 0] = -100
        target[:, : self.n_image_tokens - 1] = -100  # predict text only
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               ignore_index=-100)

    def auxiliary_loss(self, inputs: dict) -> torch.Tensor | None:
        caption = inputs.get("caption")
        if caption is None:
            return None
        titles, images = caption
        return self.caption_loss(titles, images)


# -- a pretrained Qwen2-VL-family checkpoint ---------------------------------------------


def load_mllm(config: EncoderConfig) -> tuple[Qwen2VLForConditionalGeneration, ImageProcessing]:
    """The checkpoint of ``config.pretrained`` (offline) with LoRA adapters when
    ``config.lora``, and its image preprocessing at the encoder's resolution.

    Raises:
        FileNotFoundError / ValueError: naming the folder (no such folder, no config.json,
            not a Qwen2-VL-family model, no image processor).
    """
    import transformers
    from transformers import AutoConfig, AutoImageProcessor

    assert config.pretrained is not None
    p = Path(config.pretrained)
    if not (p / "config.json").is_file():
        why = "no such folder" if not p.is_dir() else "not a transformers model folder (no config.json)"
        raise FileNotFoundError(f"mllm checkpoint {p}: {why}")
    cfg = AutoConfig.from_pretrained(str(p), local_files_only=True)
    name = MLLM_FAMILY.get(cfg.model_type)
    if name is None:
        raise ValueError(f"mllm checkpoint {p}: a {cfg.model_type} model, not a Qwen2-VL-family "
                         f"one ({', '.join(MLLM_FAMILY)})")
    model_cls = getattr(transformers, name)
    model: Qwen2VLForConditionalGeneration = (
        model_cls(cfg) if config.pretrained_init == "random"
        else model_cls.from_pretrained(str(p), local_files_only=True, attn_implementation="sdpa"))
    model.config._attn_implementation = "sdpa"
    if (p / "preprocessor_config.json").is_file():
        proc = AutoImageProcessor.from_pretrained(str(p), local_files_only=True, backend="pil")
        mean, std = [float(v) for v in proc.image_mean], [float(v) for v in proc.image_std]
    elif (p / PROCESSING_FILE).is_file():  # a MOON checkpoint's backbone/
        saved = ImageProcessing.from_folder(p)
        mean, std = list(saved.mean), list(saved.std)
    else:
        raise FileNotFoundError(f"{p}: no preprocessor_config.json (the image processor's "
                                "mean and std)")
    vision: Any = model.config.vision_config
    factor = int(vision.patch_size) * int(vision.spatial_merge_size)
    side = config.image_resolution or config.image_size
    side = max(factor, round(side / factor) * factor)
    processing = ImageProcessing(side, side, (mean[0], mean[1], mean[2]),
                                 (std[0], std[1], std[2]), "bicubic")
    if config.lora is not None:
        add_lora(model, config.lora)
    return model, processing


def add_lora(model: Qwen2VLForConditionalGeneration, lora: LoraConfig) -> None:
    """Inject low-rank adapters (peft) into the decoder's ``target_modules`` and freeze
    the decoder's base weights (the vision tower and the rest keep theirs trainable)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    decoder = model.model.language_model
    peft_cfg = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                              target_modules=list(lora.target_modules), bias="none")
    inject_adapter_in_model(peft_cfg, decoder)
    for name, param in decoder.named_parameters():
        param.requires_grad_("lora_" in name)


class _PretrainedMllmPart:
    """Saves a pretrained MLLM so that backbone/ is itself a checkpoint folder: the model
    (base weights under their own names, adapters in ``lora.safetensors``), its tokenizer
    and the image processing it ran with."""

    def __init__(self, model: Qwen2VLForConditionalGeneration, tokenizer: TextTokenizer,
                 processing: ImageProcessing) -> None:
        self.model, self.tokenizer, self.processing = model, tokenizer, processing

    def save_pretrained(self, folder: Path) -> None:
        from dataclasses import asdict

        folder = Path(folder)
        state = self.model.state_dict()
        lora = {k: v.detach().cpu().contiguous() for k, v in state.items() if "lora_" in k}
        base = {k.replace(".base_layer.", "."): v for k, v in state.items() if "lora_" not in k}
        self.model.save_pretrained(str(folder), state_dict=base)
        if lora:
            save_file(lora, str(folder / LORA_FILE))
        hf = getattr(self.tokenizer, "hf", None)
        if hf is not None:
            hf.save_pretrained(str(folder))
        (folder / PROCESSING_FILE).write_text(json.dumps(asdict(self.processing), indent=2))
