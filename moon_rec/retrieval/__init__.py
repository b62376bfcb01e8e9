"""Retrieval: exact and ANN faiss search and the encoder's intermediate metrics (image-search
recall per Matryoshka dim, text-query recall, category probe)."""

from moon_rec._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "AnnConfig": "moon_rec.retrieval.ann",
    "AnnIndex": "moon_rec.retrieval.ann",
    "ExactIndex": "moon_rec.retrieval.index",
    "ImageSearchRecall": "moon_rec.retrieval.recall",
    "color_histogram": "moon_rec.retrieval.recall",
    "evaluate_checkpoint": "moon_rec.retrieval.recall",
    "evaluate_encoder": "moon_rec.retrieval.recall",
    "recall_at_k": "moon_rec.retrieval.recall",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
