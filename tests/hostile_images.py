"""Small, valid PNG files of hostile shapes, built without decoding or allocating their
pixels (issues 14 and 27): greyscale, all zeros, so millions of pixels compress to KBs."""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def zeros_png(width: int, height: int, *, pixels: bool = True) -> bytes:
    """A valid 8-bit greyscale PNG of ``width`` x ``height`` black pixels (16 x 1,048,576
    is about 17 KB). ``pixels=False`` leaves the image data out: the header alone, so only
    a check made from the header can name the size (decoding it fails)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = b""
    if pixels:
        comp = zlib.compressobj(9)
        row = b"\x00" * (width + 1)  # filter byte + pixels
        step = max(1, 2**22 // len(row))  # compress a few MB at a time
        parts = [comp.compress(row * min(step, height - y)) for y in range(0, height, step)]
        body = _chunk(b"IDAT", b"".join(parts) + comp.flush())
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + body + _chunk(b"IEND", b"")
