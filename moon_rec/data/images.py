"""Image bytes <-> arrays: the one place that encodes and decodes catalog photos."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from moon_rec.data.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


def encode_png(arr: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 RGB array as PNG bytes."""
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_image(data: bytes, *, where: str = "image") -> np.ndarray:
    """Decode PNG/JPEG bytes into an (H, W, 3) uint8 RGB array.

    Raises:
        DataError: naming ``where`` when the bytes are empty or not a decodable image.
    """
    if not data:
        raise DataError("empty image bytes", file=where)
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as exc:
        raise DataError(f"undecodable image ({exc.__class__.__name__}: {exc})", file=where) from exc


def check_image(data: bytes | None, *, full: bool) -> str | None:
    """Return why ``data`` is not a valid image, or None when it is.

    ``full=False`` checks the signature and parses the header (cheap, used at every load);
    ``full=True`` also decodes the pixels (``moon world validate``).
    """
    if data is None or len(data) == 0:
        return "empty image bytes"
    if not (data.startswith(PNG_SIGNATURE) or data.startswith(JPEG_SIGNATURE)):
        return "not a PNG or JPEG (bad signature)"
    try:
        with Image.open(io.BytesIO(data)) as im:
            if full:
                im.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as exc:
        return f"undecodable image ({exc.__class__.__name__})"
    return None


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of encoded image bytes, read from the header only."""
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    return int(w), int(h)


# The one image preparation of the project (import, embedding, training, recall, serving):
# pad to a square on white, centred, then resize (bilinear) to size x size. Padding rather
# than stretching keeps the product's shape, which is part of its look.
PAD_COLOUR = (255, 255, 255)


def prepare_image(arr: np.ndarray, size: int) -> np.ndarray:
    """An (H, W, 3) uint8 RGB photo -> the encoder's (size, size, 3) uint8 input.

    A photo already ``size`` x ``size`` is returned as a (writable) copy, unchanged; any
    other is padded to a square on white (centred) and resized bilinearly. ``size`` 0
    keeps the photo as it is.
    """
    if size <= 0 or arr.shape[:2] == (size, size):
        return np.array(arr, dtype=np.uint8)
    im = Image.fromarray(arr)
    side = max(im.size)
    if im.size != (side, side):
        canvas = Image.new("RGB", (side, side), PAD_COLOUR)
        canvas.paste(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
        im = canvas
    return np.array(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def decode_prepared(data: bytes, size: int, *, where: str = "image") -> np.ndarray:
    """``decode_image`` then ``prepare_image``: PNG/JPEG bytes -> (size, size, 3) uint8."""
    return prepare_image(decode_image(data, where=where), size)
