"""The one image preparation: pad to a square on white, then resize."""

from __future__ import annotations

import numpy as np

from moon_rec.data.images import PAD_COLOUR, decode_prepared, encode_png, prepare_image


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
