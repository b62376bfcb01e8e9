"""Ranker configuration: strict pydantic models, loaded from YAML experiment blocks.

Experiments live in ``configs/ranker/*.yaml`` in FuxiCTR's shape: a ``Base:`` block holds
the defaults, every other top-level key is one experiment that overrides part of it
(``cube_moon``, ``cube_moon_tiny``, ...). Unknown keys and wrong types are errors naming
the key (``train.dense_lr``), so a typo in YAML never turns into a silent default; YAML
``1e-3`` reads as a float (see :mod:`moon_rec._yaml_config`).

Example::

    cfg = load_ranker_config("configs/ranker/experiments.yaml", "cube_moon_tiny")
    cfg.behaviour.module   # "cube"
    cfg.feature_set        # "ids+moon"
    cfg.with_overrides({"train": {"seed": 3}}).train.seed   # 3 (validated copy)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from moon_rec._yaml_config import read_yaml
from moon_rec.data.feature_spec import FeatureSpec, FeatureSpecError, load_feature_spec, spec_path

IdPolicy = Literal["oov", "hash"]

ID_POLICIES: tuple[str, ...] = get_args(IdPolicy)


@dataclass(frozen=True)
class BehaviourKind:
    """One kind of behaviour-sequence module (``behaviour.module``); its class is
    ``moon_rec.ranking.behaviours.BEHAVIOUR_MODULES[name]`` (this module stays free of
    torch, so configs validate without it).

    Args:
        needs_content: it reads MOON content vectors (feature set ``ids+moon``).
        summary: what it does, in a few words.
    """

    needs_content: bool
    summary: str


# The registry of behaviour kinds (config validation reads it; each kind has one class,
# moon_rec.ranking.behaviours.BEHAVIOUR_MODULES, checked when that module loads).
BEHAVIOUR_KINDS: dict[str, BehaviourKind] = {
    "din": BehaviourKind(False, "target attention on ID embeddings (the ID-only baseline)"),
    "cube": BehaviourKind(True, "MOON's content-based user behaviour extractor"),
    "sim": BehaviourKind(True, "top-k search by content similarity, then CUBE on the kept "
                         "behaviours"),
}


class ConfigError(ValueError):
    """A ranker config that breaks a rule; the message names the key."""


class _Section(BaseModel):
    """Strict: unknown keys and wrong types (``"1e-3"`` for a float, ``16.7`` or ``16.0``
    for an int, ``1`` for a bool) are errors. :meth:`RankerConfig.from_dict` and
    :func:`load_ranker_config` raise :class:`ConfigError`; direct construction raises
    pydantic's ``ValidationError`` (also a ``ValueError`` naming the key)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class BehaviourConfig(_Section):
    """The behaviour-sequence module.

    Args:
        module: a key of ``BEHAVIOUR_KINDS``: ``din`` (target attention on ID embeddings,
            the ID-only baseline), ``cube`` (MOON's content-based user behaviour extractor)
            or ``sim`` (top-k search by content similarity, then CUBE on the kept
            behaviours). Kinds that need content (``cube``, ``sim``) need the ``ids+moon``
            feature set.
        attention_hidden: hidden sizes of the DIN attention unit MLP.
        top_k: behaviours kept by ``sim``'s search step.
        similarity_scale: initial inverse temperature of the softmax over content
            similarities s_b that weights the fusion and content interests (learned).
        user_content: cube/sim also pool a gated, shrunk content profile of the user and
            its match with the target (see :class:`moon_rec.ranking.behaviours.CubeModule`).
    """

    module: str = "din"
    attention_hidden: list[int] = Field(default_factory=lambda: [64, 32])
    top_k: int = Field(default=16, gt=0)
    similarity_scale: float = 5.0
    user_content: bool = True

    @field_validator("module")
    @classmethod
    def _known_kind(cls, module: str) -> str:
        if module not in BEHAVIOUR_KINDS:
            raise ValueError(f"one of {', '.join(BEHAVIOUR_KINDS)}")
        return module


