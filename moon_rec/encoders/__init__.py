"""MOON encoders: one interface (text query, image, product -> one Matryoshka vector) over
two backbones built from `transformers` configs (SigLIP-style dual tower, Qwen2-VL-style
MLLM); the dual tower's text side may be a pretrained text model from a local folder."""

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
