"""The serving limits and policies (``ServiceConfig``) and the id range of the API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from moon_rec.data.images import ImageLimits

ACTIONS: tuple[str, ...] = ("click", "cart", "buy")
MAX_ID = 2**63 - 1
MIN_TOKEN_CHARS = 16
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
        item_feature_cache_s: seconds an item's values of the ranker's feature spec (item
            attributes, item CTR) are served from memory (``SpecFeatureReader``; 0: read
            the store on every request).
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
        max_image_side: longest image side (it also bounds the padded square canvas).
        max_image_aspect: largest long side / short side of an image.
        max_image_decode_bytes: memory decoding and padding one image may take
            (``moon_rec.data.images.decode_bytes``, from the header).
        image_formats: accepted image formats (PIL names).
        behaviour_max_age_s: oldest accepted behaviour ``ts``, seconds before now.
        behaviour_max_ahead_s: latest accepted behaviour ``ts``, seconds after now (clock
            skew); outside the window a behaviour is a 422 naming ``ts``.
        workers: threads running the reads' work (/rank, /search: decoding, encoding,
            ranking, store reads) off the event loop (``serving.workers``).
        write_workers: threads running the writes (/items, /behaviors); one: a store has
            one write lock, and more writers of one process only queue on it and (SQLite's
            busy wait being unfair) starve the other processes' writers past their timeout.
        max_queue: requests admitted beyond the busy workers of a pool; more are 503 with
            ``Retry-After`` (``retry_after_s``).
        header_timeout_s: a connection whose request line and headers have not all
            arrived this long after it opened (or after its previous response) is closed.
        write_token: the bearer token ``POST /items`` and ``/behaviors`` require
            (``Authorization: Bearer TOKEN``, at least 16 characters); None: writes are
            refused (403), reads stay open.
    """

    model_config = ConfigDict(extra="forbid")

    max_candidates: int = Field(default=1000, ge=1)
    retrieve_k: int = Field(default=100, ge=1)
    max_k: int = Field(default=1000, ge=1)
    allow_unknown_users: bool = False
    query_cache: int = Field(default=10_000, ge=0)
    refresh_s: float = Field(default=30.0, ge=0)
    item_feature_cache_s: float = Field(default=60.0, ge=0)
    sync_s: float = Field(default=1.0, ge=0)
    ann_kind: str = "auto"
    threads: int = Field(default=1, ge=1)
    store_retry_s: float = Field(default=1.0, gt=0)
    health_s: float = Field(default=1.0, ge=0)
    max_body_bytes: int = Field(default=16 * 2**20, ge=1024)
    max_image_pixels: int = Field(default=4096 * 4096, ge=1)
    max_image_side: int = Field(default=ImageLimits().max_side, ge=1)
    max_image_aspect: float = Field(default=ImageLimits().max_aspect, ge=1.0, allow_inf_nan=False)
    max_image_decode_bytes: int = Field(default=ImageLimits().max_decode_bytes, ge=1)
    image_formats: tuple[str, ...] = IMAGE_FORMATS
    behaviour_max_age_s: float = Field(default=30 * 86_400.0, ge=0)
    behaviour_max_ahead_s: float = Field(default=300.0, ge=0)
    workers: int = Field(default=4, ge=1)
    write_workers: int = Field(default=1, ge=1)
    max_queue: int = Field(default=32, ge=0)
    retry_after_s: int = Field(default=1, ge=1)
    header_timeout_s: float = Field(default=10.0, gt=0)
    write_token: SecretStr | None = None

    @field_validator("write_token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value().strip()) < MIN_TOKEN_CHARS:
            raise ValueError(f"a write token has at least {MIN_TOKEN_CHARS} characters")
        return token

    def image_limits(self) -> ImageLimits:
        """What an image field may be (``moon_rec.data.images.ImageLimits``)."""
        return ImageLimits(max_pixels=self.max_image_pixels, max_side=self.max_image_side,
                           max_aspect=self.max_image_aspect,
                           max_decode_bytes=self.max_image_decode_bytes,
                           formats=tuple(self.image_formats))
