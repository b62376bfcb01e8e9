"""Retrieval: exact faiss search and the encoder's intermediate metrics (image-search
recall per Matryoshka dim, text-query recall, category probe)."""

# Lazy exports (PEP 562): `moon --help` must not pay for torch/faiss/torchrec imports.

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ExactIndex": "moon_rec.retrieval.index",
    "ImageSearchRecall": "moon_rec.retrieval.recall",
    "color_histogram": "moon_rec.retrieval.recall",
    "evaluate_checkpoint": "moon_rec.retrieval.recall",
    "evaluate_encoder": "moon_rec.retrieval.recall",
    "recall_at_k": "moon_rec.retrieval.recall",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