class OverArchConfig(_Section):
    """The over-arch on the concatenated features.

    Args:
        layer_sizes: hidden sizes of the MLP before the final logit.
        cross_layers: DCN-v2 cross layers before the MLP (0: plain MLP).
        cross_low_rank: rank of the low-rank DCN-v2 weights (0: full-rank ``CrossNet``).
        interaction: ``dot`` adds DLRM's pairwise dot products of the ID-space vectors
            (user, brand, position, query, target item and category, behaviour interests);
            ``none`` feeds the concatenation only.
        dot_to_logit: also add a learned linear function of the pairwise dots straight
            to the logit (FM-style wide path), so that user x brand / category / item
            affinities get a direct gradient instead of only through the MLP.
    """

    layer_sizes: list[int] = Field(default_factory=lambda: [128, 64])
    cross_layers: int = Field(default=0, ge=0)
    cross_low_rank: int = Field(default=0, ge=0)
    interaction: Literal["dot", "none"] = "dot"
    dot_to_logit: bool = False


class TrainConfig(_Section):
    """Training hyper-parameters.

    Args:
        batch_size: global batch size (split evenly over ranks).
        epochs: passes over the train split.
        sparse_lr: learning rate of the fused row-wise Adagrad on embedding tables.
        dense_lr: learning rate of Adam on the dense part.
        seed: seeds initial weights and the per-epoch shuffles (same seed, same run).
        checkpoint_every: steps between checkpoints (0: only at the end of each epoch).
        eval_batch_size: batch size for prediction.
    """

    batch_size: int = Field(default=512, gt=0)
    epochs: int = Field(default=1, gt=0)
    sparse_lr: float = 0.05
    dense_lr: float = 1e-3
    seed: int = 0
    checkpoint_every: int = Field(default=200, ge=0)
    eval_batch_size: int = Field(default=4096, gt=0)


class SemanticIdFeatures(_Section):
    """Semantic-ID sparse features: the target's and every behaviour's code (the embed
    job's ``semantic_ids`` column), one trainable, sharded table per level.

    Args:
        levels: L, codewords per item (must equal the embeddings' code length).
        codebook: K, codewords per level (every code must be < K); each level's table has
            K + 1 rows, the last for items without a code.
    """

    levels: int = Field(default=3, gt=0)
    codebook: int = Field(default=256, gt=1)


class LookHeadConfig(_Section):
    """The look head (:mod:`moon_rec.ranking.look_head`): an MLP on the MOON vectors,
    post-trained on the training set's clicks (history -> next item) before the ranker
    trains, then frozen; its output is the content CUBE / SIM compare.

    Args:
        dim: the look vector's size.
        hidden: the MLP's hidden width.
        epochs: passes over the history -> next-item pairs.
        batch_size: pairs per step.
        lr: Adam's learning rate.
        negatives: random same-category items per pair, beside the batch's other targets.
        temperature: the InfoNCE temperature.
        history: most recent behaviours per pair.
    """

    dim: int = Field(default=64, gt=0)
    hidden: int = Field(default=256, gt=0)
    # the measured best on the small world (60 / 200 epochs and batch 4096 closed less)
    epochs: int = Field(default=100, gt=0)
    batch_size: int = Field(default=2048, gt=0)
    lr: float = Field(default=3e-3, gt=0)
    negatives: int = Field(default=16, ge=0)
    temperature: float = Field(default=0.1, gt=0)
    history: int = Field(default=10, gt=0)


