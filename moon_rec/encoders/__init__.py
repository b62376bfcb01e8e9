"""MOON encoders: one interface (text query, image, product -> one Matryoshka vector) over
two backbones built from `transformers` configs (SigLIP-style dual tower, Qwen2-VL-style
MLLM)."""

from moon_rec.encoders.base import (
    MoonEncoder,
    build_encoder,
    check_images,
    encoder_class,
    images_to_tensor,
    matryoshka,
)
from moon_rec.encoders.config import EncoderConfig
from moon_rec.encoders.tokenizer import MoonTokenizer

__all__ = [
    "EncoderConfig",
    "MoonEncoder",
    "MoonTokenizer",
    "build_encoder",
    "check_images",
    "encoder_class",
    "images_to_tensor",
    "matryoshka",
]
