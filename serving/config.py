"""The serving limits and policies (``ServiceConfig``) and the id range of the API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

ACTIONS: tuple[str, ...] = ("click", "cart", "buy")
MAX_ID = 2**63 - 1


class ServiceConfig(BaseModel):
    """Serving limits and policies; unknown keys are errors.

    Args:
        max_candidates: most item_ids per /rank request.
        retrieve_k: candidates retrieved by ANN when /rank has none.
        max_k: most results of /search and top_k.
        allow_unknown_users: rank users the store has no behaviour for as cold users
            (default: 404 naming user_id).
        query_cache: query embeddings kept (LRU).
        refresh_s: seconds between checks for a new embedding snapshot (0: never).
        store_retry_s: seconds between probes of a store that failed (503s meanwhile).
        ann_kind: ``auto`` or an ``moon_rec.retrieval.ann`` kind.
        threads: torch intra-op threads.
    """

    model_config = ConfigDict(extra="forbid")

    max_candidates: int = Field(default=1000, ge=1)
    retrieve_k: int = Field(default=100, ge=1)
    max_k: int = Field(default=1000, ge=1)
    allow_unknown_users: bool = False
    query_cache: int = Field(default=10_000, ge=0)
    refresh_s: float = Field(default=30.0, ge=0)
    ann_kind: str = "auto"
    threads: int = Field(default=1, ge=1)
    store_retry_s: float = Field(default=1.0, gt=0)
