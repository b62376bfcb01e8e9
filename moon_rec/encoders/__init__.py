"""MOON encoders: one interface (text query, image, product -> one Matryoshka vector) over
two backbones built from `transformers` configs (SigLIP-style dual tower, Qwen2-VL-style
MLLM) or started from local checkpoints: a pretrained text tower, a pretrained image tower
(a Hugging Face vision model or an EfficientNet-Lite state dict) or a full dual encoder
(``pretrained``: ``PretrainedTowersEncoder``), a Qwen2-VL-family MLLM (optionally LoRA)."""

from moon_rec.encoders.base import (
    MoonEncoder,
    build_encoder,
    check_images,
    encoder_class,
    images_to_tensor,
    make_tokenizer,
    matryoshka,
    product_text,
)
from moon_rec.encoders.config import EncoderConfig
from moon_rec.encoders.tokenizer import MoonTokenizer, PretrainedTokenizer, TextTokenizer

__all__ = [
    "EncoderConfig",
    "MoonEncoder",
    "MoonTokenizer",
    "PretrainedTokenizer",
    "TextTokenizer",
    "build_encoder",
    "check_images",
    "encoder_class",
    "images_to_tensor",
    "make_tokenizer",
    "matryoshka",
    "product_text",
]
