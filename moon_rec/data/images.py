"""Image bytes <-> arrays: the one place that encodes and decodes catalog photos."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from moon_rec.data.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
# PIL keeps a decoded 8-bit image in 4 bytes a pixel (RGB, RGBA and CMYK alike; fewer for L/P)
PIL_PIXEL_BYTES = 4


class ImageLimits(BaseModel):
    """What one image may be, decided from its header before a pixel is decoded, so the
    work and memory of decoding and preparing it are bounded, not only its pixel count (a
    16 x 1,048,576 PNG is under any pixel limit, but its padded square is terabytes).

    Args:
        max_pixels: width x height.
        max_side: the longer side; it also bounds the padded square canvas
            (``max_side`` squared).
        max_aspect: the longer side over the shorter one.
        max_decode_bytes: the memory decoding and preparing one image may take: the decoded
            image and its RGB copy (``PIL_PIXEL_BYTES`` a pixel each) plus the padded
            square canvas (``decode_bytes``).
        formats: accepted formats (PIL names); None: any format PIL reads.

    Example::

        ImageLimits().refusal(16, 1_048_576)  # "... a side of 1,048,576 pixels, ..."
        ImageLimits().refusal(640, 480)  # None: fine
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_pixels: int = Field(default=4096 * 4096, ge=1)
    max_side: int = Field(default=8192, ge=1)
    max_aspect: float = Field(default=8.0, ge=1.0, allow_inf_nan=False)
    max_decode_bytes: int = Field(default=512 * 2**20, ge=1)
    formats: tuple[str, ...] | None = None

    def refusal(self, width: int, height: int) -> str | None:
        """Why a ``width`` x ``height`` image is refused (a message naming the limit), or
        None when it is within every limit."""
        size = f"image of {width:,} x {height:,} pixels"
        if width < 1 or height < 1:
            return f"{size}: empty"
        long, short = max(width, height), min(width, height)
        if long > self.max_side:
            return f"{size}: a side longer than the limit of {self.max_side:,}"
        if long / short > self.max_aspect:
            return (f"{size}: aspect ratio {long / short:,.1f}:1, more than the limit of "
                    f"{self.max_aspect:g}:1")
        if width * height > self.max_pixels:
            return f"{size}: more than the limit of {self.max_pixels:,} pixels"
        need = decode_bytes(width, height)
        if need > self.max_decode_bytes:
            return (f"{size}: decoding and padding it takes {need:,} bytes, more than the "
                    f"limit of {self.max_decode_bytes:,}")
        return None


def decode_bytes(width: int, height: int) -> int:
    """The peak memory (bytes) of decoding a ``width`` x ``height`` image and preparing it
    (``prepare_image``): the decoded image, its RGB copy and the padded square canvas."""
    side = max(width, height)
    return PIL_PIXEL_BYTES * (2 * width * height + side * side)


def encode_png(arr: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 RGB array as PNG bytes."""
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _open_rgb(data: bytes, where: str, limits: ImageLimits | None,
              formats: Sequence[str] | None) -> Image.Image:
    """The image of ``data`` decoded to RGB, its header checked against ``limits`` first."""
    if not data:
        raise DataError("empty image bytes", file=where)
    try:
        with Image.open(io.BytesIO(data), formats=None if formats is None else list(formats)) as im:
            if limits is not None:
                why = limits.refusal(*im.size)  # from the header: nothing decoded yet
                if why is not None:
                    raise DataError(why, file=where)
            return im.convert("RGB")
    except UnidentifiedImageError as exc:
        if formats:
            raise DataError(f"not a decodable {'/'.join(formats)} image", file=where) from exc
        raise DataError(f"undecodable image ({exc.__class__.__name__}: {exc})", file=where) from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"undecodable image ({exc.__class__.__name__}: {exc})", file=where) from exc
    except MemoryError:  # past the limits' estimate: still bad input, not a crash
        raise DataError("image too large to decode in memory", file=where) from None


def decode_image(data: bytes, *, where: str = "image",
                 limits: ImageLimits | None = None) -> np.ndarray:
    """Decode PNG/JPEG bytes into an (H, W, 3) uint8 RGB array.

    Raises:
        DataError: naming ``where`` when the bytes are empty, not a decodable image, or
            (``limits`` given) beyond a limit, decided from the header before decoding.
    """
    return np.asarray(_open_rgb(data, where, limits, None), dtype=np.uint8)


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


def _padded(im: Image.Image, size: int, max_side: int, where: str) -> np.ndarray:
    side = max(im.size)
    if side > max_side:  # checked before the side x side canvas is allocated
        raise DataError(f"image of {im.size[0]:,} x {im.size[1]:,} pixels: its padded square "
                        f"canvas would have a side longer than the limit of {max_side:,}",
                        file=where)
    if im.size != (side, side):
        canvas = Image.new("RGB", (side, side), PAD_COLOUR)
        canvas.paste(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
        im = canvas
    return np.array(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def prepare_image(arr: np.ndarray, size: int, *,
                  max_side: int = ImageLimits().max_side) -> np.ndarray:
    """An (H, W, 3) uint8 RGB photo -> the encoder's (size, size, 3) uint8 input.

    A photo already ``size`` x ``size`` is returned as a (writable) copy, unchanged; any
    other is padded to a square on white (centred) and resized bilinearly. ``size`` 0
    keeps the photo as it is.

    Raises:
        DataError: the padded square would have a side over ``max_side`` (checked before
            it is allocated).
    """
    if size <= 0 or arr.shape[:2] == (size, size):
        return np.array(arr, dtype=np.uint8)
    return _padded(Image.fromarray(arr), size, max_side, "image")


def decode_prepared(data: bytes, size: int, *, where: str = "image",
                    limits: ImageLimits | None = None) -> np.ndarray:
    """``decode_image`` then ``prepare_image``: PNG/JPEG bytes -> (size, size, 3) uint8,
    within ``limits`` (default ``ImageLimits()``; its ``formats`` are the ones accepted),
    decided from the header before anything is decoded or padded.

    Raises:
        DataError: naming ``where``: empty, undecodable, another format, or beyond a limit.
    """
    limits = limits or ImageLimits()
    im = _open_rgb(data, where, limits, limits.formats)
    if size <= 0 or im.size == (size, size):
        return np.array(im, dtype=np.uint8)
    try:
        return _padded(im, size, limits.max_side, where)
    except MemoryError:
        raise DataError("image too large to prepare in memory", file=where) from None
