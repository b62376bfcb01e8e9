"""The serving limits and policies (``ServiceConfig``) and the id range of the API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

ACTIONS: tuple[str, ...] = ("click", "cart", "buy")
MAX_ID = 2**63 - 1
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG")


class ServiceConfig(BaseModel):
    """Serving limits and policies, with safe defaults; unknown keys are errors.

    Args:
        max_candidates: most item_ids per /rank request.
        retrieve_k: candidates retrieved by ANN when /rank has none.
        max_k: most results of /search and top_k.
        allow_unknown_users: rank users the store has no behaviour for as cold users
            (default: 404 naming user_id).
        query_cache: query embeddings kept (LRU).
        refresh_s: seconds between checks for a new embedding snapshot (0: never).
        sync_s: seconds between reads of the store's item change log (items written by
            other processes, or re-written, reach this process's center; 0: never).
        store_retry_s: seconds between probes of a store that failed (503s meanwhile).
        health_s: seconds between health probes of the store while it answers (what
            /healthz reports without waiting on the store; 0: none).
        ann_kind: ``auto`` or an ``moon_rec.retrieval.ann`` kind.
        threads: torch intra-op threads.
        max_body_bytes: largest request body read (413 beyond).
        max_image_pixels: largest image (width x height) decoded (422 beyond, decided
            from the header before decoding).
        image_formats: accepted image formats (PIL names).
        behaviour_max_age_s: oldest accepted behaviour ``ts``, seconds before now.
        behaviour_max_ahead_s: latest accepted behaviour ``ts``, seconds after now (clock
            skew); outside the window a behaviour is a 422 naming ``ts``.
    """

    model_config = ConfigDict(extra="forbid")

    max_candidates: int = Field(default=1000, ge=1)
    retrieve_k: int = Field(default=100, ge=1)
    max_k: int = Field(default=1000, ge=1)
    allow_unknown_users: bool = False
    query_cache: int = Field(default=10_000, ge=0)
    refresh_s: float = Field(default=30.0, ge=0)
    sync_s: float = Field(default=1.0, ge=0)
    ann_kind: str = "auto"
    threads: int = Field(default=1, ge=1)
    store_retry_s: float = Field(default=1.0, gt=0)
    health_s: float = Field(default=1.0, ge=0)
    max_body_bytes: int = Field(default=16 * 2**20, ge=1024)
    max_image_pixels: int = Field(default=4096 * 4096, ge=1)
    image_formats: tuple[str, ...] = IMAGE_FORMATS
    behaviour_max_age_s: float = Field(default=30 * 86_400.0, ge=0)
    behaviour_max_ahead_s: float = Field(default=300.0, ge=0)
