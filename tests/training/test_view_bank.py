"""Fixed user-photo views (``augment_views``): the same pixels for the same (seed, row,
view) in any run, different views differ, and a view is made once."""

from __future__ import annotations

import pytest
import torch

from moon_rec.training.augment import ViewBank


def _photos() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    photos = torch.full((5, 3, 32, 32), 240, dtype=torch.uint8)  # a light studio background
    photos[:, :, 8:24, 8:24] = torch.randint(0, 200, (5, 3, 16, 16), generator=g, dtype=torch.uint8)
    return photos


def test_views_are_fixed_per_seed_row_and_view() -> None:
    photos = _photos()
    a, b = ViewBank(2, seed=3), ViewBank(2, seed=3)
    rows = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4] * 4
    x = a.draw(photos, rows, torch.Generator().manual_seed(1))
    y = b.draw(photos, rows, torch.Generator().manual_seed(1))
    assert torch.equal(x, y) and x.shape == (40, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    assert len(a._kept) <= 10 and a.bytes == len(a._kept) * 3 * 32 * 32
    distinct = {tuple(v.flatten()[:64].tolist()) for v in x[[i for i, r in enumerate(rows) if r == 0]]}
    assert 1 <= len(distinct) <= 2  # row 0's draws: one of its 2 views
    other = ViewBank(2, seed=4).draw(photos, rows, torch.Generator().manual_seed(1))
    assert not torch.equal(x, other)
    # past the size limit the views are made again at each draw: the same pixels
    small = ViewBank(2, seed=3, max_bytes=0).draw(photos, rows, torch.Generator().manual_seed(1))
    assert torch.equal(small, x)
    with pytest.raises(ValueError, match="augment_views 0"):
        ViewBank(0, seed=0)
