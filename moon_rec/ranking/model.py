"""MoonRanker: the CTR model of MOON's application stage, composed from small Arch modules.

    logit = OverArch([SparseArch pooled | target IDs | behaviour module | MOON dense
                      | pairwise dots of the ID-space vectors (optional, DLRM-style)])

The model builds itself from the feature spec (:class:`moon_rec.ranking.sparse.RankerTables`,
:class:`moon_rec.ranking.features.RankerLayout`): the user, the spec's pooled features
(categoricals, bucketised numerics), position and query tokens are pooled lookups; each
behaviour sequence and its target (item_id with the item sequence, e.g. category_id with
the category sequence) are looked up in a shared table and concatenated, pair by pair,
into the target and behaviour vectors the behaviour module attends over; the transformed
numerics (``batch.dense``) go straight into the over-arch.

The pairwise dots (``over_arch.interaction: dot``) are taken between the D-wide pooled
embeddings, the pairs' target embeddings, the behaviour module's ID-space interests and
(with MOON content) a linear projection of the target's MOON embedding; pooled features of
another width join the MLP only.

where the MOON dense features (``ids+moon`` only) are the target's MOON embedding at the
configured Matryoshka size and its cosine with the query's MOON embedding.

With ``semantic_ids``, the target's and every behaviour's semantic-ID embedding (sum over
levels, :class:`SemanticIdArch`) is appended to their ID embeddings (item, category, code):
the behaviour modules attend over it and the pairwise dots include user x code, so the
ranker memorises user x look as it memorises user x item, and a new item (an OOV item id)
still has its code's embedding.

Content and codes are looked up by raw item id through collaborators passed in at
construction: in training a :class:`FrozenContentTable` (sharded, frozen) and a
:class:`SemanticIdTable` built from the embedding snapshot; in serving lookups over its
in-memory center. Both give the same vectors for the same snapshot, so a model trained
with the sharded table serves with the center unchanged.

With ``look_head`` (:mod:`moon_rec.ranking.look_head`), the looked-up MOON vectors pass
through the look head (post-trained on clicks before the ranker trains, frozen while it
trains) and the behaviour module and the MOON dense features see its look vectors; the
query similarity is still the cosine of the raw vectors. The head is part of the model, so
a new item served from the center gets its look vector from its MOON vector.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from moon_rec.data.feature_spec import FittedFeatures
from moon_rec.ranking.behaviours import BehaviourInputs, build_behaviour_module, cosine
from moon_rec.ranking.config import RankerConfig
from moon_rec.ranking.features import RankerBatch
from moon_rec.ranking.look_head import LookHead
from moon_rec.ranking.over_arch import OverArch, PairwiseDotArch
from moon_rec.ranking.sparse import RankerTables, SemanticIdArch, SparseArch


class ContentLookup(Protocol):
    """What the ranker reads MOON content through (``MoonContentArch``, or a serving-side
    lookup such as ``serving.center.CenterContentArch`` over a live embedding center).

    ``dim`` is the vector size C; calling it with raw item ids of any shape [...] returns
    (vectors [..., C] float32, zero where absent; found [...] bool).
    """

    dim: int

    def __call__(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class SemanticIdLookup(Protocol):
    """What the ranker reads semantic-ID codes through (``SemanticIdTable``, or a serving
    lookup over its center). ``levels`` is L; calling it with raw item ids [...] returns
    codes [..., L] int64 (-1 where the item has no code)."""

    levels: int

    def __call__(self, ids: torch.Tensor) -> torch.Tensor: ...


class MoonRanker(nn.Module):
    """CTR ranker over ID embeddings, behaviour sequences and (optionally) MOON content.

    Args:
        config: the experiment config (feature set, behaviour module, sizes).
        tables: the ID tables (rows) and the spec's fitted features.
        content: the frozen MOON content lookup (required for ``ids+moon``, ignored for
            ``ids``): a ``FrozenContentTable`` in training, any ``ContentLookup`` (an
            ``nn.Module``) in serving.
        semantic_ids: the item -> code lookup (required when ``config.semantic_ids`` is
            set, ignored otherwise): a ``SemanticIdTable``, or any ``SemanticIdLookup``.

    Example::

        cfg = RankerConfig(feature_set="ids+moon", behaviour=BehaviourConfig(module="cube"))
        model = MoonRanker(cfg, table_sizes(data, cfg), FrozenContentTable(ids, vectors))
        logits = model(batch)  # [B]
    """

    def __init__(
        self,
        config: RankerConfig,
        tables: RankerTables,
        content: ContentLookup | None = None,
        semantic_ids: SemanticIdLookup | None = None,
    ) -> None:
        super().__init__()
        if config.uses_moon and content is None:
            raise ValueError(f"feature_set {config.feature_set!r} reads MOON vectors: it needs the "
                             "MOON content table")
        sid = config.semantic_ids
        if sid is not None:
            if semantic_ids is None:
                raise ValueError("semantic_ids features need the item -> code lookup")
            if semantic_ids.levels != sid.levels:
                raise ValueError(
                    f"semantic_ids.levels: {sid.levels}, but the codes have "
                    f"{semantic_ids.levels} levels"
                )
        self.config = config
        self.tables = tables
        self.features: FittedFeatures = tables.features
        self.layout = tables.layout
        d = config.embedding_dim
        self.dense_dim = len(self.features.dense_names)
        self.sparse_arch = SparseArch(config, tables)
        # pooled features of width D join the ID-space vectors (dots); the others the MLP
        dims = self.sparse_arch.extra_dims
        self.content_arch: ContentLookup | None = content if config.uses_moon else None
        self.semantic_id_table: SemanticIdLookup | None = semantic_ids if sid else None
        self.semantic_id_arch = SemanticIdArch(config) if sid is not None else None
        content_dim = content.dim if (config.uses_moon and content is not None) else 0
        self.content_dim = content_dim  # the raw MOON vectors' (and the query's) size
        # with a look head, the behaviour module and the dense features see look vectors
        self.look_head: LookHead | None = None
        if config.look_head is not None and content_dim:
            self.look_head = LookHead(content_dim, config.look_head)
            content_dim = config.look_head.dim
        # target / behaviour vectors: item and category IDs (and the semantic ID)
        self.target_dim = self.sparse_arch.target_dim + (
            config.embedding_dim if sid is not None else 0
        )
        self.behaviour = build_behaviour_module(config.behaviour, self.target_dim, content_dim)
        moon_dense = content_dim + 1 if config.uses_moon else 0
        self.interaction: PairwiseDotArch | None = None
        n_vectors = (
            self.sparse_arch.pooled_dim + self.target_dim + self.behaviour.id_space_dim
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
            + self.target_dim
            + self.behaviour.output_dim
            + moon_dense
            + (self.interaction.output_dim if self.interaction is not None else 0)
            + sum(dims)
            + self.dense_dim
        )
        self.over_arch = OverArch(in_features, config.over_arch)
        self.dot_logit: nn.Linear | None = None
        if self.interaction is not None and config.over_arch.dot_to_logit:
            self.dot_logit = nn.Linear(self.interaction.output_dim, 1, bias=False)
            nn.init.zeros_(self.dot_logit.weight)

    def behaviour_inputs(self, batch: RankerBatch) -> tuple[torch.Tensor, BehaviourInputs]:
        """The ID-space features [B, P*D + E] (D-wide pooled, targets) and the behaviour
        modules' inputs of ``batch``."""
        ids, inputs, _ = self._inputs(batch)
        return ids, inputs

    def _inputs(
        self, batch: RankerBatch
    ) -> tuple[torch.Tensor, BehaviourInputs, list[torch.Tensor]]:
        sparse = self.sparse_arch(batch.pooled, batch.sequence)
        target, behaviours = sparse.target, sparse.behaviours
        item_ids = None
        if self.content_arch is not None or self.semantic_id_table is not None:
            seq = batch.sequence
            item, items = self.layout.pairs[0]  # the primary pair: item_id, its sequence
            # [B, 1 + L] raw ids: the target, then the behaviours (-1 at padding)
            item_ids = torch.cat(
                [
                    seq[item].to_padded_dense(desired_length=1, padding_value=-1),
                    seq[items].to_padded_dense(
                        desired_length=self.config.max_seq_len, padding_value=-1
                    ),
                ],
                dim=1,
            )
        if self.semantic_id_table is not None and self.semantic_id_arch is not None:
            assert item_ids is not None
            codes = self.semantic_id_table(item_ids)  # [B, 1 + L, levels]
            lengths = 1 + seq[items].lengths().clamp(max=self.config.max_seq_len)
            sid = self.semantic_id_arch(codes, lengths)
            target = torch.cat([target, sid[:, 0]], dim=1)
            behaviours = torch.cat([behaviours, sid[:, 1:]], dim=2)
        # the packed behaviours hold the ID embeddings only: with codes appended, gather
        packed = sparse.packed_behaviours if self.semantic_id_arch is None else None
        inputs = BehaviourInputs(target, behaviours, sparse.mask, packed_behaviour_id=packed)
        if self.content_arch is not None:
            assert item_ids is not None
            content, found = self.content_arch(item_ids)  # one lookup: target + behaviours
            # s_q, once, on the raw vectors (the query's space, also with a look head)
            inputs.query_similarity = cosine(content[:, 0], batch.query_embedding) * (
                batch.has_query.to(content.dtype)
            )
            if self.look_head is not None:
                content = self.look_head(content)
            inputs.target_content = content[:, 0]
            inputs.behaviour_content = content[:, 1:]
            inputs.content_mask = found[:, 1:] & sparse.mask
            inputs.query_content = batch.query_embedding
            inputs.query_mask = batch.has_query
        return torch.cat([sparse.pooled, target], dim=1), inputs, sparse.extra

    def forward(self, batch: RankerBatch) -> torch.Tensor:
        """
        Args:
            batch: a RankerBatch of B impressions (raw ids).

        Returns:
            click logits [B].
        """
        ids, inputs, outside = self._inputs(batch)
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
            assert inputs.query_similarity is not None  # set beside the content
            parts += [inputs.target_content, inputs.query_similarity.unsqueeze(1)]
        parts += outside
        if self.dense_dim:
            parts.append(batch.dense)
        return self.over_arch(torch.cat(parts, dim=1), wide)