class RankerConfig(_Section):
    """One ranker experiment.

    Args:
        feature_set: the feature spec the ranker reads (``configs/features/<name>.yaml``, or
            a spec YAML file; :mod:`moon_rec.data.feature_spec`): ``ids`` (the ID-only
            baseline), ``ids+moon`` (adds MOON content features), ``full`` (adds stored
            item attributes and statistics), or any other.
        embedding_dim: dimension of every ID embedding table.
        moon_dim: Matryoshka size of the MOON embeddings used (column ``emb_{moon_dim}``).
        max_seq_len: behaviours kept per impression (most recent first; longer are cut).
        query_token_buckets: hash buckets of query tokens.
        max_position: positions at or beyond ``max_position - 1`` share the last row.
        id_policy: how raw ids become table rows: ``oov`` keeps ids in [0, rows - 1) and
            maps every other id (negative, too large) to the last, out-of-vocabulary row;
            ``hash`` takes non-negative ids modulo rows - 1 (for id spaces larger than
            the table), negatives to the OOV row.
        id_table_rows: rows of the user / item / category / brand tables (0: sized from
            the train split, max id + 2 so the OOV row is never a real id).
        embedding_init_scale: > 0: ID tables start uniform in [-scale, scale] (0:
            TorchRec's default, +-sqrt(1 / rows), tiny for big tables, where dot-product
            interactions barely move off zero in one epoch). Training zeroes the rows of
            ids that never occur in the train split either way.
        item_id_dropout: in training, the probability that an impression's target item id
            is replaced by the item table's OOV row (DropoutNet-style cold-start training):
            the ranker then learns what an unseen item looks like (the OOV row, trained
            as "a new item") and to score it from its content, codes, category and brand,
            which is how cold items reach it at test time and at serving. 0: off.
        semantic_ids: None (default) or the semantic-ID features (see
            :class:`SemanticIdFeatures`); they need embeddings with codes, for either
            feature set.
        look_head: None (default) or the look head (see :class:`LookHeadConfig`; needs
            ``ids+moon``): the behaviour module then compares look vectors, not raw MOON
            vectors (the query similarity still uses the raw ones).
        behaviour, over_arch, train: see their classes.
    """

    feature_set: str = "ids"
    embedding_dim: int = Field(default=16, gt=0)
    moon_dim: int = Field(default=64, gt=0)
    max_seq_len: int = Field(default=50, gt=0)
    query_token_buckets: int = Field(default=4096, gt=0)
    max_position: int = Field(default=32, gt=0)
    id_policy: IdPolicy = "oov"
    id_table_rows: int = Field(default=0, ge=0)
    embedding_init_scale: float = Field(default=0.0, ge=0.0)
    item_id_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    semantic_ids: SemanticIdFeatures | None = None
    look_head: LookHeadConfig | None = None
    behaviour: BehaviourConfig = Field(default_factory=BehaviourConfig)
    over_arch: OverArchConfig = Field(default_factory=OverArchConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("feature_set")
    @classmethod
    def _known_spec(cls, name: str) -> str:
        try:
            _spec(name)
        except FeatureSpecError as exc:
            raise ValueError(str(exc)) from None
        return name

    @model_validator(mode="after")
    def _content_modules_need_moon(self) -> RankerConfig:
        if BEHAVIOUR_KINDS[self.behaviour.module].needs_content and not self.uses_moon:
            raise ValueError(
                f"behaviour.module: {self.behaviour.module!r} needs a feature_set with a "
                "moon_embedding feature (e.g. 'ids+moon')"
            )
        spec = self.feature_spec()
        if self.semantic_ids is None and any(e.kind == "semantic_ids" for e in spec.features):
            raise ValueError(f"semantic_ids: feature spec {spec.name!r} reads semantic-ID "
                             "codes; give their levels and codebook (semantic_ids: {levels: "
                             "L, codebook: K})")
        if self.look_head is not None and not self.uses_moon:
            raise ValueError("look_head: needs a feature_set with a moon_embedding feature "
                             "(e.g. 'ids+moon'; it reads MOON vectors)")
        return self

    @property
    def uses_moon(self) -> bool:
        """Whether the spec reads the item's MOON vector."""
        return self.feature_spec().uses_moon

    def feature_spec(self) -> FeatureSpec:
        """The feature spec ``feature_set`` names (read once per file version)."""
        return _spec(self.feature_set)

    @property
    def uses_embeddings(self) -> bool:
        """Whether the ranker reads the embedding snapshot (MOON vectors or codes)."""
        return self.uses_moon or self.semantic_ids is not None

    def to_dict(self) -> dict[str, Any]:
        """The nested dict of every field (JSON-safe; :meth:`from_dict` reads it back)."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankerConfig:
        """Build from a nested dict (missing keys take their defaults).

        Raises:
            ConfigError: an unknown key, a wrong type or an invalid value, named
                (``unknown key behaviour.attention_hiden``, ``train.dense_lr: ...``).
        """
        if not isinstance(data, dict):
            raise ConfigError(f"config: expected a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, cls)) from None

    def with_overrides(self, overrides: dict[str, Any]) -> RankerConfig:
        """A validated copy with nested ``overrides`` merged in, e.g.
        ``{"train": {"epochs": 1}, "max_seq_len": 20}``."""
        return RankerConfig.from_dict(merge_overrides(self.to_dict(), overrides))


def _spec(name: str) -> FeatureSpec:
    path = spec_path(name)
    stamp = path.stat().st_mtime_ns if path.is_file() else -1
    return _spec_at(name, stamp)


@functools.lru_cache(maxsize=64)
def _spec_at(name: str, stamp: int) -> FeatureSpec:
    return load_feature_spec(name)


def _describe(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem, each naming its dotted key."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            known = ", ".join(_model_at(model, loc[:-1]).model_fields)
            lines.append(f"unknown key {key} (known: {known})")
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not key:  # a rule over several keys: its message names them
            lines.append(msg)
        elif err["type"] == "missing":
            lines.append(f"{key}: missing")
        else:
            lines.append(f"{key}: {msg} (got {err['input']!r})")
    return "; ".join(lines)


def _model_at(model: type[BaseModel], path: list[str]) -> type[BaseModel]:
    """The section model at ``path`` (``["behaviour"]`` -> BehaviourConfig)."""
    for name in path:
        field = model.model_fields.get(name)
        sub = field.annotation if field is not None else None
        # an optional section (``SemanticIdFeatures | None``): the model inside
        sub = next((a for a in get_args(sub) if isinstance(a, type)
                    and issubclass(a, BaseModel)), sub)
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            break
        model = sub
    return model


def merge_overrides(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, recursively for nested mappings."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        return read_yaml(path, what="ranker config")
    except FileNotFoundError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def load_ranker_config(path: str | Path, experiment: str | None = None) -> RankerConfig:
    """Load experiment ``experiment`` of YAML file ``path`` merged over its ``Base`` block.

    A file without experiment blocks (plain keys of RankerConfig) is one experiment; with
    ``experiment=None`` a file holding exactly one experiment block uses that block.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: unknown experiment or key, or an invalid value (the key is named).
    """
    data = _read_yaml(path)
    if set(data) <= set(RankerConfig.model_fields):  # a flat config
        try:
            return RankerConfig.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    base = data.get("Base") or {}
    names = [k for k in data if k != "Base"]
    if experiment is None:
        if len(names) != 1:
            raise ConfigError(f"{path}: pick an experiment with --experiment (one of {names})")
        experiment = names[0]
    if experiment not in data:
        raise ConfigError(f"{path}: unknown experiment {experiment!r} (known: {names})")
    block = data[experiment] or {}
    if not isinstance(base, dict) or not isinstance(block, dict):
        raise ConfigError(f"{path} [{experiment}]: Base and experiment blocks must be mappings")
    try:
        return RankerConfig.from_dict(merge_overrides(base, block))
    except ConfigError as exc:
        raise ConfigError(f"{path} [{experiment}]: {exc}") from None
