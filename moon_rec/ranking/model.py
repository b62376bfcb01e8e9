"""MoonRanker: the CTR model of MOON's application stage, composed from small Arch modules.

    logit = OverArch([SparseArch pooled | target IDs | behaviour module | MOON dense
                      | pairwise dots of the ID-space vectors (optional, DLRM-style)])

The pairwise dots (``over_arch.interaction: dot``) are taken between the user, brand,
position, query-token, target item and category embeddings, the behaviour module's
ID-space interests and (``ids+moon``) a linear projection of the target's MOON embedding.

where the MOON dense features (``ids+moon`` only) are the target's MOON embedding at the
configured Matryoshka size and its cosine with the query's MOON embedding.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from moon_rec.ranking.config import RankerConfig
from moon_rec.ranking.features import RankerBatch
from moon_rec.ranking.modules import (
    BehaviourInputs,
    OverArch,
    PairwiseDotArch,
    SparseArch,
    TableSizes,
    build_behaviour_module,
    cosine,
)


class ContentLookup(Protocol):
    """What the ranker reads MOON content through (``MoonContentArch``, or a serving-side
    lookup such as ``serving.center.CenterContentArch`` over a live embedding center).

    ``dim`` is the vector size C; calling it with raw item ids of any shape [...] returns
    (vectors [..., C] float32, zero where absent; found [...] bool).
    """

    dim: int

    def __call__(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class MoonRanker(nn.Module):
    """CTR ranker over ID embeddings, behaviour sequences and (optionally) MOON content.

    Args:
        config: the experiment config (feature set, behaviour module, sizes).
        tables: rows of the ID tables.
        content: the frozen MOON content lookup (required for ``ids+moon``, ignored for
            ``ids``): a ``MoonContentArch`` in training, any ``ContentLookup`` (an
            ``nn.Module``) in serving.

    Example::

        cfg = RankerConfig(feature_set="ids+moon", behaviour=BehaviourConfig(module="cube"))
        model = MoonRanker(cfg, TableSizes(100, 400, 20, 30, 4096, 32),
                           MoonContentArch(item_ids, vectors))
        logits = model(batch)  # [B]
    """

    def __init__(
        self,
        config: RankerConfig,
        tables: TableSizes,
        content: ContentLookup | None = None,
    ) -> None:
        super().__init__()
        if config.uses_moon and content is None:
            raise ValueError("feature_set 'ids+moon' needs the MOON content table")
        self.config = config
        self.tables = tables
        self.sparse_arch = SparseArch(config, tables)
        self.content_arch: ContentLookup | None = content if config.uses_moon else None
        content_dim = content.dim if (config.uses_moon and content is not None) else 0
        self.content_dim = content_dim
        self.behaviour = build_behaviour_module(
            config.behaviour, self.sparse_arch.target_dim, content_dim
        )
        moon_dense = content_dim + 1 if config.uses_moon else 0
        d = config.embedding_dim
        self.interaction: PairwiseDotArch | None = None
        n_vectors = (
            self.sparse_arch.pooled_dim + self.sparse_arch.target_dim + self.behaviour.id_space_dim
        ) // d
        # The target's MOON embedding, projected into the ID space, joins the dot products:
        # user . W content is a learned taste x style term that also works for cold items.
        self.content_projection: nn.Linear | None = None
        if config.over_arch.interaction == "dot":
            if config.uses_moon:
                self.content_projection = nn.Linear(content_dim, d, bias=False)
                n_vectors += 1
            self.interaction = PairwiseDotArch(n_vectors)
        in_features = (
            self.sparse_arch.pooled_dim
            + self.sparse_arch.target_dim
            + self.behaviour.output_dim
            + moon_dense
            + (self.interaction.output_dim if self.interaction is not None else 0)
        )
        self.over_arch = OverArch(in_features, config.over_arch)
        self.dot_logit: nn.Linear | None = None
        if self.interaction is not None and config.over_arch.dot_to_logit:
            self.dot_logit = nn.Linear(self.interaction.output_dim, 1, bias=False)
            nn.init.zeros_(self.dot_logit.weight)

    def behaviour_inputs(self, batch: RankerBatch) -> tuple[torch.Tensor, BehaviourInputs]:
        """The pooled ID features [B, P*D] and the behaviour modules' inputs of ``batch``."""
        sparse = self.sparse_arch(batch.pooled, batch.sequence)
        inputs = BehaviourInputs(sparse.target, sparse.behaviours, sparse.mask)
        if self.content_arch is not None:
            seq = batch.sequence
            target_ids = (
                seq["item_id"].to_padded_dense(desired_length=1, padding_value=-1).squeeze(1)
            )
            hist_ids = seq["hist_item_ids"].to_padded_dense(
                desired_length=self.config.max_seq_len, padding_value=-1
            )
            target_content, _ = self.content_arch(target_ids)
            hist_content, found = self.content_arch(hist_ids)
            inputs.target_content = target_content
            inputs.behaviour_content = hist_content
            inputs.content_mask = found & sparse.mask
            inputs.query_content = batch.query_embedding
            inputs.query_mask = batch.has_query
        return torch.cat([sparse.pooled, sparse.target], dim=1), inputs

    def forward(self, batch: RankerBatch) -> torch.Tensor:
        """
        Args:
            batch: a RankerBatch of B impressions (raw ids).

        Returns:
            click logits [B].
        """
        ids, inputs = self.behaviour_inputs(batch)
        behaviour = self.behaviour(inputs)
        parts = [ids, behaviour]
        wide = None
        if self.interaction is not None:
            vectors = [ids, behaviour[:, : self.behaviour.id_space_dim]]
            if self.content_projection is not None and inputs.target_content is not None:
                vectors.append(self.content_projection(inputs.target_content))
            id_space = torch.cat(vectors, dim=1)
            dots = self.interaction(
                id_space.view(id_space.shape[0], -1, self.config.embedding_dim)
            )
            parts.append(dots)
            if self.dot_logit is not None:
                wide = self.dot_logit(dots).squeeze(-1)
        if inputs.target_content is not None:
            s_q = cosine(inputs.target_content, batch.query_embedding) * batch.has_query.to(
                inputs.target_content.dtype
            )
            parts += [inputs.target_content, s_q.unsqueeze(1)]
        return self.over_arch(torch.cat(parts, dim=1), wide)
