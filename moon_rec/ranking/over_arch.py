"""The ranker's interaction and over-arch: DLRM's pairwise dot products of the ID-space
vectors (:class:`PairwiseDotArch`) and the optional DCN-v2 cross network, MLP and logit
(:class:`OverArch`)."""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.crossnet import CrossNet, LowRankCrossNet
from torchrec.modules.mlp import MLP

from moon_rec.ranking.config import OverArchConfig


class PairwiseDotArch(nn.Module):
    """DLRM's feature interaction: the dot product of every pair of F embedding vectors.

    Args:
        num_features: F.

    Example::

        arch = PairwiseDotArch(3)
        arch(torch.rand(4, 3, 8)).shape  # [4, 3] (3 choose 2)
    """

    triu: torch.Tensor

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer(
            "triu", torch.triu_indices(num_features, num_features, offset=1), persistent=False
        )
        self.output_dim = num_features * (num_features - 1) // 2

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """
        Args:
            vectors: [B, F, D].

        Returns:
            [B, F * (F - 1) / 2] pairwise dot products.
        """
        gram = torch.bmm(vectors, vectors.transpose(1, 2))
        return gram[:, self.triu[0], self.triu[1]]


class OverArch(nn.Module):
    """Optional DCN-v2 cross layers, then an MLP, then one logit per row.

    Args:
        in_features: width of the concatenated input.
        config: over-arch config.

    Example::

        over = OverArch(10, OverArchConfig(layer_sizes=[8], cross_layers=2))
        over(torch.rand(4, 10)).shape  # [4]
    """

    def __init__(self, in_features: int, config: OverArchConfig) -> None:
        super().__init__()
        self.cross: nn.Module = nn.Identity()
        if config.cross_layers > 0:
            self.cross = (
                LowRankCrossNet(in_features, config.cross_layers, config.cross_low_rank)
                if config.cross_low_rank > 0
                else CrossNet(in_features, config.cross_layers)
            )
        sizes = list(config.layer_sizes)
        self.mlp: nn.Module = MLP(in_features, sizes, activation="relu") if sizes else nn.Identity()
        self.logit = nn.Linear(sizes[-1] if sizes else in_features, 1)

    def forward(self, features: torch.Tensor, wide: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            features: [B, in_features].
            wide: optional [B] term added to the logit (e.g. the FM-style dot path).

        Returns:
            logits [B].
        """
        logit = self.logit(self.mlp(self.cross(features))).squeeze(-1)
        return logit if wide is None else logit + wide
