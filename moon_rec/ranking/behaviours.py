"""The ranker's behaviour modules, side by side behind one interface
(:class:`BehaviourModule`: ``forward(BehaviourInputs) -> Tensor[B, output_dim]``):

- :class:`DinModule` (target attention on ID embeddings, the ID-only baseline),
- :class:`CubeModule` (MOON's content-based user behaviour extractor),
- :class:`SimModule` (top-k search by content similarity, then CUBE).

``BEHAVIOUR_MODULES`` is the registry: the module class of each behaviour kind declared in
:data:`moon_rec.ranking.config.BEHAVIOUR_KINDS` (``behaviour.module`` of a config);
:func:`build_behaviour_module` builds the one a config names. A new kind is one class here
with its ``kind`` and one entry in ``BEHAVIOUR_KINDS``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.mlp import MLP

from moon_rec.ranking.config import BEHAVIOUR_KINDS, BehaviourConfig


@dataclass
class BehaviourInputs:
    """What every behaviour module reads.

    Args:
        target_id: [B, E] target ID embedding.
        behaviour_id: [B, L, E] behaviour ID embeddings.
        mask: [B, L] bool, True at real behaviours (padding is never attended).
        target_content: [B, C] target MOON embedding (None for the ``ids`` feature set).
        behaviour_content: [B, L, C] behaviours' MOON embeddings (zeros where unknown).
        content_mask: [B, L] bool, True where a behaviour has a MOON embedding.
        query_content: [B, C] the query's MOON embedding (zeros where none).
        query_mask: [B] bool, True where the impression has a query embedding.
        query_similarity: [B] s_q = cos(target's raw MOON vector, query), 0 without a
            query, when the caller computed it (the ranker does, once per batch, also when
            a look head makes the content above look vectors in another space than the
            query's); None: the modules compute it from the content.
        packed_behaviour_id: optional [N, E], ``behaviour_id[mask]`` (row-major), when the
            caller has it without a gather (:class:`SparseFeatures`); None otherwise.
    """

    target_id: torch.Tensor
    behaviour_id: torch.Tensor
    mask: torch.Tensor
    target_content: torch.Tensor | None = None
    behaviour_content: torch.Tensor | None = None
    content_mask: torch.Tensor | None = None
    query_content: torch.Tensor | None = None
    query_mask: torch.Tensor | None = None
    query_similarity: torch.Tensor | None = None
    packed_behaviour_id: torch.Tensor | None = None


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim where ``mask``; zeros at masked places, all-zero rows
    when nothing is valid (an empty behaviour sequence pools to zeros, never NaN).

    Args:
        scores: [B, L]; mask: [B, L] bool.
    """
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=-1) * mask.to(scores.dtype)


class TargetAttention(nn.Module):
    """DIN's attention unit: an MLP scores [t, h, t - h, t * h] per behaviour h; the
    behaviours are pooled by the masked softmax of the scores.

    The first layer is computed in factored form, W_t t + W_h h + W_p (t * h) (t - h is a
    linear combination of t and h, so the function class is DIN's): the target term is
    computed once per row instead of once per behaviour, halving the first layer's cost.

    Args:
        dim: E, the ID embedding size of target and behaviours.
        hidden: the MLP's hidden sizes (empty: a linear score).

    Example::

        att = TargetAttention(8, [16])
        pooled, weights = att(torch.rand(4, 8), torch.rand(4, 5, 8), torch.ones(4, 5, dtype=torch.bool))
    """

    def __init__(self, dim: int, hidden: list[int]) -> None:
        super().__init__()
        first = hidden[0] if hidden else 1
        self.target_proj = nn.Linear(dim, first)
        self.key_proj = nn.Linear(dim, first, bias=False)
        self.product_proj = nn.Linear(dim, first, bias=False)
        self.hidden = bool(hidden)
        self.mlp: nn.Module = (
            MLP(hidden[0], hidden[1:], activation="relu") if len(hidden) > 1 else nn.Identity()
        )
        self.score: nn.Module = nn.Linear(hidden[-1], 1) if hidden else nn.Identity()

    def forward(
        self,
        target: torch.Tensor,
        keys: torch.Tensor,
        mask: torch.Tensor,
        packed: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            target: [B, E]; keys: [B, L, E]; mask: [B, L] bool.
            packed: optional [N, E] = ``keys[mask]`` (row-major), saving the gather.

        Returns:
            (pooled [B, E], weights [B, L], zero at masked behaviours).
        """
        # Only the real behaviours go through the MLP (padding is never attended; a
        # sequence averages ~15 of 50 slots): same scores, a fraction of the work.
        rows, cols = mask.nonzero(as_tuple=True)
        kept = packed if packed is not None and packed.shape[0] == rows.shape[0] else keys[rows, cols]
        first = (
            self.target_proj(target)[rows]
            + self.key_proj(kept)
            + self.product_proj(target[rows] * kept)
        )
        if self.hidden:
            first = torch.relu(first)
        packed = self.score(self.mlp(first)).reshape(-1)
        scores = keys.new_zeros(mask.shape).masked_scatter(mask, packed)
        weights = masked_softmax(scores, mask)
        return torch.bmm(weights.unsqueeze(1), keys).squeeze(1), weights


class BehaviourModule(nn.Module):
    """The interface of behaviour modules: ``forward(BehaviourInputs) -> [B, output_dim]``.

    The first ``id_space_dim`` output columns are vectors in the ID embedding space
    (interests pooled from behaviour ID embeddings), which the model may interact with
    the target's ID embeddings.
    """

    kind: ClassVar[str]  # its name in ``behaviour.module`` (a key of BEHAVIOUR_KINDS)
    output_dim: int
    id_space_dim: int

    @classmethod
    def build(cls, config: BehaviourConfig, id_dim: int, content_dim: int) -> BehaviourModule:
        """The module for ID embeddings of size ``id_dim`` (E) and content vectors of size
        ``content_dim`` (C; 0 without content)."""
        return cls(id_dim, content_dim, config)

    def forward(self, inputs: BehaviourInputs) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class DinModule(BehaviourModule):
    """DIN: target attention over the behaviours' ID embeddings (the ID-only baseline).

    Args:
        id_dim: E.
        config: behaviour config (attention_hidden).

    Example::

        din = DinModule(8, BehaviourConfig())
        din(BehaviourInputs(torch.rand(2, 8), torch.rand(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)))  # [2, 8]
    """

    kind = "din"

    @classmethod
    def build(cls, config: BehaviourConfig, id_dim: int, content_dim: int) -> BehaviourModule:
        return cls(id_dim, config)

    def __init__(self, id_dim: int, config: BehaviourConfig) -> None:
        super().__init__()
        self.attention = TargetAttention(id_dim, list(config.attention_hidden))
        self.output_dim = id_dim
        self.id_space_dim = id_dim

    def forward(self, inputs: BehaviourInputs) -> torch.Tensor:
        pooled, _ = self.attention(
            inputs.target_id, inputs.behaviour_id, inputs.mask, inputs.packed_behaviour_id
        )
        return pooled


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity over the last dim, 0 where either side is a zero vector."""
    return (F.normalize(a, dim=-1, eps=1e-8) * F.normalize(b, dim=-1, eps=1e-8)).sum(-1)


class CubeModule(BehaviourModule):
    """MOON's CUBE (content-based user behaviour extractor).

    With s_b = cos(target content, behaviour b content) and s_q = cos(target content,
    query content), and w = masked softmax(scale * s_b) over behaviours that have content:

    - ID interest: target attention over the behaviour ID embeddings (DIN);
    - fusion interest: sum_b w_b * ID embedding_b;
    - content interest: sum_b w_b * content_b;
    - similarity features: s_q, max_b s_b, mean_b s_b, sum_b w_b s_b.

    With ``user_content`` (default), also a target-independent content profile of the user:
    g_b = sigmoid(gate([h_b, h_b * t])) from the behaviour's and target's ID embeddings
    (item and category: which behaviours tell the user's taste for this target), and

    - user content: u = sum_b g_b content_b / (sum_b g_b + k), k >= 0 learned (shrinks
      the profile of users with few informative behaviours);
    - taste match: s_u = <u, target content> and a(t) * s_u, a(t) a learned linear function
      of the target's ID embeddings (the weight of look in the target's category); and
      s_m = <M u, target content>, a(t) * s_m with a learned metric M (identity at first),
      which can pick the look out of a real encoder's vectors.

    Output: [ID interest (E), fusion interest (E), content interest (C), 4 similarities,
    (user content (C), s_u, a(t) s_u, s_m, a(t) s_m)]. The softmax weighting with a learned scale and the
    user content profile are our choices; the paper only says "weighted by the content
    similarities".

    Args:
        id_dim: E.
        content_dim: C.
        config: behaviour config (attention_hidden, similarity_scale).

    Example::

        cube = CubeModule(8, 4, BehaviourConfig(module="cube"))
        out = cube(inputs)  # [B, 2 * 8 + 4 + 4]
    """

    kind = "cube"

    def __init__(self, id_dim: int, content_dim: int, config: BehaviourConfig) -> None:
        super().__init__()
        self.attention = TargetAttention(id_dim, list(config.attention_hidden))
        self.log_scale = nn.Parameter(torch.tensor(float(config.similarity_scale)).log())
        self.output_dim = 2 * id_dim + content_dim + 4
        self.id_space_dim = 2 * id_dim
        self.user_content = bool(config.user_content)
        if self.user_content:
            self.gate = nn.Linear(2 * id_dim, 1)
            self.raw_shrink = nn.Parameter(torch.tensor(0.5))
            self.taste_weight = nn.Linear(id_dim, 1)
            # a learned metric on the content space, starting at the identity: a real
            # encoder's raw cosine mixes the look with everything else it encodes
            self.taste_metric = nn.Linear(content_dim, content_dim, bias=False)
            with torch.no_grad():
                self.taste_metric.weight.copy_(torch.eye(content_dim))
            self.output_dim += content_dim + 4

    def similarities(
        self, inputs: BehaviourInputs
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(s_b [B, L], valid [B, L] bool, s_q [B]); s_b is 0 where not valid, s_q is 0
        where there is no query embedding."""
        if inputs.target_content is None or inputs.behaviour_content is None:
            raise ValueError("CUBE needs content embeddings (feature_set 'ids+moon')")
        valid = inputs.mask
        if inputs.content_mask is not None:
            valid = valid & inputs.content_mask
        s_b = cosine(inputs.target_content.unsqueeze(1), inputs.behaviour_content)
        s_b = s_b * valid.to(s_b.dtype)
        if inputs.query_similarity is not None:
            s_q = inputs.query_similarity
        elif inputs.query_content is None:
            s_q = s_b.new_zeros(s_b.shape[0])
        else:
            s_q = cosine(inputs.target_content, inputs.query_content)
            if inputs.query_mask is not None:
                s_q = s_q * inputs.query_mask.to(s_q.dtype)
        return s_b, valid, s_q

    def forward(
        self, inputs: BehaviourInputs, profile_inputs: BehaviourInputs | None = None
    ) -> torch.Tensor:
        """``profile_inputs``: the behaviours the user content profile pools (default:
        ``inputs``; SIM passes the whole sequence, its search keeps the attention's)."""
        s_b, valid, s_q = self.similarities(inputs)
        assert inputs.behaviour_content is not None
        id_interest, _ = self.attention(
            inputs.target_id, inputs.behaviour_id, inputs.mask, inputs.packed_behaviour_id
        )
        w = masked_softmax(s_b * self.log_scale.exp(), valid)
        fusion = torch.bmm(w.unsqueeze(1), inputs.behaviour_id).squeeze(1)
        content = torch.bmm(w.unsqueeze(1), inputs.behaviour_content).squeeze(1)
        n_valid = valid.sum(1)
        s_max = s_b.masked_fill(~valid, -1.0).max(dim=1).values * (n_valid > 0).to(s_b.dtype)
        s_mean = s_b.sum(1) / n_valid.clamp(min=1).to(s_b.dtype)
        s_weighted = (w * s_b).sum(1)
        sims = torch.stack([s_q, s_max, s_mean, s_weighted], dim=1)
        parts = [id_interest, fusion, content, sims]
        if self.user_content:
            assert inputs.target_content is not None
            src = inputs if profile_inputs is None else profile_inputs
            assert src.behaviour_content is not None
            src_valid = valid if profile_inputs is None else self.similarities(src)[1]
            h = src.behaviour_id
            gate_in = torch.cat([h, h * src.target_id.unsqueeze(1)], dim=-1)
            g = torch.sigmoid(self.gate(gate_in).squeeze(-1)) * src_valid.to(h.dtype)
            denom = g.sum(1, keepdim=True) + F.softplus(self.raw_shrink)
            profile = torch.bmm((g / denom).unsqueeze(1), src.behaviour_content).squeeze(1)
            s_u = (profile * inputs.target_content).sum(-1)
            s_m = (self.taste_metric(profile) * inputs.target_content).sum(-1)
            a_t = self.taste_weight(inputs.target_id).squeeze(-1)
            parts += [profile, torch.stack([s_u, a_t * s_u, s_m, a_t * s_m], dim=1)]
        return torch.cat(parts, dim=1)


class SimModule(BehaviourModule):
    """SIM-style search for long sequences: keep the top-k behaviours by content
    similarity to the target (padding never kept ahead of a real behaviour), then CUBE on
    them (its user content profile still pools the whole sequence).

    Args:
        id_dim: E.
        content_dim: C.
        config: behaviour config (top_k and CUBE's settings).

    Example::

        sim = SimModule(8, 4, BehaviourConfig(module="sim", top_k=3))
        out = sim(inputs)  # same width as CubeModule
    """

    kind = "sim"

    def __init__(self, id_dim: int, content_dim: int, config: BehaviourConfig) -> None:
        super().__init__()
        self.top_k = config.top_k
        self.cube = CubeModule(id_dim, content_dim, config)
        self.output_dim = self.cube.output_dim
        self.id_space_dim = self.cube.id_space_dim

    def search(self, inputs: BehaviourInputs) -> BehaviourInputs:
        """The k kept behaviours (k = min(top_k, L)) as new BehaviourInputs."""
        s_b, valid, _ = self.cube.similarities(inputs)
        k = min(self.top_k, s_b.shape[1])
        # Behaviours without content rank after those with content but before padding.
        key = torch.where(valid, s_b, torch.where(inputs.mask, -2.0, -3.0))
        idx = key.topk(k, dim=1).indices

        def take(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            if x.ndim == 2:
                return x.gather(1, idx)
            return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

        behaviour_id = take(inputs.behaviour_id)
        mask = take(inputs.mask)
        assert behaviour_id is not None and mask is not None
        return replace(
            inputs,
            behaviour_id=behaviour_id,
            mask=mask,
            packed_behaviour_id=None,
            behaviour_content=take(inputs.behaviour_content),
            content_mask=take(inputs.content_mask),
        )

    def forward(self, inputs: BehaviourInputs) -> torch.Tensor:
        # The search narrows the attention; the user content profile (a cheap pooling)
        # still reads the whole sequence: a profile of the target's nearest behaviours
        # only would be biased towards the target.
        return self.cube(self.search(inputs), profile_inputs=inputs)


def _registry(*modules: type[BehaviourModule]) -> dict[str, type[BehaviourModule]]:
    """kind -> class; every kind of BEHAVIOUR_KINDS has exactly one class."""
    registry = {m.kind: m for m in modules}
    if len(registry) != len(modules) or set(registry) != set(BEHAVIOUR_KINDS):
        raise RuntimeError(f"behaviour modules {sorted(m.kind for m in modules)} do not match "
                           f"the declared kinds {sorted(BEHAVIOUR_KINDS)}")
    return registry


BEHAVIOUR_MODULES: dict[str, type[BehaviourModule]] = _registry(DinModule, CubeModule, SimModule)


def build_behaviour_module(
    config: BehaviourConfig, id_dim: int, content_dim: int
) -> BehaviourModule:
    """The behaviour module named by ``config.module`` (a key of ``BEHAVIOUR_MODULES``)."""
    return BEHAVIOUR_MODULES[config.module].build(config, id_dim, content_dim)
