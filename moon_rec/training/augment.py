"""User-photo augmentation of catalog photos (the "augmented image -> item" pairs).

A batched torch version of what a user's phone does to a product (the perturbations of
``moon_rec.data.render.user_photo``, re-implemented on tensors so that it runs inside the
training step): cut the product from its light studio background, rotate / scale / shift
it, paste it on another background (solid, gradient or blotchy clutter), then change
brightness, contrast and colour cast, add sensor noise and sometimes blur. Seeded by a
``torch.Generator`` so that a resumed run sees the same pixels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _u(n: int, lo: float, hi: float, g: torch.Generator, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand((n, *shape), generator=g)


def _backgrounds(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """[n, 3, size, size] random backgrounds in [0, 1]."""
    kind = torch.randint(0, 3, (n,), generator=g)
    c0 = _u(n, 20 / 255, 235 / 255, g, 3)[:, :, None, None]
    c1 = _u(n, 20 / 255, 235 / 255, g, 3)[:, :, None, None]
    lin = torch.arange(size, dtype=torch.float32) / size
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    a, b = _u(n, -1, 1, g, 1, 1), _u(n, -1, 1, g, 1, 1)
    grad_t = ((x[None] * a + y[None] * b) % 1.0)[:, None]
    cells = size // 8 + 1
    noise = torch.randn((n, 1, cells, cells), generator=g)
    blot = torch.sigmoid(F.interpolate(noise, scale_factor=8, mode="nearest")[..., :size, :size])
    t = torch.where((kind == 1)[:, None, None, None], grad_t, blot)
    t = torch.where((kind == 0)[:, None, None, None], torch.zeros_like(t), t)
    return c0 * (1 - t) + c1 * t


def user_photo_augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Catalog photos float [N, 3, S, S] in [0, 1] -> simulated user photos, same shape."""
    n, _, s, _ = images.shape
    if n == 0:
        return images
    x = images.float()
    corner = x[:, :, :2, :2].mean(dim=(2, 3), keepdim=True)
    alpha = ((x - corner).abs().amax(1, keepdim=True) > 10 / 255).float()
    rgba = torch.cat([x * alpha, alpha], 1)
    angle = _u(n, -20, 20, g) * math.pi / 180
    scale = _u(n, 0.8, 1.1, g)
    shift = _u(n, -0.16, 0.16, g, 2)  # +-8% of the side, in [-1, 1] grid units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, -shift[:, 0]], 1),
                         torch.stack([sin, cos, -shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(rgba.shape), align_corners=False)
    moved = F.grid_sample(rgba, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    a = moved[:, 3:4]
    rgb = moved[:, :3] / a.clamp_min(1e-3)
    out = _backgrounds(n, s, g) * (1 - a) + rgb.clamp(0, 1) * a
    out = (out - 0.5) * _u(n, 0.8, 1.15, g, 1, 1, 1) + 0.5 + _u(n, -25 / 255, 25 / 255, g, 1, 1, 1)
    out = out * _u(n, 0.9, 1.1, g, 3, 1, 1)
    out = out + torch.randn(out.shape, generator=g) * _u(n, 2 / 255, 8 / 255, g, 1, 1, 1)
    blur = torch.rand((n,), generator=g) < 0.3
    if bool(blur.any()):
        k = torch.tensor([0.25, 0.5, 0.25])
        kernel = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
        blurred = F.conv2d(F.pad(out[blur], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
        out = out.clone()
        out[blur] = blurred
    return out.clamp(0, 1)


class ViewBank:
    """k fixed user-photo views of each catalog photo (``StageConfig.augment_views``): view
    v of row r is ``user_photo_augment`` seeded by (seed, r, v), made at its first draw and
    kept as uint8 (the pixels a phone would store), so a draw costs a lookup and a frozen
    image trunk sees the same pixels again (its cache hits).

    Args:
        views: k (> 0).
        seed: the run's seed.
        max_bytes: stop keeping views past this size (the rest are made at each draw; the
            same pixels either way).
    """

    def __init__(self, views: int, seed: int, max_bytes: int = 2 << 30) -> None:
        if views <= 0:
            raise ValueError(f"augment_views {views}: a positive number of views")
        self.views, self.seed, self.max_bytes = views, seed, max_bytes
        self._kept: dict[tuple[int, int], torch.Tensor] = {}
        self.bytes = 0

    def _make(self, photo: torch.Tensor, row: int, view: int) -> torch.Tensor:
        state = np.random.SeedSequence([self.seed, 7919, row, view]).generate_state(1, np.uint64)
        g = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
        return (user_photo_augment(photo[None].float() / 255.0, g)[0] * 255.0).round_().to(
            torch.uint8)

    def draw(self, photos: np.ndarray | torch.Tensor, rows: list[int],
             g: torch.Generator) -> torch.Tensor:
        """User photos of catalog ``rows`` (``photos``: the catalog's uint8 [N, 3, S, S]),
        each one of the row's k views picked by ``g``: float [len(rows), 3, S, S] in [0, 1]."""
        picks = torch.randint(0, self.views, (len(rows),), generator=g).tolist()
        out = []
        for row, view in zip(rows, picks, strict=True):
            x = self._kept.get((row, view))
            if x is None:
                x = self._make(torch.as_tensor(photos[row]), row, view)
                if self.bytes + x.numel() <= self.max_bytes:
                    self._kept[(row, view)] = x
                    self.bytes += x.numel()
            out.append(x)
        return torch.stack(out).float().div_(255.0)
