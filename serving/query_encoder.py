"""The query encoder: MOON embeddings of query texts, query images and new products.

Wraps the MOON encoder (``moon_rec.encoders.MoonEncoder``) for serving: images arrive as
base64 (or raw) PNG/JPEG and are decoded here, text-query vectors are cached (LRU), and
every call holds the model lock the service shares with the ranker (one torch call at a
time per process keeps intra-op threads from contending).
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from moon_rec.data.errors import DataError
from moon_rec.data.images import ImageLimits, decode_prepared
from serving.config import IMAGE_FORMATS
from serving.errors import BadInput


def decode_image_field(
    data: str | bytes | None, field: str, size: int, limits: ImageLimits | None = None
) -> np.ndarray | None:
    """A base64 (str) or raw (bytes) PNG/JPEG -> (size, size, 3) uint8; DataError naming
    ``field`` when it is not a decodable image within ``limits`` (decided from the header,
    before anything is decoded)."""
    if data is None:
        return None
    limits = limits or ImageLimits(formats=IMAGE_FORMATS)
    if isinstance(data, str):
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DataError(f"not base64 ({exc})", column=field) from exc
    else:
        raw = data
    if not raw:
        raise DataError("empty image", column=field)
    # the project's one image preparation (pad to square, resize): a photo posted here
    # gets the vector it gets through moon data import + moon embed
    try:
        arr = decode_prepared(raw, size, where=field, limits=limits)
    except DataError as exc:
        raise DataError(exc.reason, column=field) from exc
    return np.ascontiguousarray(arr)


class QueryEncoder:
    """MOON vectors of queries and products at the ranker's Matryoshka size.

    Args:
        encoder: the MOON encoder (eval mode).
        dim: the Matryoshka size the ranker reads.
        cache_size: text-query vectors kept (LRU; 0 disables the cache).
        lock: the model lock shared with the ranker.
        limits: what an image field may be.

    Example::

        qe = QueryEncoder(encoder, dim=64, cache_size=10_000, lock=threading.Lock(),
                          limits=ImageLimits(formats=("PNG", "JPEG")))
        vec = qe.query_vector("red dress", None)  # [64] float32, or None for no query
    """

    def __init__(
        self, encoder: Any, dim: int, cache_size: int, lock: threading.Lock, limits: ImageLimits
    ) -> None:
        self.encoder = encoder
        self.limits = limits
        self.dim = int(dim)
        self.cache_size = int(cache_size)
        self._lock = lock
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()  # requests run on several worker threads

    @property
    def model_version(self) -> str:
        return str(self.encoder.model_version)

    @property
    def image_size(self) -> int:
        return int(self.encoder.config.image_size)

    def decode_image(self, data: str | bytes | None, field: str) -> np.ndarray | None:
        """``data`` decoded to the encoder's image size; ``BadInput`` naming ``field``."""
        try:
            return decode_image_field(data, field, self.image_size, self.limits)
        except DataError as exc:
            raise BadInput(f"{field}: {exc.reason}", field) from exc

    def _encode(
        self, kind: str, text: str | None = None, image: np.ndarray | None = None
    ) -> dict[int, np.ndarray]:
        # the project's one encode path: a new item gets the vector the embed job would
        # write, a query the vector recall measured
        from moon_rec.data.embeddings import prefixes_of
        from moon_rec.encoders.inference import encode

        texts = None if kind == "image" else [text or ""]
        images = None if image is None else [image]
        with self._lock:
            full = encode(self.encoder, kind, texts, images, batch_size=1)  # type: ignore[arg-type]
        return {d: v[0] for d, v in prefixes_of(full, self.encoder.dims).items()}

    def encode(self, kind: str, field: str, **kw: Any) -> dict[int, np.ndarray]:
        """Matryoshka size -> [d] vector of a ``text``, ``image`` or ``product`` input;
        an input the encoder rejects is ``BadInput`` naming ``field``."""
        try:
            return self._encode(kind, **kw)
        except DataError as exc:
            raise BadInput(f"{field}: {exc.reason}", field) from exc

    def query_vector(self, text: str | None, image: str | bytes | None) -> np.ndarray | None:
        """The query's MOON embedding [dim] (text first; an image query alone uses the
        image embedding, the same space); None for neither."""
        img = self.decode_image(image, "query_image")
        if text and text.strip():
            key = "t:" + text
            with self._cache_lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    return hit
            vec = self.encode("text", "query_text", text=text)[self.dim]
            if self.cache_size > 0:
                with self._cache_lock:
                    self._cache[key] = vec
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
            return vec
        if img is not None:
            return self.encode("image", "query_image", image=img)[self.dim]
        return None

    def product_vectors(self, title: str, image: np.ndarray | None) -> dict[int, np.ndarray]:
        """Matryoshka size -> [d] product embedding of a new item (title + decoded image;
        image None: a text-only product, ``title`` being its ``product_text``)."""
        return self.encode("product", "title", text=title, image=image)
