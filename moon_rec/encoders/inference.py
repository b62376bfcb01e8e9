"""Using a trained encoder: find its checkpoint, embed products, images and texts in
batches (evaluation and training-time mining; the batch embedding job is
``moon_rec.featurestore.embed_job``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from moon_rec.encoders.base import MoonEncoder


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (holding encoder/) or an encoder checkpoint directory -> the latter."""
    p = Path(path)
    if (p / "encoder" / "moon_encoder.json").exists():
        return p / "encoder"
    if (p / "moon_encoder.json").exists():
        return p
    raise FileNotFoundError(f"no MOON encoder checkpoint at {p} (nor at {p / 'encoder'})")


@torch.no_grad()
def embed_products(encoder: MoonEncoder, titles: Sequence[str], images: torch.Tensor | None,
                   batch_size: int = 256) -> np.ndarray:
    """Products (titles, uint8 images [N, 3, S, S]) -> float32 [N, D]; ``images`` None:
    text-only products (``titles`` are then their ``product_text``)."""
    encoder.eval()
    out = [encoder.encode_product(
               list(titles[i:i + batch_size]),
               None if images is None else images[i:i + batch_size].float() / 255.0).cpu().numpy()
           for i in range(0, len(titles), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, encoder.embed_dim), np.float32)


@torch.no_grad()
def embed_images(encoder: MoonEncoder, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """uint8 images [N, 3, S, S] -> float32 [N, D]."""
    encoder.eval()
    out = [encoder.encode_image(images[i:i + batch_size].float() / 255.0).cpu().numpy()
           for i in range(0, images.shape[0], batch_size)]
    return np.concatenate(out) if out else np.zeros((0, encoder.embed_dim), np.float32)


@torch.no_grad()
def embed_texts(encoder: MoonEncoder, texts: Sequence[str], batch_size: int = 512) -> np.ndarray:
    encoder.eval()
    out = [encoder.encode_text(list(texts[i:i + batch_size])).cpu().numpy()
           for i in range(0, len(texts), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, encoder.embed_dim), np.float32)
