"""The ranker's ID lookups: raw ids -> trainable embedding-table rows.

- :class:`RankerTables` says which tables the ranker has and how many rows each (the last:
  out of vocabulary): its own (user, item, position, query_token), each behaviour
  sequence's (and its target's), and the spec's pooled tables (fitted features).
- :class:`IdRemap` maps raw ids to table rows (out-of-range ids: the OOV row, or hashed).
- :class:`SparseArch` looks up ID embeddings, its tables built from the spec
  (:class:`moon_rec.ranking.features.RankerLayout`): pooled features through an
  EmbeddingBagCollection, the targets and the behaviour sequences through an
  EmbeddingCollection whose tables a sequence and its target share (``item``, ...).
- :class:`SemanticIdArch` embeds the semantic-ID codes of the target and every behaviour
  through one trainable EmbeddingCollection table per level (sharded like the ID tables);
  the codes come from :class:`moon_rec.ranking.item_tables.SemanticIdTable`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from moon_rec.data.feature_spec import ITEM_KEY, ITEM_TABLE, FittedFeatures
from moon_rec.ranking.config import RankerConfig
from moon_rec.ranking.features import POSITION_KEY, QUERY_KEY, USER_KEY, RankerLayout

USER_TABLE, POSITION_TABLE, QUERY_TABLE = "user", "position", "query_token"
RANKER_OWN_TABLES = (USER_TABLE, ITEM_TABLE, POSITION_TABLE, QUERY_TABLE)


@dataclass(frozen=True)
class RankerTables:
    """The ranker's tables: rows of each raw-id table, and the fitted features (the spec,
    and the rows of its pooled tables).

    Args:
        rows: rows of the ranker's own tables (``user``, ``item``, ``position``,
            ``query_token``) and of each table a behaviour sequence or its target uses
            (e.g. ``category``), the last row out of vocabulary.
        features: the spec's features as fitted on the train split.

    Example::

        tables = RankerTables({"user": 10, "item": 20, "category": 5, "position": 8,
                               "query_token": 65}, fitted)
        tables.feature_rows()["hist_item_ids"]  # 20 (its table: item)
    """

    rows: dict[str, int]
    features: FittedFeatures

    @property
    def layout(self) -> RankerLayout:
        return RankerLayout.of(self.features.spec)

    def sequence_tables(self) -> dict[str, list[str]]:
        """Table -> its features in the sequence KJT (targets, then sequences), in the
        order of the layout's sequence keys (``item`` first)."""
        spec = self.features.spec
        by = {e.column: spec.table_of(e) for e in spec.features}
        out: dict[str, list[str]] = {}
        for key in self.layout.sequence_keys:
            out.setdefault(ITEM_TABLE if key == ITEM_KEY else by[key], []).append(key)
        return out

    def feature_rows(self) -> dict[str, int]:
        """Rows of the table behind each sparse feature."""
        out = {USER_KEY: self.rows[USER_TABLE], POSITION_KEY: self.rows[POSITION_TABLE],
               QUERY_KEY: self.rows[QUERY_TABLE]}
        out |= {f: self.features.rows[f] for f in self.layout.pooled}
        for table, feats in self.sequence_tables().items():
            out |= {f: self.rows[table] for f in feats}
        return out


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
        pooled: [B, P*D] the D-wide pooled embeddings (user, the spec's pooled features of
            the ranker's width, position, query tokens), concatenated.
        target: [B, E] the pairs' target embeddings (item, then e.g. category; E = pairs*D).
        behaviours: [B, L, E] the pairs' behaviour embeddings (zeros at padding).
        mask: [B, L] bool, True at real behaviours.
        packed_behaviours: [N, E] the real behaviours' embeddings, N = mask.sum(), in the
            row-major order of ``mask`` (``behaviours[mask]``, straight from the jagged
            lookup, so no gather): what the attention scores.
        extra: the spec's pooled features of another width than D, [B, d_f] each.
    """

    pooled: torch.Tensor
    target: torch.Tensor
    behaviours: torch.Tensor
    mask: torch.Tensor
    packed_behaviours: torch.Tensor | None = None
    extra: list[torch.Tensor] = field(default_factory=list)


class SparseArch(nn.Module):
    """ID embedding lookups of every sparse feature, the tables built from the spec.

    Args:
        config: the ranker config (embedding_dim D, max_seq_len L, id_policy).
        tables: the tables (rows) and the fitted spec.

    The EmbeddingBagCollection holds ``user``, the spec's pooled tables (spec order),
    ``position`` and ``query_token``; the EmbeddingCollection one table per sequence table
    (``item`` first), shared by each sequence and its target.

    Example::

        arch = SparseArch(RankerConfig(), tables)
        out = arch(batch.pooled, batch.sequence)   # SparseFeatures
        out.behaviours.shape                       # [B, 50, 2 * 32]
    """

    def __init__(self, config: RankerConfig, tables: RankerTables) -> None:
        super().__init__()
        d = config.embedding_dim
        self.max_seq_len = config.max_seq_len
        self.embedding_dim = d
        layout = tables.layout
        self.layout = layout
        pooled_tables = tables.features.tables(d)
        dims = {f: dim for _, feats, _, dim in pooled_tables for f in feats}
        # D-wide pooled vectors (in the dots) in layout order; the others beside them
        self.pooled_features = [k for k in layout.pooled_keys if dims.get(k, d) == d]
        self.extra_features = [k for k in layout.pooled if dims[k] != d]
        self.extra_dims = [dims[k] for k in self.extra_features]
        self.remap = IdRemap(tables.feature_rows(), config.id_policy)
        self.item_id_dropout = float(config.item_id_dropout)
        self.item_oov_row = tables.rows[ITEM_TABLE] - 1
        scale = float(config.embedding_init_scale)
        init = {"weight_init_min": -scale, "weight_init_max": scale} if scale > 0 else {}
        rows = tables.rows

        def bag(name: str, feats: list[str], n: int, dim: int, **kw: object) -> EmbeddingBagConfig:
            return EmbeddingBagConfig(name=name, embedding_dim=dim, **init, num_embeddings=n,
                                      feature_names=feats, **kw)

        self.embedding_bag_collection = EmbeddingBagCollection(
            tables=[
                bag(USER_TABLE, [USER_KEY], rows[USER_TABLE], d),
                *(bag(name, list(feats), n, dim) for name, feats, n, dim in pooled_tables),
                bag(POSITION_TABLE, [POSITION_KEY], rows[POSITION_TABLE], d),
                bag(QUERY_TABLE, [QUERY_KEY], rows[QUERY_TABLE], d, pooling=PoolingType.MEAN),
            ]
        )
        # each sequence shares its table with its target (item: item_id, hist_item_ids)
        self.embedding_collection = EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name=name,
                    embedding_dim=d,
                    **init,
                    num_embeddings=rows[name],
                    feature_names=feats,
                )
                for name, feats in tables.sequence_tables().items()
            ]
        )
        self.pooled_dim = d * len(self.pooled_features)
        self.target_dim = d * len(layout.pairs)

    def forward(self, pooled: KeyedJaggedTensor, sequence: KeyedJaggedTensor) -> SparseFeatures:
        """
        Args:
            pooled: raw-id KJT with keys ``layout.pooled_keys``.
            sequence: raw-id KJT with keys ``layout.sequence_keys``.

        Returns:
            SparseFeatures (see there for shapes).
        """
        bags = self.embedding_bag_collection(self.remap(pooled)).to_dict()
        seq = self.embedding_collection(self._drop_item_ids(self.remap(sequence)))
        length = self.max_seq_len
        pairs = self.layout.pairs
        target = torch.cat(
            [seq[t].to_padded_dense(desired_length=1).squeeze(1) for t, _ in pairs], dim=1
        )
        behaviours = torch.cat(
            [seq[s].to_padded_dense(desired_length=length) for _, s in pairs], dim=2
        )
        lengths = seq[self.layout.primary].lengths()
        mask = torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]
        packed = torch.cat([seq[s].values() for _, s in pairs], dim=1)
        return SparseFeatures(
            pooled=torch.cat([bags[k] for k in self.pooled_features], dim=1),
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
