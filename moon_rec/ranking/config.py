"""Ranker configuration: small dataclasses, loaded from YAML experiment blocks.

Experiments live in ``configs/ranker/*.yaml`` in FuxiCTR's shape: a ``Base:`` block holds
the defaults, every other top-level key is one experiment that overrides part of it
(``cube_moon``, ``cube_moon_tiny``, ...). Unknown keys are an error, so a typo in YAML never
turns into a silent default.

Example::

    cfg = load_ranker_config("configs/ranker/experiments.yaml", "cube_moon_tiny")
    cfg.behaviour.module   # "cube"
    cfg.feature_set        # "ids+moon"
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml

FeatureSet = Literal["ids", "ids+moon"]
BehaviourKind = Literal["din", "cube", "sim"]
IdPolicy = Literal["oov", "hash"]

FEATURE_SETS: tuple[str, ...] = get_args(FeatureSet)
BEHAVIOUR_KINDS: tuple[str, ...] = get_args(BehaviourKind)
ID_POLICIES: tuple[str, ...] = get_args(IdPolicy)


class ConfigError(ValueError):
    """A ranker config that breaks a rule; the message names the key."""


@dataclass
class BehaviourConfig:
    """The behaviour-sequence module.

    Args:
        module: ``din`` (target attention on ID embeddings, the ID-only baseline), ``cube``
            (MOON's content-based user behaviour extractor) or ``sim`` (top-k search by
            content similarity, then CUBE on the kept behaviours). ``cube`` and ``sim`` need
            the ``ids+moon`` feature set.
        attention_hidden: hidden sizes of the DIN attention unit MLP.
        top_k: behaviours kept by ``sim``'s search step.
        similarity_scale: initial inverse temperature of the softmax over content
            similarities s_b that weights the fusion and content interests (learned).
        user_content: cube/sim also pool a gated, shrunk content profile of the user and
            its match with the target (see :class:`moon_rec.ranking.modules.CubeModule`).
    """

    module: BehaviourKind = "din"
    attention_hidden: list[int] = field(default_factory=lambda: [64, 32])
    top_k: int = 16
    similarity_scale: float = 5.0
    user_content: bool = True


@dataclass
class OverArchConfig:
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

    layer_sizes: list[int] = field(default_factory=lambda: [128, 64])
    cross_layers: int = 0
    cross_low_rank: int = 0
    interaction: Literal["dot", "none"] = "dot"
    dot_to_logit: bool = False


@dataclass
class TrainConfig:
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

    batch_size: int = 512
    epochs: int = 2
    sparse_lr: float = 0.05
    dense_lr: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 200
    eval_batch_size: int = 4096


@dataclass
class RankerConfig:
    """One ranker experiment.

    Args:
        feature_set: ``ids`` (ID-only baseline) or ``ids+moon`` (adds MOON content features).
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
        behaviour, over_arch, train: see their classes.
    """

    feature_set: FeatureSet = "ids"
    embedding_dim: int = 16
    moon_dim: int = 64
    max_seq_len: int = 50
    query_token_buckets: int = 4096
    max_position: int = 32
    id_policy: IdPolicy = "oov"
    id_table_rows: int = 0
    embedding_init_scale: float = 0.0
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    over_arch: OverArchConfig = field(default_factory=OverArchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def uses_moon(self) -> bool:
        return self.feature_set == "ids+moon"

    def validate(self) -> None:
        """Raise ConfigError when a value or a combination is invalid."""
        if self.feature_set not in FEATURE_SETS:
            raise ConfigError(f"feature_set: {self.feature_set!r} not in {FEATURE_SETS}")
        if self.behaviour.module not in BEHAVIOUR_KINDS:
            raise ConfigError(
                f"behaviour.module: {self.behaviour.module!r} not in {BEHAVIOUR_KINDS}"
            )
        if self.id_policy not in ID_POLICIES:
            raise ConfigError(f"id_policy: {self.id_policy!r} not in {ID_POLICIES}")
        if self.behaviour.module in ("cube", "sim") and not self.uses_moon:
            raise ConfigError(
                f"behaviour.module: {self.behaviour.module!r} needs feature_set 'ids+moon'"
            )
        positive = {
            "embedding_dim": self.embedding_dim,
            "moon_dim": self.moon_dim,
            "max_seq_len": self.max_seq_len,
            "query_token_buckets": self.query_token_buckets,
            "max_position": self.max_position,
            "behaviour.top_k": self.behaviour.top_k,
            "train.batch_size": self.train.batch_size,
            "train.epochs": self.train.epochs,
            "train.eval_batch_size": self.train.eval_batch_size,
        }
        for key, value in positive.items():
            if int(value) <= 0:
                raise ConfigError(f"{key}: must be > 0, got {value}")
        if self.over_arch.interaction not in ("dot", "none"):
            raise ConfigError(
                f"over_arch.interaction: {self.over_arch.interaction!r} not in ('dot', 'none')"
            )
        if self.embedding_init_scale < 0:
            raise ConfigError(
                f"embedding_init_scale: must be >= 0, got {self.embedding_init_scale}"
            )
        if self.id_table_rows < 0:
            raise ConfigError(f"id_table_rows: must be >= 0, got {self.id_table_rows}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankerConfig:
        """Build from a nested dict, rejecting unknown keys (named in the error)."""
        return _from_dict(cls, data, "")


T = TypeVar("T")


def _from_dict(cls: type[T], data: Any, prefix: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]!s} (known: {', '.join(fields)})")
    kwargs: dict[str, Any] = {}
    nested = {
        "behaviour": BehaviourConfig,
        "over_arch": OverArchConfig,
        "train": TrainConfig,
    }
    for name, value in data.items():
        if cls is RankerConfig and name in nested:
            kwargs[name] = _from_dict(nested[name], value, f"{prefix}{name}.")
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc}") from exc


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def list_experiments(path: str | Path) -> list[str]:
    """The experiment ids of a YAML config file (every top-level key but ``Base``)."""
    return [k for k in _read_yaml(path) if k != "Base"]


def _read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ranker config {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of experiments")
    return data


def load_ranker_config(path: str | Path, experiment: str | None = None) -> RankerConfig:
    """Load experiment ``experiment`` of YAML file ``path`` merged over its ``Base`` block.

    A file without experiment blocks (plain keys of RankerConfig) is one experiment; with
    ``experiment=None`` a file holding exactly one experiment block uses that block.

    Raises:
        ConfigError: unknown experiment or key, or an invalid value (the key is named).
    """
    data = _read_yaml(path)
    known = {f.name for f in dataclasses.fields(RankerConfig)}
    if set(data) <= known:  # a flat config
        return RankerConfig.from_dict(data)
    base = data.get("Base") or {}
    names = [k for k in data if k != "Base"]
    if experiment is None:
        if len(names) != 1:
            raise ConfigError(f"{path}: pick an experiment with --experiment (one of {names})")
        experiment = names[0]
    if experiment not in data:
        raise ConfigError(f"{path}: unknown experiment {experiment!r} (known: {names})")
    try:
        return RankerConfig.from_dict(_merge(base, data[experiment] or {}))
    except ConfigError as exc:
        raise ConfigError(f"{path} [{experiment}]: {exc}") from exc
