"""The ranker's Arch modules, each one job, composed by :class:`moon_rec.ranking.model.MoonRanker`.

- :class:`IdRemap` maps raw ids to table rows (out-of-range ids: the OOV row, or hashed).
- :class:`SparseArch` looks up ID embeddings: pooled features through an
  EmbeddingBagCollection, the target and the behaviour sequence through an
  EmbeddingCollection whose item/category tables are shared by target and behaviours.
- :class:`FrozenContentTable` is the frozen MOON content lookup (item_id -> vector) that
  training uses: an EmbeddingCollection table initialised from the embedding snapshot,
  sharded row-wise by the planner and never updated (no autograd path, no optimizer), so
  no rank holds every vector. :class:`MoonContentArch` is the same lookup as one replicated buffer (for
  small catalogs, benchmarks and tests); serving passes its own lookup over its center.
  All three return the same (vectors, found) for the same snapshot.
- :class:`SemanticIdTable` maps item_id -> semantic-ID code (the embed job's codes);
  :class:`SemanticIdArch` embeds the codes of the target and every behaviour through one
  trainable EmbeddingCollection table per level (sharded like the ID tables).
- Behaviour modules share one interface: ``forward(BehaviourInputs) -> Tensor[B, output_dim]``:
  :class:`DinModule` (target attention on ID embeddings), :class:`CubeModule` (MOON's
  content-based user behaviour extractor) and :class:`SimModule` (top-k search by content
  similarity, then CUBE).
- :class:`OverArch` is an optional DCN-v2 cross network, an MLP and the logit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.crossnet import CrossNet, LowRankCrossNet
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from moon_rec.ranking.config import BehaviourConfig, OverArchConfig, RankerConfig
from moon_rec.ranking.features import POOLED_FEATURES, SEQUENCE_FEATURES


@dataclass(frozen=True)
class TableSizes:
    """Rows of each ID table, the last row being the out-of-vocabulary (OOV) row.

    Args:
        user, item, category, brand: rows of those tables.
        query_token: rows of the hashed query-token table.
        position: rows of the position table.
    """

    user: int
    item: int
    category: int
    brand: int
    query_token: int
    position: int

    def feature_rows(self) -> dict[str, int]:
        """Rows of the table behind each sparse feature."""
        return {
            "user_id": self.user,
            "brand_id": self.brand,
            "position": self.position,
            "query_tokens": self.query_token,
            "item_id": self.item,
            "category_id": self.category,
            "hist_item_ids": self.item,
            "hist_category_ids": self.category,
        }


def remap_ids(ids: torch.Tensor, rows: torch.Tensor, policy: str) -> torch.Tensor:
    """Map raw ids to rows of tables with ``rows`` rows each (same shape as ``ids``).

    ``oov``: ids in [0, rows - 1) are their own row, every other id (negative, too large)
    is row ``rows - 1``. ``hash``: non-negative ids modulo ``rows - 1``, negatives the OOV
    row.

    Example::

        remap_ids(torch.tensor([0, 3, 99, -1]), torch.tensor([5, 5, 5, 5]), "oov")
        # tensor([0, 3, 4, 4])
    """
    oov = rows - 1
    if policy == "hash":
        return torch.where(ids >= 0, torch.remainder(ids, oov.clamp(min=1)), oov)
    return torch.where((ids >= 0) & (ids < oov), ids, oov)


class IdRemap(nn.Module):
    """Applies :func:`remap_ids` to every feature of a KeyedJaggedTensor.

    Args:
        feature_rows: table rows behind each feature name.
        policy: ``oov`` or ``hash``.

    Example::

        remap = IdRemap({"f": 5}, "oov")
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=["f"], values=torch.tensor([1, 99]), lengths=torch.tensor([1, 1]))
        remap(kjt).values()  # tensor([1, 4])
    """

    def __init__(self, feature_rows: dict[str, int], policy: str) -> None:
        super().__init__()
        self.feature_rows = dict(feature_rows)
        self.policy = policy

    def forward(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        values = features.values()
        counts = torch.tensor(features.length_per_key(), device=values.device)
        rows = torch.tensor(
            [self.feature_rows[k] for k in features.keys()],  # noqa: SIM118 (KJT, not a dict)
            dtype=torch.long,
            device=values.device,
        ).repeat_interleave(counts, output_size=values.numel())
        return KeyedJaggedTensor(
            keys=features.keys(),
            values=remap_ids(values.long(), rows, self.policy),
            lengths=features.lengths(),
            offsets=features.offsets(),
            stride=features.stride(),
        )


@dataclass
class SparseFeatures:
    """SparseArch output.

    Args:
        pooled: [B, P*D] user, brand, position and query-token embeddings, concatenated.
        target: [B, E] target item and category embeddings (E = 2D).
        behaviours: [B, L, E] behaviour item and category embeddings (zeros at padding).
        mask: [B, L] bool, True at real behaviours.
        packed_behaviours: [N, E] the real behaviours' embeddings, N = mask.sum(), in the
            row-major order of ``mask`` (``behaviours[mask]``, straight from the jagged
            lookup, so no gather): what the attention scores.
    """

    pooled: torch.Tensor
    target: torch.Tensor
    behaviours: torch.Tensor
    mask: torch.Tensor
    packed_behaviours: torch.Tensor | None = None


class SparseArch(nn.Module):
    """ID embedding lookups of every sparse feature.

    Args:
        config: the ranker config (embedding_dim D, max_seq_len L, id_policy).
        tables: rows of each table.

    Example::

        arch = SparseArch(RankerConfig(), TableSizes(10, 20, 5, 5, 64, 8))
        out = arch(batch.pooled, batch.sequence)   # SparseFeatures
        out.behaviours.shape                       # [B, 50, 32]
    """

    def __init__(self, config: RankerConfig, tables: TableSizes) -> None:
        super().__init__()
        d = config.embedding_dim
        self.max_seq_len = config.max_seq_len
        self.embedding_dim = d
        self.remap = IdRemap(tables.feature_rows(), config.id_policy)
        self.item_id_dropout = float(config.item_id_dropout)
        self.item_oov_row = tables.item - 1
        scale = float(config.embedding_init_scale)
        init = {"weight_init_min": -scale, "weight_init_max": scale} if scale > 0 else {}
        self.embedding_bag_collection = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name="user",
                    embedding_dim=d,
                    **init,
                    num_embeddings=tables.user,
                    feature_names=["user_id"],
                ),
                EmbeddingBagConfig(
                    name="brand",
                    embedding_dim=d,
                    **init,
                    num_embeddings=tables.brand,
                    feature_names=["brand_id"],
                ),
                EmbeddingBagConfig(
                    name="position",
                    embedding_dim=d,
                    **init,
                    num_embeddings=tables.position,
                    feature_names=["position"],
                ),
                EmbeddingBagConfig(
                    name="query_token",
                    embedding_dim=d,
                    **init,
                    num_embeddings=tables.query_token,
                    feature_names=["query_tokens"],
                    pooling=PoolingType.MEAN,
                ),
            ]
        )
        # Target and behaviours share the item and category tables (feature_names).
        self.embedding_collection = EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name="item",
                    embedding_dim=d,
                    **init,
                    num_embeddings=tables.item,
                    feature_names=["item_id", "hist_item_ids"],
                ),
                EmbeddingConfig(
                    name="category",
                    embedding_dim=d,
                    **init,
                    num_embeddings=tables.category,
                    feature_names=["category_id", "hist_category_ids"],
                ),
            ]
        )
        self.pooled_dim = d * len(POOLED_FEATURES)
        self.target_dim = 2 * d

    def forward(self, pooled: KeyedJaggedTensor, sequence: KeyedJaggedTensor) -> SparseFeatures:
        """
        Args:
            pooled: raw-id KJT with keys POOLED_FEATURES.
            sequence: raw-id KJT with keys SEQUENCE_FEATURES.

        Returns:
            SparseFeatures (see there for shapes).
        """
        bags = self.embedding_bag_collection(self.remap(pooled)).to_dict()
        seq = self.embedding_collection(self._drop_item_ids(self.remap(sequence)))
        length = self.max_seq_len
        target = torch.cat(
            [seq[k].to_padded_dense(desired_length=1).squeeze(1) for k in SEQUENCE_FEATURES[:2]],
            dim=1,
        )
        behaviours = torch.cat(
            [seq[k].to_padded_dense(desired_length=length) for k in SEQUENCE_FEATURES[2:]],
            dim=2,
        )
        lengths = seq["hist_item_ids"].lengths()
        mask = torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]
        packed = torch.cat([seq[k].values() for k in SEQUENCE_FEATURES[2:]], dim=1)
        return SparseFeatures(
            pooled=torch.cat([bags[k] for k in POOLED_FEATURES], dim=1),
            target=target,
            behaviours=behaviours,
            mask=mask,
            # lengths beyond max_seq_len (not from make_batch) hold more values than mask
            # has real places: the attention then sees the counts differ and gathers
            packed_behaviours=packed,
        )

    def _drop_item_ids(self, sequence: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """In training, each target item row (``item_id``, the KJT's first key: one value
        per impression) becomes the OOV row with probability ``item_id_dropout``. Only
        the ID lookup changes: content and codes are looked up by the raw ids."""
        if not (self.training and self.item_id_dropout > 0):
            return sequence
        values = sequence.values()
        b = sequence.stride()
        drop = torch.rand(b, device=values.device) < self.item_id_dropout
        target = torch.where(drop, torch.full_like(values[:b], self.item_oov_row), values[:b])
        return KeyedJaggedTensor(
            keys=sequence.keys(),
            values=torch.cat([target, values[b:]]),
            lengths=sequence.lengths(),
            offsets=sequence.offsets(),
            stride=b,
        )


CONTENT_TABLE = "moon_content"
CONTENT_FEATURE = "moon_item"


class ItemRows(nn.Module):
    """Raw item ids -> rows of a per-item table: ``item_ids`` [N] sorted unique; an id
    that is not there gets row N (the table's empty last row) and ``found`` False.

    Example::

        rows = ItemRows(torch.tensor([3, 7]))
        rows(torch.tensor([7, 5]))  # (tensor([1, 2]), tensor([True, False]))
    """

    item_ids: torch.Tensor

    def __init__(self, item_ids: torch.Tensor) -> None:
        super().__init__()
        if item_ids.ndim != 1:
            raise ValueError(f"item table: item_ids must be [N], got {tuple(item_ids.shape)}")
        self.register_buffer("item_ids", item_ids.long().contiguous())

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows [...] int64 in [0, N], found [...] bool) of raw ids [...]."""
        n = self.item_ids.shape[0]
        if n == 0:
            return torch.zeros_like(ids, dtype=torch.long), torch.zeros_like(ids, dtype=torch.bool)
        pos = torch.searchsorted(self.item_ids, ids.contiguous()).clamp(max=n - 1)
        found = self.item_ids[pos] == ids
        return torch.where(found, pos, torch.full_like(pos, n)), found


class FrozenContentTable(nn.Module):
    """Frozen MOON content embeddings of items, looked up by raw item_id through a TorchRec
    EmbeddingCollection table (``moon_content``, N + 1 rows: the snapshot's vectors and a
    zero row for items without one).

    The table's weight is initialised from the snapshot and has ``requires_grad`` False;
    under DistributedModelParallel :func:`moon_rec.ranking.train.shard_model` shards it
    row-wise and keeps it out of both optimizers, and the lookup runs under ``no_grad``,
    so no gradient ever reaches the table's kernel and it never changes while the ID
    tables train. (TorchRec 1.8 offers its dense kernel only to data-parallel, i.e.
    replicated, tables, so the shards use the fused kernel, whose default optimizer,
    EXACT_SGD, keeps no state and only runs in a backward that never comes.) Only the id -> row map (``rows``, 8
    bytes per item) is replicated. Unsharded it computes what :class:`MoonContentArch`
    computes on the same vectors (the lookup of a row of the same matrix).

    Args:
        item_ids: [N] int64 item ids, sorted ascending, unique.
        vectors: [N, C] float32, L2-normalised rows (zero rows allowed).

    Example::

        table = FrozenContentTable(torch.tensor([3, 7]), torch.eye(2))
        vec, found = table(torch.tensor([[7, 5]]))  # vec [1, 2, 2], found [[True, False]]
    """

    def __init__(self, item_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        super().__init__()
        if item_ids.ndim != 1 or vectors.ndim != 2 or vectors.shape[0] != item_ids.shape[0]:
            raise ValueError(
                f"content table: item_ids {tuple(item_ids.shape)} and vectors "
                f"{tuple(vectors.shape)} do not match"
            )
        self.rows = ItemRows(item_ids)
        self.dim = int(vectors.shape[1])
        # The table's random init is overwritten below; fork the RNG so building it leaves
        # every other module's init as it was (same seeds, same rankers as before).
        with torch.random.fork_rng(devices=[]):
            self.embedding_collection = EmbeddingCollection(
                tables=[
                    EmbeddingConfig(
                        name=CONTENT_TABLE,
                        embedding_dim=self.dim,
                        num_embeddings=int(vectors.shape[0]) + 1,
                        feature_names=[CONTENT_FEATURE],
                    )
                ]
            )
        weight = self.embedding_collection.embeddings[CONTENT_TABLE].weight
        with torch.no_grad():
            weight[:-1].copy_(vectors.float())
            weight[-1].zero_()
        weight.requires_grad_(False)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            ids: raw item ids [B, ...] (negatives and unknowns allowed).

        Returns:
            (vectors [B, ..., C], found [B, ...] bool).
        """
        rows, found = self.rows(ids)
        if ids.ndim == 0 or ids.numel() == 0:
            flat = rows.reshape(-1)
            weight = self.embedding_collection.embeddings[CONTENT_TABLE].weight
            return weight[flat].reshape(*ids.shape, self.dim), found
        b = ids.shape[0]
        per = ids.numel() // b
        kjt = KeyedJaggedTensor(
            keys=[CONTENT_FEATURE],
            values=rows.reshape(-1),
            lengths=torch.full((b,), per, dtype=torch.int32, device=ids.device),
        )
        # No autograd path into the table: its kernel never runs a backward (and so never
        # an optimizer update), whatever kernel the planner gives it.
        with torch.no_grad():
            vectors = self.embedding_collection(kjt)[CONTENT_FEATURE].values()
        return vectors.reshape(*ids.shape, self.dim), found


class SemanticIdTable(nn.Module):
    """Semantic-ID codes of items, looked up by raw item_id (a replicated buffer: L int32
    per item). Items without a code get -1 at every level.

    Args:
        item_ids: [N] int64, sorted ascending, unique.
        codes: [N, L] int codes in [0, K).

    Example::

        table = SemanticIdTable(torch.tensor([3, 7]), torch.tensor([[0, 1], [2, 3]]))
        table(torch.tensor([[7, 5]]))  # tensor([[[2, 3], [-1, -1]]])
    """

    codes: torch.Tensor

    def __init__(self, item_ids: torch.Tensor, codes: torch.Tensor) -> None:
        super().__init__()
        if codes.ndim != 2 or codes.shape[0] != item_ids.shape[0]:
            raise ValueError(
                f"semantic-ID table: item_ids {tuple(item_ids.shape)} and codes "
                f"{tuple(codes.shape)} do not match"
            )
        self.rows = ItemRows(item_ids)
        self.levels = int(codes.shape[1])
        padded = torch.cat([codes.int(), codes.new_full((1, self.levels), -1).int()], dim=0)
        self.register_buffer("codes", padded.contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Codes [..., L] int64 of raw ids [...] (-1 where the item has none)."""
        rows, _ = self.rows(ids)
        return self.codes[rows].long()


class SemanticIdArch(nn.Module):
    """Embeddings of the semantic-ID codes of the target and of every behaviour: one
    trainable EmbeddingCollection table per level (``sid_{l}``, K + 1 rows, the last for
    "no code"), shared by target and behaviours; an item's vector is the sum over its
    levels, so items with a common code prefix share what that prefix learned.

    Args:
        config: the ranker config (embedding_dim D, semantic_ids levels L / codebook K,
            embedding_init_scale).

    Example::

        arch = SemanticIdArch(RankerConfig(semantic_ids={"levels": 2, "codebook": 8}))
        out = arch(codes, lengths)  # codes [B, 1 + S, 2], lengths [B] -> [B, 1 + S, D]
    """

    def __init__(self, config: RankerConfig) -> None:
        super().__init__()
        if config.semantic_ids is None:
            raise ValueError("SemanticIdArch needs config.semantic_ids")
        self.levels = config.semantic_ids.levels
        self.codebook = config.semantic_ids.codebook
        self.dim = config.embedding_dim
        scale = float(config.embedding_init_scale)
        init = {"weight_init_min": -scale, "weight_init_max": scale} if scale > 0 else {}
        self.features = [f"sid_{level}" for level in range(self.levels)]
        self.embedding_collection = EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name=name,
                    embedding_dim=self.dim,
                    num_embeddings=self.codebook + 1,
                    feature_names=[name],
                    **init,
                )
                for name in self.features
            ]
        )

    def forward(self, codes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """
        Args:
            codes: [B, T, L] int64 codes (-1 or >= K: "no code"), the target first, then
                the behaviours; only the first ``lengths[b]`` positions of row b are real.
            lengths: [B] int, real positions per row (1 + behaviours).

        Returns:
            [B, T, D] summed level embeddings, zeros past ``lengths``.
        """
        b, t, _ = codes.shape
        mask = torch.arange(t, device=codes.device)[None, :] < lengths[:, None]
        kept = codes[mask]  # [n, L], real positions only, row-major
        kept = torch.where((kept >= 0) & (kept < self.codebook), kept,
                           torch.full_like(kept, self.codebook))
        kjt = KeyedJaggedTensor(
            keys=self.features,
            values=kept.t().reshape(-1),
            lengths=lengths.int().repeat(self.levels),
        )
        out = self.embedding_collection(kjt)
        total = sum(
            (out[name].to_padded_dense(desired_length=t) for name in self.features),
            codes.new_zeros((b, t, self.dim), dtype=torch.float32),
        )
        return total


class MoonContentArch(nn.Module):
    """Frozen MOON content embeddings of items, looked up by raw item_id.

    The vectors are a buffer (saved with the model, never trained). Items without a vector
    get zeros and ``found`` False.

    Args:
        item_ids: [N] int64 item ids, sorted ascending, unique.
        vectors: [N, C] float32, L2-normalised rows (zero rows allowed).

    Example::

        arch = MoonContentArch(torch.tensor([3, 7]), torch.eye(2))
        vec, found = arch(torch.tensor([[7, 5]]))  # vec [1, 2, 2], found [[True, False]]
    """

    item_ids: torch.Tensor
    vectors: torch.Tensor

    def __init__(self, item_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        super().__init__()
        if item_ids.ndim != 1 or vectors.ndim != 2 or vectors.shape[0] != item_ids.shape[0]:
            raise ValueError(
                f"content table: item_ids {tuple(item_ids.shape)} and vectors "
                f"{tuple(vectors.shape)} do not match"
            )
        self.register_buffer("item_ids", item_ids.long().contiguous())
        padded = torch.cat([vectors.float(), vectors.new_zeros(1, vectors.shape[1])], dim=0)
        self.register_buffer("vectors", padded.contiguous())
        self.dim = int(vectors.shape[1])

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            ids: any shape [...] of raw item ids (negatives and unknowns allowed).

        Returns:
            (vectors [..., C], found [...] bool).
        """
        n = self.item_ids.shape[0]
        if n == 0:
            return self.vectors.new_zeros((*ids.shape, self.dim)), ids < -(2**62)
        pos = torch.searchsorted(self.item_ids, ids.contiguous()).clamp(max=n - 1)
        found = self.item_ids[pos] == ids
        rows = torch.where(found, pos, torch.full_like(pos, n))
        return self.vectors[rows], found


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

    output_dim: int
    id_space_dim: int

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


def build_behaviour_module(
    config: BehaviourConfig, id_dim: int, content_dim: int
) -> BehaviourModule:
    """The behaviour module named by ``config.module`` (``din``, ``cube`` or ``sim``)."""
    if config.module == "din":
        return DinModule(id_dim, config)
    if config.module == "cube":
        return CubeModule(id_dim, content_dim, config)
    if config.module == "sim":
        return SimModule(id_dim, content_dim, config)
    raise ValueError(f"behaviour.module: unknown {config.module!r}")


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
