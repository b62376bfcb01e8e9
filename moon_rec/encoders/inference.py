"""Using a trained encoder: find its checkpoint and embed products, images and texts in
batches: the one encode path of the project.

The batch embed job (``moon_rec.featurestore.embed_job``), recall
(``moon_rec.retrieval.recall``), the ranker's query embeddings
(``moon_rec.ranking.queries``), serving's query encoder and training-time mining all call
``encode`` (through ``embed_products`` / ``embed_images`` / ``embed_texts``), so the
vectors measured are the vectors served: the same precision, the same padding, the same
image conversion. Images reach it already prepared by ``moon_rec.data.images``
(``decode_prepared``: the one image preparation), as uint8 (S, S, 3) arrays or a uint8
tensor [N, 3, S, S].

- Precision: ``fp32``; ``bf16`` (matmuls in bfloat16 under autocast; product vectors stay
  within cosine 0.9999 of fp32); ``auto`` (the default): bf16 where the device computes it
  natively (CUDA, or a CPU with AVX512-BF16/AMX), else fp32. Outputs are float32.
- Padding: each batch of texts is padded to its longest text, not to ``max_text_len``
  (padding is masked out of attention and pooling: the same vectors to float rounding,
  for a third of the work on catalog titles).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from moon_rec.encoders.base import MoonEncoder, images_to_tensor

PRECISIONS = ("auto", "fp32", "bf16")
Kind = Literal["product", "image", "text"]
Images = Sequence[np.ndarray] | torch.Tensor


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (holding encoder/) or an encoder checkpoint directory -> the latter."""
    p = Path(path)
    if (p / "encoder" / "moon_encoder.json").exists():
        return p / "encoder"
    if (p / "moon_encoder.json").exists():
        return p
    raise FileNotFoundError(f"no MOON encoder checkpoint at {p} (nor at {p / 'encoder'})")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16``: what ``auto`` means on ``device`` (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return _native_precision(str(device))


@functools.cache
def _native_precision(device: str) -> str:
    """What ``auto`` means on ``device``, asked of the hardware once per process (serving
    encodes one query per request)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if dev.type == "cpu":
        native = torch.backends.mkldnn.is_available() and bool(
            torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
        return "bf16" if native else "fp32"
    return "fp32"


class _LongestPadding:
    """A tokenizer proxy that cuts the all-padding columns off the right of a batch."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)

    def __call__(self, texts: Any, max_len: int, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        ids, mask = self._tokenizer(texts, max_len, **kwargs)
        if mask.numel():
            keep = int(mask.sum(1).max())
            ids, mask = ids[:, :keep].contiguous(), mask[:, :keep].contiguous()
        return ids, mask


@contextlib.contextmanager
def _longest_padding(encoder: Any) -> Iterator[None]:
    """Batches padded to their longest text while ``encode`` runs."""
    tok = getattr(encoder, "tokenizer", None)
    if tok is None or not callable(tok) or isinstance(tok, _LongestPadding):
        yield
        return
    encoder.tokenizer = _LongestPadding(tok)
    try:
        yield
    finally:
        encoder.tokenizer = tok


def image_size_of(encoder: Any) -> int:
    size = getattr(encoder, "image_size", None)
    if size is None:
        size = encoder.config.image_size
    return int(size)


def _pixels(images: Images, size: int, lo: int, hi: int) -> torch.Tensor:
    """Rows [lo, hi) of ``images`` as float [n, 3, S, S] in [0, 1]."""
    if isinstance(images, torch.Tensor):  # uint8 [N, 3, S, S]
        return images[lo:hi].float() / 255.0
    batch = images[lo:hi]
    if all(a is not None and a.shape == (size, size, 3) for a in batch):
        # one vectorised conversion, the same values as images_to_tensor's
        return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous().float() / 255.0
    return images_to_tensor(batch, size)  # raises, naming the row (within the batch)


def encode(
    encoder: MoonEncoder | Any,
    kind: Kind,
    texts: Sequence[str] | None = None,
    images: Images | None = None,
    *,
    batch_size: int = 256,
    precision: str = "auto",
) -> np.ndarray:
    """The encoder's vectors [N, D] float32 (L2-normalised) of N products, images or texts.

    Args:
        encoder: a MOON encoder (put in eval mode here).
        kind: ``product`` (``texts`` with ``images``; ``images`` None: text-only products,
            ``texts`` being their ``product_text``), ``image`` or ``text``.
        texts: [N] titles / product texts / queries.
        images: [N] prepared (S, S, 3) uint8 arrays, or uint8 [N, 3, S, S].
        batch_size: inputs per encoder call.
        precision: ``auto``, ``fp32`` or ``bf16`` (see the module docstring).
    """
    n = len(texts) if texts is not None else (len(images) if images is not None else 0)
    if hasattr(encoder, "eval"):
        encoder.eval()
    device = getattr(encoder, "device", torch.device("cpu"))
    precision = resolve_precision(precision, device)
    size = image_size_of(encoder) if images is not None else 0
    out: list[np.ndarray] = []
    with (
        torch.inference_mode(),
        torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                       enabled=precision == "bf16"),
        _longest_padding(encoder),
    ):
        for s in range(0, n, batch_size):
            e = min(n, s + batch_size)
            px = None if images is None else _pixels(images, size, s, e).to(device)
            if kind == "text":
                assert texts is not None
                x = encoder.encode_text(list(texts[s:e]))
            elif kind == "image":
                assert px is not None
                x = encoder.encode_image(px)
            else:
                assert texts is not None
                x = encoder.encode_product(list(texts[s:e]), px)
            out.append(x.float().cpu().numpy())
    dim = int(getattr(encoder, "embed_dim", 0) or encoder.dims[-1])
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def embed_products(encoder: MoonEncoder | Any, titles: Sequence[str], images: Images | None,
                   batch_size: int = 256, *, precision: str = "auto") -> np.ndarray:
    """Products (titles, prepared images) -> float32 [N, D]; ``images`` None: text-only
    products (``titles`` are then their ``product_text``)."""
    return encode(encoder, "product", titles, images, batch_size=batch_size,
                  precision=precision)


def embed_images(encoder: MoonEncoder | Any, images: Images, batch_size: int = 256, *,
                 precision: str = "auto") -> np.ndarray:
    """Prepared images -> float32 [N, D]."""
    return encode(encoder, "image", None, images, batch_size=batch_size, precision=precision)


def embed_texts(encoder: MoonEncoder | Any, texts: Sequence[str], batch_size: int = 512, *,
                precision: str = "auto") -> np.ndarray:
    """Texts (queries, titles) -> float32 [N, D]."""
    return encode(encoder, "text", texts, None, batch_size=batch_size, precision=precision)
