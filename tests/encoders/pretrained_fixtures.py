"""Tiny random checkpoints saved with ``save_pretrained`` (CLIP, SigLIP, ViT, Qwen2-VL) and a
small CNN state dict, in the folder / file layouts real checkpoints have (never real files)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BertTokenizer,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    ViTConfig,
    ViTImageProcessorPil,
    ViTModel,
)

from moon_rec.encoders.cnn import EfficientNetLite

WORDS = ["red", "blue", "green", "dress", "boots", "shirt", "striped", "dotted", "plain",
         "the", "of", "and", "a", "round", "square"]
TEXTS = ["red dress", "blue striped shirt", "green boots"]


def save_tokenizer(folder: Path) -> int:
    """A WordPiece tokenizer ([PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3) into ``folder``; its size."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *chars,
             *(f"##{c}" for c in chars), *".,:;()'-"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(vocab=str(folder / "vocab.txt"))
    tok.save_pretrained(str(folder))
    return len(vocab)


def _text(vocab: int) -> dict[str, object]:
    return {"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32,
            "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}


def _vision() -> dict[str, object]:
    return {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": 32, "patch_size": 8}


def make_clip(folder: Path) -> Path:
    vocab = save_tokenizer(folder)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=_text(vocab), vision_config=_vision(),
                         projection_dim=16)).save_pretrained(str(folder))
    CLIPImageProcessorPil(size={"shortest_edge": 32},
                       crop_size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder


def make_siglip(folder: Path) -> Path:
    vocab = save_tokenizer(folder)
    torch.manual_seed(0)
    SiglipModel(SiglipConfig(text_config=_text(vocab),
                             vision_config=_vision())).save_pretrained(str(folder))
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder


def make_vit(folder: Path) -> Path:
    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, image_size=32, patch_size=8)).save_pretrained(str(folder))
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder


def make_cnn(folder: Path) -> Path:
    """A random EfficientNet-Lite0 state dict named as the registry wheel's file."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = EfficientNetLite("efficientnet_lite0")
    with torch.no_grad():  # non-trivial batch-norm statistics, as a trained file has
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = folder / "efficientnet-lite0-test.pth"
    torch.save(net.state_dict(), path)
    return path


def make_qwen2vl(folder: Path) -> Path:
    """A 1-layer Qwen2-VL (vision patch 8, 2x2 merge) with a WordPiece tokenizer and a
    Qwen2-VL image processor."""
    from transformers import Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from moon_rec.encoders.config import EncoderConfig
    from moon_rec.encoders.mllm import qwen2vl_config

    vocab = save_tokenizer(folder)
    torch.manual_seed(0)
    cfg = qwen2vl_config(EncoderConfig(backbone="mllm", hidden_size=32, num_heads=2,
                                       vision_layers=1, text_layers=1, patch_size=8,
                                       image_size=32, dims=(8, 16, 64), embed_dim=64), vocab)
    Qwen2VLForConditionalGeneration(cfg).save_pretrained(str(folder))
    Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                             min_pixels=16 * 16, max_pixels=64 * 64).save_pretrained(str(folder))
    return folder


def make_convnext(folder: Path) -> Path:
    """A 2-stage ConvNeXt (4D last hidden state) with ConvNeXt's crop_pct processor."""
    from transformers import ConvNextConfig, ConvNextImageProcessorPil, ConvNextModel

    torch.manual_seed(0)
    ConvNextModel(ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1],
                                 image_size=32)).save_pretrained(str(folder))
    ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(str(folder))
    return folder


def make_dinov2(folder: Path) -> Path:
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, image_size=32, patch_size=8)
                ).save_pretrained(str(folder))
    BitImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                         do_center_crop=True).save_pretrained(str(folder))
    return folder
