"""The ranker's ID lookups: raw ids -> trainable embedding-table rows.

- :class:`TableSizes` says how many rows each ID table has (the last: out of vocabulary).
- :class:`IdRemap` maps raw ids to table rows (out-of-range ids: the OOV row, or hashed).
- :class:`SparseArch` looks up ID embeddings: pooled features through an
  EmbeddingBagCollection, the target and the behaviour sequence through an
  EmbeddingCollection whose item/category tables are shared by target and behaviours.
- :class:`SemanticIdArch` embeds the semantic-ID codes of the target and every behaviour
  through one trainable EmbeddingCollection table per level (sharded like the ID tables);
  the codes come from :class:`moon_rec.ranking.item_tables.SemanticIdTable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from moon_rec.ranking.config import RankerConfig
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
        extra: the feature spec's sparse extras, [B, d_f] each, in spec order.
    """

    pooled: torch.Tensor
    target: torch.Tensor
    behaviours: torch.Tensor
    mask: torch.Tensor
    packed_behaviours: torch.Tensor | None = None
    extra: list[torch.Tensor] = field(default_factory=list)


class SparseArch(nn.Module):
    """ID embedding lookups of every sparse feature.

    Args:
        config: the ranker config (embedding_dim D, max_seq_len L, id_policy).
        tables: rows of each table.
        extra_tables: the feature spec's sparse extras, (table, feature names, rows, dim)
            each (``FittedFeatures.tables``): more pooled tables in the same
            EmbeddingBagCollection (sharded with the others), after the base ones.

    Example::

        arch = SparseArch(RankerConfig(), TableSizes(10, 20, 5, 5, 64, 8))
        out = arch(batch.pooled, batch.sequence)   # SparseFeatures
        out.behaviours.shape                       # [B, 50, 32]
    """

    def __init__(
        self,
        config: RankerConfig,
        tables: TableSizes,
        extra_tables: Sequence[tuple[str, list[str], int, int]] = (),
    ) -> None:
        super().__init__()
        d = config.embedding_dim
        self.max_seq_len = config.max_seq_len
        self.embedding_dim = d
        extra_rows = {f: rows for _, feats, rows, _ in extra_tables for f in feats}
        self.extra_features = [f for _, feats, _, _ in extra_tables for f in feats]
        self.extra_dims = [dim for _, feats, _, dim in extra_tables for _ in feats]
        self.remap = IdRemap(tables.feature_rows() | extra_rows, config.id_policy)
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
            + [
                EmbeddingBagConfig(
                    name=f"extra_{name}",
                    embedding_dim=dim,
                    **init,
                    num_embeddings=rows,
                    feature_names=list(feats),
                )
                for name, feats, rows, dim in extra_tables
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
            extra=[bags[k] for k in self.extra_features],
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
