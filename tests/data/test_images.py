"""The one image preparation: pad to a square on white, then resize."""

from __future__ import annotations

import numpy as np
import pytest
from hostile_images import zeros_png

from moon_rec.data.errors import DataError
from moon_rec.data.images import (
    PAD_COLOUR,
    ImageLimits,
    decode_bytes,
    decode_prepared,
    encode_png,
    prepare_image,
)


def test_a_square_photo_at_size_is_unchanged() -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    out = prepare_image(photo, 64)
    assert np.array_equal(out, photo) and out.flags.writeable and out is not photo


def test_a_wide_photo_is_padded_not_stretched() -> None:
    photo = np.zeros((20, 60, 3), np.uint8)  # black, 3:1
    out = prepare_image(photo, 30)
    assert out.shape == (30, 30, 3)
    # the product (black) keeps its aspect: a band 10 rows high in the middle, white above
    # and below
    assert (out[:8] == PAD_COLOUR).all() and (out[-8:] == PAD_COLOUR).all()
    assert (out[12:18] == 0).all()


def test_decode_prepared_matches_prepare_of_decode() -> None:
    photo = np.random.default_rng(1).integers(0, 256, size=(40, 25, 3), dtype=np.uint8)
    png = encode_png(photo)
    assert np.array_equal(decode_prepared(png, 32), prepare_image(photo, 32))
    assert prepare_image(photo, 0).shape == photo.shape  # size 0: as it is


# -- issue 27: limits that bound the work, decided from the header ------------------------
@pytest.mark.parametrize(("width", "height", "words"), [
    (16, 1_048_576, "a side longer than the limit of 8,192"),  # 17 KB, under any pixel limit
    (1024, 16_384, "a side longer than the limit of 8,192"),
    (1000, 8001, "aspect ratio 8.0:1, more than the limit of 8:1"),
    (5000, 5000, "more than the limit of 16,777,216 pixels"),
])
def test_tall_and_large_images_are_refused_from_their_header(
    width: int, height: int, words: str
) -> None:
    for pixels in (True, False):  # without its pixel data: the header alone decided it
        with pytest.raises(DataError, match="image") as info:
            decode_prepared(zeros_png(width, height, pixels=pixels), 64, where="q.png")
        assert words in str(info.value) and str(info.value).startswith("q.png: image of")


def test_the_limits_are_configurable_and_the_memory_bound_counts_the_canvas() -> None:
    limits = ImageLimits(max_side=20_000, max_aspect=20.0, max_pixels=10**8)
    assert limits.refusal(1024, 16_384) is not None  # the padded square: 1 GiB
    assert "decoding and padding it takes" in str(limits.refusal(1024, 16_384))
    roomy = limits.model_copy(update={"max_decode_bytes": 2 * decode_bytes(1024, 16_384)})
    assert roomy.refusal(1024, 16_384) is None
    assert ImageLimits().refusal(640, 480) is None
    wide = np.zeros((8, 40, 3), np.uint8)
    assert decode_prepared(encode_png(wide), 16, limits=ImageLimits(max_aspect=5)).shape == (16, 16, 3)
    with pytest.raises(DataError, match=r"aspect ratio 5\.0:1"):
        decode_prepared(encode_png(wide), 16, limits=ImageLimits(max_aspect=4))
    with pytest.raises(DataError, match="not a decodable GIF image"):
        decode_prepared(encode_png(wide), 16, limits=ImageLimits(formats=("GIF",)))


def test_prepare_image_checks_the_padded_canvas_before_allocating_it() -> None:
    strip = np.zeros((4, 100_000, 3), np.uint8)  # padded: 100,000 x 100,000 x 3 = 30 GB
    with pytest.raises(DataError, match="padded square canvas"):
        prepare_image(strip, 64)
    assert prepare_image(strip[:, :400], 64, max_side=400).shape == (64, 64, 3)
