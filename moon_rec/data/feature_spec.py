"""The feature spec: what a ranker reads from the feature store, one owner.

A spec is YAML (``configs/features/<name>.yaml``), read into the strict pydantic
:class:`FeatureSpec`: unknown keys, wrong types and rules broken per kind are errors naming
the feature. Each entry names a Feast feature ``view:field`` and its kind:

- ``categorical``: an id (``dtype: int64``) or a token (``dtype: string``: gender,
  occupation, a zip prefix; its vocabulary is the train split's distinct values, or
  ``hash: true`` into ``rows``) looked up in a trainable embedding table; ``table`` names
  the table (entries with the same table share it; default: the entry's own), ``rows`` its
  size (0: sized from the train split, max id + 2, the last row out of vocabulary),
  ``embedding_dim`` (default: the ranker's).
- ``numeric``: a float; ``transform`` a list of steps applied in order (``since``: a
  stored time becomes the days from it to the row's time, the request's in serving, e.g.
  the recency of a user's last click; then ``log1p``, ``standardise``), or ``bucketise`` (``buckets`` quantile buckets fitted on the train split,
  each an embedding row: the feature then enters as a categorical one); ``fill`` the value
  of a null (``mean``: the train split's mean, or a number; no fill and a null is an error
  naming the feature).
- ``id_sequence``: a list of ids (a behaviour sequence), ``target`` the candidate's feature
  it is matched with in the ranker's target attention (``item_id``, the impression's item,
  or a categorical entry of the spec: the category of the behaviours against the target's),
  ``table`` shared with the target's table (``item`` for item ids: the ranker's item
  table), ``length`` (default: the ranker's ``max_seq_len``). The first sequence targets
  ``item_id`` (the primary pair: MOON content and semantic IDs are looked up by its ids);
  ids of sequences and their targets are raw ids the ranker maps to rows (its
  ``id_policy``), so they cannot be hashed or strings.
- ``moon_embedding``: the item's MOON vector; ``field`` is ``emb`` (the Matryoshka prefix
  the ranker's ``moon_dim`` picks: ``emb_{moon_dim}``) or ``emb_{d}``.
- ``semantic_ids``: the item's semantic-ID codes (levels and codebook: the ranker's
  ``semantic_ids`` section).

Transforms are fitted on the train split only (:func:`fit_transforms`) and saved with the
model (the ranker's model directory records the spec and the fitted transforms).

The ranker builds itself from the spec (:mod:`moon_rec.ranking.features`): one embedding
table per ``table`` name (entries sharing a name share it, one width), pooled unless a
behaviour sequence or its target uses it, numerics dense into the over-arch, the
(target, sequence) pairs into the behaviour module. A spec may leave any store feature out
(a dataset without brands). :data:`BASE_FEATURES` are the columns every training set
carries (the training-set job's, whatever the spec); an entry of such a name must read it
from there. The *extras* are the spec's other categorical and numeric entries: the
training set's columns beyond its base ones.

Example::

    spec = load_feature_spec("full")          # configs/features/full.yaml
    spec.feast_features(moon_dim=64)          # ["item_attributes:category_id", ...]
    [e.column for e in spec.extras()]         # ["spu_id", "price", ...]
    spec.pairs()                              # [("item_id", "hist_item_ids"), ...]
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from moon_rec._yaml_config import read_yaml

SPEC_DIR = Path(__file__).resolve().parents[2] / "configs" / "features"

Kind = Literal["categorical", "numeric", "id_sequence", "moon_embedding", "semantic_ids"]
Step = Literal["since", "log1p", "standardise", "bucketise"]
DAY_US = 86_400_000_000.0

# (name, kind, feast feature) of the columns every training set carries (the training-set
# job's base columns, whatever the spec); a spec entry of one of these names reads it
BASE_FEATURES: tuple[tuple[str, str, str], ...] = (
    ("category_id", "categorical", "item_attributes:category_id"),
    ("brand_id", "categorical", "item_attributes:brand_id"),
    ("hist_item_ids", "id_sequence", "user_behaviour:hist_item_ids"),
    ("hist_category_ids", "id_sequence", "user_behaviour:hist_category_ids"),
)
BASE_NAMES: tuple[str, ...] = tuple(name for name, _, _ in BASE_FEATURES)
# training-set columns besides the spec's features (the impression's: user, item, position
# and query are the ranker's own keys)
RESERVED_NAMES: tuple[str, ...] = (
    "request_id", "user_id", "item_id", "ts", "query_text", "position", "clicked",
    "hist_actions", "hist_ts", "split", "is_cold", "look_driven", "query_tokens",
)
# the ranker's own tables (of user_id, item_id, position, query tokens); a spec's entries may
# share only ``item`` (a sequence of item ids, or its target item_id)
RANKER_TABLES: tuple[str, ...] = ("user", "item", "position", "query_token")
ITEM_TABLE = "item"
ITEM_KEY = "item_id"
# the spec the ranker reads when none is named (RankerConfig.feature_set's default)
DEFAULT_SPEC = "ids"


class FeatureSpecError(ValueError):
    """A spec that breaks a rule; the message names the file and the feature."""


class FeatureEntry(BaseModel):
    """One feature of a spec (see the module docstring for the kinds).

    Args:
        source: ``view:field`` of a Feast feature view.
        kind: categorical | numeric | id_sequence | moon_embedding | semantic_ids.
        name: the training-set column and the ranker's feature key (default: the field).
        table: categorical / id_sequence: the embedding table (shared by name).
        rows: categorical / id_sequence: table rows (0: sized from the train split).
            An id >= rows - 1 in the train split is an error naming the feature (a
            vocabulary overflow), unless ``hash``.
        hash: categorical with ``rows``: ids modulo rows - 1 instead (negatives: OOV);
            tokens by crc32.
        dtype: categorical: ``int64`` ids or ``string`` tokens (the stored type).
        embedding_dim: categorical / bucketised numeric: the table's width (None: the
            ranker's ``embedding_dim``; extras must match it to join the dot products).
        transform: numeric: steps in order (``log1p``, ``standardise``; or ``bucketise``
            alone).
        buckets: numeric with ``bucketise``: quantile buckets fitted on the train split.
        fill: numeric: the value of a null (``mean`` or a number); None: nulls are an error.
        length: id_sequence: values kept, most recent first (None: ``max_seq_len``).
        target: id_sequence: the candidate feature matched with it in target attention
            (``item_id`` or a categorical entry's name).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    source: str
    kind: Kind
    name: str | None = None
    table: str | None = None
    rows: int = Field(default=0, ge=0)
    hash: bool = False
    dtype: Literal["int64", "string"] = "int64"
    embedding_dim: int | None = Field(default=None, gt=0)
    transform: list[Step] = Field(default_factory=list)
    buckets: int = Field(default=0, ge=0)
    fill: float | Literal["mean"] | None = None
    length: int | None = Field(default=None, gt=0)
    target: str | None = None

    @field_validator("source")
    @classmethod
    def _view_field(cls, source: str) -> str:
        view, sep, field = source.partition(":")
        if not (sep and view and field) or ":" in field:
            raise ValueError("expected view:field (e.g. item_attributes:price)")
        return source

    @field_validator("fill", mode="before")
    @classmethod
    def _int_fill(cls, fill: Any) -> Any:
        return float(fill) if isinstance(fill, int) and not isinstance(fill, bool) else fill

    @model_validator(mode="after")
    def _per_kind(self) -> FeatureEntry:
        k = self.kind
        if k != "numeric" and (self.transform or self.buckets or self.fill is not None):
            raise ValueError(f"transform / buckets / fill are for numeric features, not {k}")
        if k not in ("categorical", "id_sequence") and (self.table or self.rows or self.hash):
            raise ValueError(f"table / rows / hash are for categorical and id_sequence, not {k}")
        if self.dtype != "int64" and k != "categorical":
            raise ValueError(f"dtype is for categorical features, not {k}")
        if self.hash and not self.rows:
            raise ValueError("hash needs rows (the table size ids are hashed into)")
        if k != "id_sequence" and self.length is not None:
            raise ValueError(f"length is for id_sequence features, not {k}")
        if k != "id_sequence" and self.target is not None:
            raise ValueError(f"target is for id_sequence features, not {k}")
        if k == "id_sequence":
            if self.target is None:
                raise ValueError("an id_sequence needs target: the candidate feature it is "
                                 "matched with (item_id, or a categorical of the spec)")
            if self.hash or self.embedding_dim is not None:
                raise ValueError("an id_sequence holds raw ids in the ranker's tables (no "
                                 "hash; embedding_dim is the ranker's)")
        if k == "numeric":
            if "bucketise" in self.transform:
                if self.transform != ["bucketise"]:
                    raise ValueError("bucketise is a transform alone (not with log1p / "
                                     "standardise)")
                if self.buckets < 2:
                    raise ValueError("bucketise needs buckets >= 2")
            elif self.buckets:
                raise ValueError("buckets needs transform [bucketise]")
            if "since" in self.transform and self.transform[0] != "since":
                raise ValueError("since is the first step (a time -> days before the row)")
            if self.embedding_dim is not None and "bucketise" not in self.transform:
                raise ValueError("embedding_dim is for categorical or bucketised features")
        if k == "moon_embedding" and not (self.field == "emb" or self.field.startswith("emb_")):
            raise ValueError("a moon_embedding's field is emb (the ranker's moon_dim) or emb_{d}")
        return self

    @property
    def view(self) -> str:
        return self.source.partition(":")[0]

    @property
    def field(self) -> str:
        return self.source.partition(":")[2]

    @property
    def column(self) -> str:
        """The training-set column and the ranker's feature key."""
        return self.name or self.field

    @property
    def table_name(self) -> str:
        return self.table or self.column

    @property
    def bucketised(self) -> bool:
        return self.kind == "numeric" and "bucketise" in self.transform

    @property
    def is_dense(self) -> bool:
        """A numeric feature that enters the over-arch as a float (not bucketised)."""
        return self.kind == "numeric" and not self.bucketised


class FeatureSpec(BaseModel):
    """A ranker's features (see the module docstring).

    Args:
        name: the spec's name (experiments name it: ``feature_set: <name>``).
        description: what it is for.
        features: the entries, in order (extras keep this order in the model).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str
    description: str = ""
    features: list[FeatureEntry]

    @model_validator(mode="after")
    def _rules(self) -> FeatureSpec:
        seen: dict[str, str] = {}
        for e in self.features:
            col = e.column
            if col in seen:
                raise ValueError(f"feature {col}: named twice ({seen[col]} and {e.source})")
            if col in RESERVED_NAMES:
                raise ValueError(f"feature {col}: the name is a column of every training set "
                                 "(give the entry another name)")
            seen[col] = e.source
        for name, kind, source in BASE_FEATURES:
            entry = next((e for e in self.features if e.column == name), None)
            if entry is not None and (entry.kind != kind or entry.source != source):
                raise ValueError(f"feature {name}: expected {source} of kind {kind} (a base "
                                 f"column of every training set), got {entry.source} of kind "
                                 f"{entry.kind}; give the entry another name")
        for kind in ("moon_embedding", "semantic_ids"):
            if sum(e.kind == kind for e in self.features) > 1:
                raise ValueError(f"at most one {kind} feature")
        self._check_sequences()
        self._check_tables()
        return self

    def _check_sequences(self) -> None:
        cats = {e.column: e for e in self.features if e.kind == "categorical"}
        seqs = self.sequences()
        if not seqs or seqs[0].target != ITEM_KEY:
            first = f" (the first, {seqs[0].column}, targets {seqs[0].target})" if seqs else ""
            raise ValueError(f"the first id_sequence must target {ITEM_KEY}{first}: the ranker's "
                             "behaviour module attends over the user's items")
        for e in seqs:
            t = e.target
            if t == ITEM_KEY:
                continue
            if t not in cats:
                raise ValueError(
                    f"feature {e.column}: target {t} is not a feature of the spec ({ITEM_KEY} "
                    f"or a categorical entry: {', '.join(cats) or 'none'})")
            c = cats[t]
            if c.dtype != "int64" or c.hash:
                raise ValueError(f"feature {e.column}: target {t} must hold raw int64 ids (not "
                                 "hashed, not strings), as the sequence does")

    def _check_tables(self) -> None:
        """Tables: one width per table, sequence tables apart from pooled ones, the ranker's
        own names left to it."""
        targets = {e.target for e in self.sequences()}
        seq_tables = {ITEM_TABLE} | {self.table_of(e) for e in self.features
                                     if e.kind == "id_sequence" or e.column in targets}
        owner: dict[str, FeatureEntry] = {}
        for e in self.features:
            if not (e.kind in ("categorical", "id_sequence") or e.bucketised):
                continue
            table = self.table_of(e)
            in_seq = e.kind == "id_sequence" or e.column in targets
            if table in RANKER_TABLES and not (in_seq and table == ITEM_TABLE):
                raise ValueError(f"feature {e.column}: table {table} is the ranker's own (of "
                                 "user_id, item_id, position, query tokens); name another")
            if not in_seq and table in seq_tables:
                raise ValueError(f"feature {e.column}: table {table} is a behaviour sequence's "
                                 "table; a pooled feature cannot share it (make it the "
                                 "sequence's target)")
            if in_seq and e.embedding_dim is not None:
                raise ValueError(f"feature {e.column}: a behaviour sequence's target is the "
                                 "ranker's embedding_dim wide (no embedding_dim)")
            first = owner.setdefault(table, e)
            if first.embedding_dim != e.embedding_dim:
                raise ValueError(
                    f"feature {e.column}: table {table} is shared with {first.column}, of "
                    f"another embedding_dim ({e.embedding_dim} vs {first.embedding_dim})")

    @staticmethod
    def table_of(e: FeatureEntry) -> str:
        """The table of a sparse entry: its ``table`` (a bucketised numeric: its own)."""
        return e.column if e.bucketised else e.table_name

    # -- what consumers ask ------------------------------------------------------------
    @property
    def uses_moon(self) -> bool:
        return any(e.kind == "moon_embedding" for e in self.features)

    def extras(self) -> list[FeatureEntry]:
        """The categorical and numeric entries beyond the training set's base columns (the
        columns a training-set job adds for the spec), in spec order."""
        return [e for e in self.features
                if e.column not in BASE_NAMES and e.kind in ("categorical", "numeric")]

    def sequences(self) -> list[FeatureEntry]:
        """The id_sequence entries (behaviour sequences), in spec order."""
        return [e for e in self.features if e.kind == "id_sequence"]

    def pairs(self) -> list[tuple[str, str]]:
        """(target, sequence) of each id_sequence, in spec order (the first: item_id's)."""
        return [(str(e.target), e.column) for e in self.sequences()]

    def targets(self) -> list[FeatureEntry]:
        """The categorical entries some sequence targets (raw ids, looked up with their
        sequence's tables), in the order the pairs name them."""
        by = {e.column: e for e in self.features if e.kind == "categorical"}
        out: list[FeatureEntry] = []
        for t, _ in self.pairs():
            if t in by and by[t] not in out:
                out.append(by[t])
        return out

    def encoded(self) -> list[FeatureEntry]:
        """The entries :class:`FittedFeatures` fits and encodes: the categoricals no
        sequence targets and the numerics, in spec order."""
        targets = {e.target for e in self.sequences()}
        return [e for e in self.features
                if e.kind == "numeric" or (e.kind == "categorical" and e.column not in targets)]

    def pooled(self) -> list[FeatureEntry]:
        """Encoded entries looked up in pooled tables: categoricals and bucketised numerics."""
        return [e for e in self.encoded() if not e.is_dense]

    def dense(self) -> list[FeatureEntry]:
        """Encoded entries that enter the over-arch as floats (transformed numerics)."""
        return [e for e in self.encoded() if e.is_dense]

    def columns(self) -> list[str]:
        """The training-set columns the spec reads (categorical, numeric, id_sequence)."""
        return [e.column for e in self.features
                if e.kind in ("categorical", "numeric", "id_sequence")]

    def moon_field(self, moon_dim: int) -> str | None:
        """The embedding view's field the MOON entry reads (``emb_{moon_dim}`` for ``emb``)."""
        e = next((e for e in self.features if e.kind == "moon_embedding"), None)
        if e is None:
            return None
        return f"emb_{moon_dim}" if e.field == "emb" else e.field

    def feast_features(self, moon_dim: int | None = None) -> list[str]:
        """Every ``view:field`` the spec reads (the MOON entry resolved with ``moon_dim``;
        without it, MOON entries are left out)."""
        out: list[str] = []
        for e in self.features:
            if e.kind == "moon_embedding":
                if moon_dim is None:
                    continue
                ref = f"{e.view}:{self.moon_field(moon_dim)}"
            else:
                ref = e.source
            if ref not in out:  # two entries may read one field (price, price_bucket)
                out.append(ref)
        return out

    def table_columns(self) -> list[FeatureEntry]:
        """The entries that are training-set columns beyond the base set (the extras)."""
        return self.extras()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_defaults=True)

    @classmethod
    def from_dict(cls, data: Any, where: str = "feature spec") -> FeatureSpec:
        """Validate ``data``; FeatureSpecError naming ``where`` and the feature."""
        if not isinstance(data, dict):
            raise FeatureSpecError(f"{where}: expected a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise FeatureSpecError(f"{where}: {_describe(exc, data)}") from None


def _describe(exc: ValidationError, data: dict[str, Any]) -> str:
    lines = []
    given = data.get("features")
    feats: list[Any] = given if isinstance(given, list) else []
    for err in exc.errors():
        loc = list(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] == "features" and isinstance(loc[1], int):
            entry = feats[loc[1]] if loc[1] < len(feats) else {}
            label = f"#{loc[1]}"
            if isinstance(entry, dict):  # the entry's column name, as elsewhere
                source = str(entry.get("source") or "")
                label = str(entry.get("name") or source.partition(":")[2] or source or label)
            key = ".".join(str(p) for p in loc[2:])
            what = (f"unknown key {key}" if err["type"] == "extra_forbidden"
                    else f"{key}: {msg}" if key else msg)
            lines.append(f"feature {label}: {what}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"unknown key {'.'.join(str(p) for p in loc)}")
        else:
            key = ".".join(str(p) for p in loc)
            lines.append(f"{key}: {msg}" if key else msg)
    return "; ".join(lines)


def spec_path(name_or_path: str | Path) -> Path:
    """``configs/features/<name>.yaml`` for a name, else the path itself."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return p
    return SPEC_DIR / f"{name_or_path}.yaml"


def known_specs() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def load_feature_spec(name_or_path: str | Path) -> FeatureSpec:
    """The spec ``configs/features/<name>.yaml`` (or a YAML file).

    Raises:
        FeatureSpecError: no such spec (the known names are listed), invalid YAML, or an
            entry that breaks a rule (file and feature named).
    """
    path = spec_path(name_or_path)
    if not path.is_file():
        raise FeatureSpecError(
            f"unknown feature spec {str(name_or_path)!r} (no {path}; known: "
            f"{', '.join(known_specs())})")
    try:
        data = read_yaml(path, what="feature spec")
    except ValueError as exc:
        raise FeatureSpecError(str(exc)) from None
    return FeatureSpec.from_dict(data, str(path))


def dump_feature_spec(spec: FeatureSpec, path: str | Path) -> Path:
    """Write ``spec`` as YAML (``load_feature_spec`` reads it back equal)."""
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return path


# -- fitted transforms --------------------------------------------------------------------
class FittedTransform(BaseModel):
    """A numeric feature's transform as fitted on the train split.

    Args:
        name: the feature.
        steps: the spec's steps.
        fill: the value a null takes (None: the feature had no nulls and no fill rule).
        mean, std: of the (log1p'd) train values, for ``standardise``.
        boundaries: ``bucketise``'s inner bucket edges (ascending; ``buckets - 1`` or
            fewer when the train values have ties).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    steps: list[Step]
    fill: float | None = None
    mean: float = 0.0
    std: float = 1.0
    boundaries: list[float] = Field(default_factory=list)

    @property
    def rows(self) -> int:
        """Table rows of a bucketised feature: one per bucket, plus the OOV row."""
        return len(self.boundaries) + 2

    def apply(self, values: np.ndarray, now_us: np.ndarray | None = None) -> np.ndarray:
        """Raw values [N] (NaN for null) -> transformed float32 [N], or bucket ids int64
        [N] for ``bucketise``. A null with no fill is a ValueError naming the feature.
        ``now_us`` [N]: the rows' times (microseconds), which ``since`` needs."""
        x = _since(self.name, self.steps, values, now_us)
        nulls = np.isnan(x)
        if nulls.any():
            if self.fill is None:
                raise ValueError(f"feature {self.name}: null values and no fill rule "
                                 f"(first at row {int(np.flatnonzero(nulls)[0])})")
            x[nulls] = self.fill
        if "bucketise" in self.steps:
            return np.searchsorted(np.asarray(self.boundaries), x, side="right").astype(np.int64)
        if "log1p" in self.steps:
            x = np.log1p(np.maximum(x, 0.0))
        if "standardise" in self.steps:
            x = (x - self.mean) / self.std
        return x.astype(np.float32)


def _since(name: str, steps: list[Step], values: np.ndarray,
           now_us: np.ndarray | None) -> np.ndarray:
    """``values`` as float64 (a copy); with ``since``, days from each value to ``now_us``."""
    x = np.asarray(values, np.float64).copy()
    if "since" in steps:
        if now_us is None:
            raise ValueError(f"feature {name}: since needs the rows' times")
        x = np.maximum(np.asarray(now_us, np.float64) - x, 0.0) / DAY_US
    return x


def fit_transform(entry: FeatureEntry, train_values: np.ndarray,
                  now_us: np.ndarray | None = None) -> FittedTransform:
    """Fit ``entry``'s transform on its train-split values [N] (NaN for null; ``now_us``
    [N] the rows' times, for ``since``).

    Raises:
        ValueError: nulls and no fill rule, or no non-null train value (feature named).
    """
    x = _since(entry.column, entry.transform, train_values, now_us)
    nulls = np.isnan(x)
    known = x[~nulls]
    name = entry.column
    if nulls.any() and entry.fill is None:
        raise ValueError(f"feature {name}: {int(nulls.sum())} null values in the train split "
                         "and no fill rule (give it fill: mean or a number)")
    if known.size == 0:
        raise ValueError(f"feature {name}: no non-null value in the train split")
    fill = None
    if entry.fill is not None:
        fill = float(known.mean()) if entry.fill == "mean" else float(entry.fill)
        x = np.where(nulls, fill, x)
    if entry.bucketised:
        qs = np.quantile(x, np.linspace(0, 1, entry.buckets + 1)[1:-1])
        return FittedTransform(name=name, steps=entry.transform, fill=fill,
                               boundaries=[float(b) for b in np.unique(qs)])
    if "log1p" in entry.transform:
        x = np.log1p(np.maximum(x, 0.0))
    mean, std = 0.0, 1.0
    if "standardise" in entry.transform:
        mean, std = float(x.mean()), float(x.std())
        std = std if std > 0 and math.isfinite(std) else 1.0
    return FittedTransform(name=name, steps=entry.transform, fill=fill, mean=mean, std=std)


class FittedFeatures(BaseModel):
    """A spec's encoded features (:meth:`FeatureSpec.encoded`: the categoricals no sequence
    targets, the numerics) as fitted on a train split: what the ranker's pooled tables and
    dense input are, and the one path from raw stored values to model inputs (training,
    evaluation and serving all call :meth:`encode`). Saved in the ranker's model directory.
    (Behaviour sequences and their targets are raw ids the ranker sizes and maps itself.)

    Args:
        spec: the feature spec.
        rows: table rows of each pooled feature (categorical or bucketised), the last OOV;
            features sharing a table have its rows.
        transforms: the fitted transform of each numeric.
        vocab: each string categorical's tokens (row i: token i), unless hashed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: FeatureSpec
    rows: dict[str, int] = Field(default_factory=dict)
    transforms: dict[str, FittedTransform] = Field(default_factory=dict)
    vocab: dict[str, list[str]] = Field(default_factory=dict)
    _token_rows: dict[str, dict[str, int]] = PrivateAttr(default_factory=dict)

    @property
    def sparse_names(self) -> list[str]:
        return [e.column for e in self.spec.pooled()]

    @property
    def dense_names(self) -> list[str]:
        return [e.column for e in self.spec.dense()]

    def tables(self, default_dim: int) -> list[tuple[str, list[str], int, int]]:
        """(table name, feature names, rows, dim) of the pooled features' tables, in spec
        order (features sharing a table share one entry)."""
        out: dict[str, tuple[list[str], int, int]] = {}
        for e in self.spec.pooled():
            name = self.spec.table_of(e)
            dim = e.embedding_dim or default_dim
            feats, rows, d = out.get(name, ([], 0, dim))
            if d != dim:
                raise FeatureSpecError(f"feature {e.column}: table {name} is {d}-dim, the "
                                       f"entry asks {dim}")
            out[name] = ([*feats, e.column], max(rows, self.rows[e.column]), dim)
        return [(name, feats, rows, dim) for name, (feats, rows, dim) in out.items()]

    def encode(
        self, raw: dict[str, np.ndarray], now_us: np.ndarray | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Raw stored values -> (table rows int64 [N] per pooled feature, dense float32
        [N, F]), in spec order.

        Args:
            raw: per encoded column (:meth:`FeatureSpec.encoded`), [N] values as stored: int64 ids (negative: null) for a
                categorical (object strings, None: null, for a string one), float64 (NaN:
                null) for a numeric (a time: microseconds since the epoch).
            now_us: [N] the rows' times in microseconds (the request's in serving), which
                ``since`` steps need.
        Raises:
            ValueError: a missing column, or a null numeric without a fill rule (named).
        """
        ids: dict[str, np.ndarray] = {}
        dense: list[np.ndarray] = []
        n = 0
        for e in self.spec.encoded():
            col = e.column
            if col not in raw:
                raise ValueError(f"feature {col}: no values given")
            x = np.asarray(raw[col])
            n = len(x)
            if e.kind == "categorical" and e.dtype == "string":
                ids[col] = self._token_ids(e, x)
            elif e.kind == "categorical":
                ids[col] = _rows(x.astype(np.int64), self.rows[col], e.hash)
            elif e.bucketised:
                ids[col] = self.transforms[col].apply(x, now_us)
            else:
                dense.append(self.transforms[col].apply(x, now_us))
        out = np.stack(dense, axis=1) if dense else np.zeros((n, 0), np.float32)
        return ids, out.astype(np.float32, copy=False)

    def _token_ids(self, e: FeatureEntry, tokens: np.ndarray) -> np.ndarray:
        """Tokens [N] (None: null) -> rows: the vocabulary's, or hashed; else OOV."""
        oov = self.rows[e.column] - 1
        if e.hash:
            return np.array([oov if t is None else zlib.crc32(str(t).encode()) % max(oov, 1)
                             for t in tokens], np.int64)
        lookup = self._token_rows.get(e.column)
        if lookup is None:
            lookup = {t: i for i, t in enumerate(self.vocab[e.column])}
            self._token_rows[e.column] = lookup
        return np.array([lookup.get(t, oov) if t is not None else oov for t in tokens],
                        np.int64)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FittedFeatures:
        return cls.model_validate(data)


def _rows(ids: np.ndarray, rows: int, hashed: bool) -> np.ndarray:
    """Raw ids -> rows of a table of ``rows`` rows (the last: out of vocabulary)."""
    oov = rows - 1
    if hashed:
        return np.where(ids >= 0, np.remainder(ids, max(oov, 1)), oov).astype(np.int64)
    return np.where((ids >= 0) & (ids < oov), ids, oov).astype(np.int64)


def fit_features(spec: FeatureSpec, raw: dict[str, np.ndarray], train: np.ndarray,
                 now_us: np.ndarray | None = None, default_rows: int = 0) -> FittedFeatures:
    """Fit ``spec``'s encoded features on the ``train`` rows (bool [N]) of ``raw`` (as for
    :meth:`FittedFeatures.encode`; ``now_us`` [N] the rows' times). ``default_rows`` (> 0):
    the rows of an int64 categorical that declares none (else: max train id + 2).

    Raises:
        ValueError: nulls without a fill rule, a vocabulary overflow (an id beyond a
            declared ``rows``), no train value (the feature is named).
    """
    rows: dict[str, int] = {}
    transforms: dict[str, FittedTransform] = {}
    vocab: dict[str, list[str]] = {}
    for e in spec.encoded():
        if e.column not in raw:
            raise ValueError(f"feature {e.column}: no values given")
        x = np.asarray(raw[e.column])[train]
        if e.kind == "categorical" and e.dtype == "string":
            if e.hash:
                rows[e.column] = e.rows
                continue
            tokens = sorted({str(t) for t in x.tolist() if t is not None})
            if e.rows and len(tokens) > e.rows - 1:
                raise ValueError(
                    f"feature {e.column}: {len(tokens)} distinct values overflow its vocabulary "
                    f"(rows {e.rows}, the last row is out of vocabulary); raise rows, set "
                    "rows: 0 (sized from the train split) or hash: true")
            vocab[e.column] = tokens
            rows[e.column] = e.rows or len(tokens) + 1
        elif e.kind == "categorical":
            ids = x.astype(np.int64)
            top = int(ids.max(initial=-1))
            if e.rows and not e.hash and top >= e.rows - 1:
                raise ValueError(
                    f"feature {e.column}: id {top} overflows its vocabulary (rows {e.rows}: "
                    f"ids 0..{e.rows - 2}, the last row is out of vocabulary); raise rows, "
                    "set rows: 0 (sized from the train split) or hash: true")
            rows[e.column] = e.rows or default_rows or max(top, 0) + 2
        else:
            fitted = fit_transform(e, x.astype(np.float64),
                                   None if now_us is None else np.asarray(now_us)[train])
            transforms[e.column] = fitted
            if e.bucketised:
                rows[e.column] = fitted.rows
    # features sharing a table: its rows (the largest any of them needs)
    table_rows: dict[str, int] = {}
    for e in spec.pooled():
        t = spec.table_of(e)
        table_rows[t] = max(table_rows.get(t, 0), rows[e.column])
    rows = {e.column: table_rows[spec.table_of(e)] for e in spec.pooled()}
    return FittedFeatures(spec=spec, rows=rows, transforms=transforms, vocab=vocab)
