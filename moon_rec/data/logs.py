"""``moon data import logs``: a team's own logs (behaviours, impressions, users, image
queries, and optionally the catalog) from CSV, TSV, parquet or JSON lines, through a
column-mapping YAML, into a validated world (DESIGN section 3). The RecBole, H&M and
MovieLens adapters are mappings over this one path.

The mapping (:class:`LogsMapping`; relative paths are relative to the YAML's folder)::

    time: {format: unix_s | unix_ms | iso8601, timezone: UTC}   # zone of values without one
    ids: {user: map, item: keep}           # map: string ids -> stable int64 (default; item
                                           # ids onto a `moon data import` catalog: keep); keep
                                           # kinds: user item query category brand spu request
    images: photos/                        # folder of the items' / image queries' files
    items:                                 # optional: else the world's items (moon data import)
      path: articles.csv
      columns: {item_id: article_id, title: prod_name, category: product_type_name,
                brand: .., price: .., launch_ts: .., spu_id: product_code, image: ..}
      attributes: [colour_group_name, detail_desc]   # -> "colour_group_name: Black; ..."
      extra: {colour: {column: colour_group_name, type: string}, stock: int64}
    users: {path: customers.csv, columns: {user_id: customer_id}, extra: {age: float64}}
    interactions:                          # one row per interaction: clicks, buys, ratings
      path: transactions.csv
      columns: {user_id: customer_id, item_id: article_id, ts: t_dat, label: rating}
      label_threshold: 4                   # with a label: impressions = every row
      action: buy                          # the behaviours' action
    behaviors: {path: .., columns: {user_id, item_id, ts, action, query_text}}
    impressions: {path: .., columns: {request_id, user_id, ts, item_id, position, clicked}}
    image_queries: {path: .., columns: {query_id, item_id, ts, image}}
    negatives: {k: 4, strategy: uniform, seed: 0}       # positives only -> impressions
    split: {quantile: 0.8}                 # or {train_end: "2020-09-15T00:00:00Z"}

What the tables hold: ``interactions`` with a ``label`` are explicit feedback: each row is
an impression of its own request (position 0), clicked = label >= ``label_threshold``, and
the clicked rows are behaviours logged one second later (a point-in-time join at the
impression never sees its own label) -- MovieLens's construction. Without a label they are
positives (implicit feedback): behaviours, and with ``negatives`` the CTR impressions of
``moon_rec.data.negatives`` (each positive one request: itself clicked + k negatives,
positions shuffled by the seed). ``behaviors`` and ``impressions`` sources are taken as
they are. Items launch at ``launch_ts`` when mapped (or the catalog's, for a catalog
already in ``--out``) or at their first interaction, whichever is earlier (cold =
launched after the split); users sign up at ``signup_ts``, else at their first
interaction. Extra columns of ``users`` / ``items`` are kept as typed columns (int64,
float64, string, bool; empty = null), for the ranker's feature spec.

Reading is streaming (pyarrow's CSV reader, parquet row groups, JSON lines a line at a
time): memory holds the integer columns of the logs (user, item, time, label; and the
query text of logs that map one), the id maps, the users table and one batch of text;
items (photos included) are staged part by part. It is not constant: with the sort and
the final validation, about 170 bytes a row (benchmarks/import_logs.py: 0.98 GB peak for
5M rows). The first bad record stops the
import with ``FILE: column C: row R: why`` (CSV / TSV / JSON lines: R is the line, the
header being line 1; parquet: the row from 0) and nothing is written: every table and the
id maps are written and validated in a staging folder beside ``--out``, then moved in.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import yaml
from PIL import UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moon_rec.data.errors import DataError
from moon_rec.data.id_map import KINDS, IdMap, IdPolicy, map_path
from moon_rec.data.images import decode_prepared, encode_png
from moon_rec.data.images import image_size as header_size
from moon_rec.data.importer import ImportLimits, _json_records, image_path
from moon_rec.data.io import (
    WORLD_META,
    conform,
    has_table,
    read_table,
    read_world_meta,
    write_world_meta,
)
from moon_rec.data.negatives import NegativeSampling, sample_negatives
from moon_rec.data.schemas import ACTIONS, EXTRA_TYPES, TABLES, TIMESTAMP, extra_column_problem
from moon_rec.data.validation import validate_world

BATCH_ROWS = 65_536
CSV_BLOCK = 4 << 20
BEHAVIOUR_DELAY_US = 1_000_000
# unix times outside [1970, 2100) are typos or another unit
MAX_UNIX_S = 4_102_444_800
ExtraType = Literal["int64", "float64", "string", "bool"]
_TRUE = ("1", "1.0", "true", "t", "yes", "y")
_FALSE = ("0", "0.0", "false", "f", "no", "n")


# -- the mapping --------------------------------------------------------------------------


class TimeFormat(BaseModel):
    """How the source writes times.

    Args:
        format: ``unix_s`` | ``unix_ms`` (numbers) | ``iso8601`` (``2020-09-20``,
            ``2020-09-20T10:00:00+02:00``).
        timezone: the zone of ISO-8601 values written without one (None: such a value is
            an error).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["unix_s", "unix_ms", "iso8601"] = "iso8601"
    timezone: str | None = None


class ExtraColumn(BaseModel):
    """An extra typed column of users / items: the source column and our type."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    column: str | None = None  # default: the extra column's own name
    type: ExtraType


class Source(BaseModel):
    """One input file and its columns (ours -> theirs)."""

    model_config = ConfigDict(extra="forbid")
    OURS: ClassVar[tuple[str, ...]] = ()
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    path: Path
    format: Literal["csv", "tsv", "parquet", "jsonl"] | None = None
    delimiter: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    time: TimeFormat | None = None  # this file's time format (default: the mapping's)

    @model_validator(mode="after")
    def _check_columns(self) -> Source:
        for ours in self.columns:
            if ours not in self.OURS:
                raise ValueError(f"unknown column {ours!r} (this table takes: {', '.join(self.OURS)})")
        return self

    def their(self, ours: str) -> str | None:
        """The source column of ``ours`` (its own name when not mapped and required)."""
        if ours in self.columns:
            return self.columns[ours]
        return ours if ours in self.REQUIRED else None

    def kind(self) -> str:
        if self.format is not None:
            return self.format
        suffix = self.path.suffix.lower()
        kinds = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "jsonl",
                 ".ndjson": "jsonl", ".json": "jsonl", ".inter": "tsv", ".item": "tsv",
                 ".user": "tsv", ".txt": "csv"}
        if suffix not in kinds:
            raise DataError("cannot tell the format from the name; set format: csv | tsv | "
                            "parquet | jsonl", file=str(self.path))
        return kinds[suffix]


class _WithExtras(Source):
    extra: dict[str, ExtraType | ExtraColumn] = Field(default_factory=dict)

    def extras(self, table: str) -> dict[str, ExtraColumn]:
        out = {}
        for name, spec in self.extra.items():
            col = ExtraColumn(type=spec) if isinstance(spec, str) else spec
            problem = extra_column_problem(table, name, EXTRA_TYPES[col.type])
            if problem:
                raise DataError(problem, file=str(self.path), column=name)
            out[name] = ExtraColumn(column=col.column or name, type=col.type)
        return out


class ItemsSource(_WithExtras):
    OURS: ClassVar[tuple[str, ...]] = ("item_id", "title", "category", "brand", "attributes", "price", "launch_ts",
            "spu_id", "image")
    REQUIRED: ClassVar[tuple[str, ...]] = ("item_id", "title")
    # columns joined into the attribute text "label: value; ...": a list (the label is the
    # column) or {label: column}
    attributes: list[str] | dict[str, str] = Field(default_factory=list)
    category_sep: str | None = None  # category = the first of the separated values
    # names of integer category ids (ids: {category: keep}); all of them are listed in
    # the categories table, used or not
    category_names: dict[int, str] = Field(default_factory=dict)
    missing_image: Literal["null", "error"] = "error"


    def attribute_columns(self) -> dict[str, str]:
        a = self.attributes
        return dict(a) if isinstance(a, dict) else {c: c for c in a}


class UsersSource(_WithExtras):
    OURS: ClassVar[tuple[str, ...]] = ("user_id", "signup_ts")
    REQUIRED: ClassVar[tuple[str, ...]] = ("user_id",)


class InteractionsSource(Source):
    OURS: ClassVar[tuple[str, ...]] = ("user_id", "item_id", "ts", "label")
    REQUIRED: ClassVar[tuple[str, ...]] = ("user_id", "item_id", "ts")
    label_threshold: float | None = None
    action: Literal["click", "cart", "buy"] = "click"


class BehaviorsSource(Source):
    OURS: ClassVar[tuple[str, ...]] = ("user_id", "item_id", "ts", "action", "query_text", "query_image_id")
    REQUIRED: ClassVar[tuple[str, ...]] = ("user_id", "item_id", "ts")
    action: Literal["click", "cart", "buy"] = "click"  # when no action column is mapped


class ImpressionsSource(Source):
    OURS: ClassVar[tuple[str, ...]] = ("request_id", "user_id", "ts", "item_id", "position", "clicked", "query_text")
    REQUIRED: ClassVar[tuple[str, ...]] = ("user_id", "item_id", "ts", "clicked")


class ImageQueriesSource(Source):
    OURS: ClassVar[tuple[str, ...]] = ("query_id", "item_id", "ts", "image")
    REQUIRED: ClassVar[tuple[str, ...]] = ("query_id", "item_id", "ts", "image")


class Split(BaseModel):
    """The time split: a quantile of the log's times, or a fixed time."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    quantile: float = Field(default=0.8, gt=0.0, lt=1.0)
    train_end: datetime | None = None


class LogsMapping(BaseModel):
    """A logs import: sources, id policies, time format, negatives and split."""

    model_config = ConfigDict(extra="forbid")

    time: TimeFormat = TimeFormat()
    ids: dict[Literal["user", "item", "query", "category", "brand", "spu", "request"],
              IdPolicy] = Field(
        default_factory=dict)
    images: Path | None = None
    image_size: int = Field(default=64, ge=0)
    items: ItemsSource | None = None
    users: UsersSource | None = None
    interactions: InteractionsSource | None = None
    behaviors: BehaviorsSource | None = None
    impressions: ImpressionsSource | None = None
    image_queries: ImageQueriesSource | None = None
    negatives: NegativeSampling | None = None
    split: Split = Split()
    look_driven: list[str] = Field(default_factory=list)
    # no items source and no catalog: every item of the logs, titled by its id (text-only)
    items_from_logs: bool = False
    source: str = "logs"

    @model_validator(mode="after")
    def _check(self) -> LogsMapping:
        if self.interactions is None and self.behaviors is None and self.impressions is None:
            raise ValueError("no log: give interactions, behaviors or impressions")
        if self.interactions is not None and (self.behaviors or self.impressions):
            raise ValueError("interactions build the behaviours and impressions: give them "
                             "alone, or behaviors / impressions instead")
        return self

    def policy(self, kind: str) -> IdPolicy:
        return self.ids.get(kind, "map")  # type: ignore[call-overload]

    def resolve(self, base: Path) -> LogsMapping:
        """The mapping with relative paths taken from ``base``."""
        data = self.model_copy(deep=True)
        if data.images is not None and not data.images.is_absolute():
            data.images = base / data.images
        for name in ("items", "users", "interactions", "behaviors", "impressions", "image_queries"):
            src = getattr(data, name)
            if src is not None and not src.path.is_absolute():
                src.path = base / src.path
        return data


def load_mapping(path: str | Path) -> LogsMapping:
    """Read a mapping YAML (relative paths resolved against its folder).

    Raises:
        DataError: naming the file and the key of the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("mapping file not found", file=str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"not a YAML file ({exc})", file=str(path)) from exc
    try:
        mapping = LogsMapping.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or None
        raise DataError(err["msg"], file=str(path), column=where) from None
    return mapping.resolve(path.parent)


# -- reading ------------------------------------------------------------------------------


@dataclass
class Batch:
    """Columns (ours -> array) of consecutive records of one file, and where they are."""

    file: str
    cols: dict[str, pa.Array]
    start: int  # the first record's row (line for text files)
    lines: np.ndarray | None = None  # JSON lines: each record's own line

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    def row(self, i: int) -> int:
        return int(self.lines[i]) if self.lines is not None else self.start + i

    def error(self, column: str, i: int, why: str) -> DataError:
        return DataError(why, file=self.file, column=column, row=self.row(i))


def _header(src: Source) -> list[str]:
    kind = src.kind()
    file = str(src.path)
    if not src.path.is_file():
        raise DataError("file not found", file=file)
    if kind == "parquet":
        try:
            return pq.read_schema(src.path).names
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"not a readable parquet file ({exc})", file=file) from exc
    if kind == "jsonl":
        return []  # JSON lines have no header: a missing field is found per record
    try:
        reader = pcsv.open_csv(src.path, read_options=pcsv.ReadOptions(block_size=1 << 16),
                               parse_options=_parse_options(src, []),
                               convert_options=pcsv.ConvertOptions(column_types={},
                                                                  include_columns=[]))
        names = reader.schema.names
        reader.close()
    except pa.ArrowInvalid as exc:
        raise DataError(f"unreadable header ({exc})", file=file, row=1) from exc
    return [n.lstrip("\ufeff") for n in names]


def _parse_options(src: Source, bad: list[int]) -> pcsv.ParseOptions:
    tsv = src.kind() == "tsv"
    delimiter = src.delimiter or ("\t" if tsv else ",")

    def invalid(row: Any) -> str:
        bad.append(row.number if row.number is not None else -1)
        return "error"

    # TSV (RecBole's atomic files) has no quoting: a '"' in a title is a character
    return pcsv.ParseOptions(delimiter=delimiter, quote_char=False if tsv else '"',
                             invalid_row_handler=invalid)


def read_batches(src: Source, needed: dict[str, str]) -> Iterator[Batch]:
    """Batches of ``needed`` (ours -> their column) of a source, as they are stored (CSV:
    strings). A column missing from the header is an error naming it."""
    file = str(src.path)
    header = _header(src)
    kind = src.kind()
    if kind != "jsonl":
        for ours, theirs in needed.items():
            if theirs not in header:
                raise DataError(f"missing column (for our '{ours}'; the file has: "
                                f"{', '.join(header[:20])})", file=file, column=theirs, row=1
                                if kind != "parquet" else None)
    theirs_list = list(dict.fromkeys(needed.values()))
    if kind == "parquet":
        start = 0
        with contextlib.closing(_parquet_batches(src.path, theirs_list)) as it:
            for rb in it:
                yield Batch(file, {o: rb.column(t) for o, t in needed.items()}, start)
                start += rb.num_rows
        return
    if kind == "jsonl":
        yield from _jsonl_batches(src.path, needed)
        return
    bad: list[int] = []
    try:
        reader = pcsv.open_csv(
            src.path,
            read_options=pcsv.ReadOptions(block_size=CSV_BLOCK, column_names=header, skip_rows=1),
            parse_options=_parse_options(src, bad),
            convert_options=pcsv.ConvertOptions(
                column_types={t: pa.string() for t in theirs_list}, include_columns=theirs_list,
                strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
        start = 2
        for rb in reader:
            yield Batch(file, {o: rb.column(t) for o, t in needed.items()}, start)
            start += rb.num_rows
    except pa.ArrowInvalid as exc:
        row = bad[0] if bad and bad[0] >= 0 else None
        raise DataError(f"unreadable CSV ({exc})", file=file, row=row) from exc


def _parquet_batches(path: Path, columns: list[str]) -> Generator[pa.RecordBatch, None, None]:
    try:
        yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable parquet file ({exc})", file=str(path)) from exc


def _jsonl_batches(path: Path, needed: dict[str, str]) -> Iterator[Batch]:
    limits = ImportLimits()
    file = str(path)
    rows: list[int] = []
    values: dict[str, list[Any]] = {o: [] for o in needed}

    def flush() -> Batch:
        cols = {o: pa.array([None if v is None else _json_text(v) for v in vs], pa.string())
                for o, vs in values.items()}
        batch = Batch(file, cols, rows[0], np.asarray(rows, np.int64))
        rows.clear()
        for vs in values.values():
            vs.clear()
        return batch

    for line, rec in _json_records(path, limits):
        for ours, theirs in needed.items():
            if theirs not in rec:
                raise DataError(f"missing field (for our '{ours}')", file=file,
                                column=theirs, row=line)
            v = rec[theirs]
            if isinstance(v, (dict, list)):
                raise DataError(f"expected a plain value, got a JSON {type(v).__name__}",
                                file=file, column=theirs, row=line)
            values[ours].append(v)
        rows.append(line)
        if len(rows) >= BATCH_ROWS:
            yield flush()
    if rows:
        yield flush()


def _json_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return str(v)


# -- converting one column ----------------------------------------------------------------


def _strings(arr: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not pa.types.is_string(arr.type):
        if pa.types.is_floating(arr.type):  # 17.0 is the id 17
            as_int = pc.cast(arr, pa.int64(), safe=False)
            if pc.all(pc.equal(pc.cast(as_int, arr.type), arr)).as_py() in (True, None):
                arr = as_int
        arr = arr.cast(pa.string())
    return pc.utf8_trim_whitespace(arr)


def _missing(arr: pa.Array) -> np.ndarray:
    mask = pc.is_null(arr)
    if pa.types.is_string(arr.type):
        mask = pc.or_(mask, pc.equal(arr, ""))
    return np.asarray(mask.to_numpy(zero_copy_only=False), bool)


def _require(b: Batch, ours: str, theirs: str) -> pa.Array:
    arr = b.cols[ours]
    if pa.types.is_string(arr.type) or pa.types.is_dictionary(arr.type):
        arr = _strings(arr)
    miss = _missing(arr)
    if miss.any():
        raise b.error(theirs, int(np.argmax(miss)), f"missing value (our '{ours}' is required)")
    return arr


def _cast(b: Batch, arr: pa.Array, type_: pa.DataType, theirs: str, what: str) -> pa.Array:
    """``arr`` cast to ``type_``; the first value that does not cast is an error."""
    try:
        return pc.cast(arr, type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    for i, v in enumerate(arr.to_pylist()):
        if v is None:
            continue
        try:
            pc.cast(pa.array([v], arr.type), type_)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise b.error(theirs, i, f"unparsable value {_show(v)}, expected {what}") from None
    raise DataError(f"cannot read as {what}", file=b.file, column=theirs)


def _show(v: Any, n: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= n else text[:n] + "..."


def ids_of(b: Batch, ours: str, theirs: str, policy: IdPolicy, idmap: IdMap) -> np.ndarray:
    """[N] int64 ids of a required id column."""
    arr = _require(b, ours, theirs)
    if policy == "map":
        return idmap.map_array(_strings(arr))
    if not pa.types.is_integer(arr.type):
        arr = _cast(b, _strings(arr), pa.int64(), theirs, "an integer id (ids: keep)")
    out = np.asarray(arr.cast(pa.int64()).to_numpy(zero_copy_only=False), np.int64)
    neg = out < 0
    if neg.any():
        i = int(np.argmax(neg))
        raise b.error(theirs, i, f"negative id {int(out[i])} (ids are >= 0; or use ids: map)")
    return out


def times_of(b: Batch, ours: str, theirs: str, fmt: TimeFormat, *,
             required: bool = True) -> np.ndarray:
    """[N] int64 microseconds since the epoch (UTC); -1 where missing and not required."""
    arr = _require(b, ours, theirs) if required else b.cols[ours]
    if pa.types.is_timestamp(arr.type):
        if arr.type.tz is None:
            if fmt.timezone is None:
                raise DataError("timestamps without a time zone (set time.timezone)",
                                file=b.file, column=theirs)
            arr = pc.assume_timezone(arr, fmt.timezone)
        out = arr.cast(TIMESTAMP).cast(pa.int64())
        return np.asarray(out.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
    if pa.types.is_date(arr.type):
        arr = arr.cast(pa.timestamp("s")).cast(pa.string())
    s = _strings(arr)
    miss = _missing(s)
    s = pc.if_else(pa.array(miss), pa.scalar(None, pa.string()), s)
    if fmt.format in ("unix_s", "unix_ms"):
        x = _cast(b, s, pa.float64(), theirs, f"a number ({fmt.format})")
        sec = np.asarray(x.fill_null(0).to_numpy(zero_copy_only=False), np.float64)
        if fmt.format == "unix_ms":
            sec = sec / 1000.0
        bad = ~miss & ~((sec >= 0) & (sec < MAX_UNIX_S))
        if bad.any():
            i = int(np.argmax(bad))
            raise b.error(theirs, i, f"unix time {s[i].as_py()} is not a plausible time in "
                                     f"{'milliseconds' if fmt.format == 'unix_ms' else 'seconds'}")
        us = np.round(sec * 1e6).astype(np.int64)
    else:
        us = _iso_us(b, s, theirs, fmt)
    us[miss] = -1
    return us


def _iso_us(b: Batch, s: pa.Array, theirs: str, fmt: TimeFormat) -> np.ndarray:
    try:
        out = s.cast(TIMESTAMP)
    except pa.ArrowInvalid:
        out = None
        if fmt.timezone is not None:
            with contextlib.suppress(pa.ArrowInvalid, ValueError):
                out = pc.assume_timezone(s.cast(pa.timestamp("us")), fmt.timezone)
    if out is None:  # find the first bad value, and say why
        for i, v in enumerate(s.to_pylist()):
            if v is None:
                continue
            try:
                ts = datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                raise b.error(theirs, i, f"not an ISO-8601 time: {_show(v)}") from None
            if ts.tzinfo is None and fmt.timezone is None:
                raise b.error(theirs, i, f"time without a zone: {_show(v)} (set time.timezone)")
            try:
                s[i: i + 1].cast(TIMESTAMP)
            except pa.ArrowInvalid:
                if ts.tzinfo is not None:  # mixed: a zone here, none elsewhere
                    continue
        raise DataError("times mix values with and without a zone", file=b.file, column=theirs)
    return np.array(out.cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False), np.int64)


def floats_of(b: Batch, ours: str, theirs: str, default: float = 0.0) -> np.ndarray:
    s = _strings(b.cols[ours]) if not pa.types.is_floating(b.cols[ours].type) else b.cols[ours]
    miss = _missing(s)
    if pa.types.is_string(s.type):
        s = pc.if_else(pa.array(miss), pa.scalar(None, pa.string()), s)
    x = np.asarray(_cast(b, s, pa.float64(), theirs, "a number").fill_null(default)
                   .to_numpy(zero_copy_only=False), np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.argmax(bad))
        raise b.error(theirs, i, f"not a finite number: {x[i]}")
    return x


def texts_of(b: Batch, ours: str) -> pa.Array:
    arr = b.cols[ours]
    return _strings(arr).fill_null("") if not pa.types.is_string(arr.type) else arr.fill_null("")


def extra_of(b: Batch, name: str, col: ExtraColumn) -> pa.Array:
    """An extra column, typed; empty values are null."""
    theirs = col.column or name
    s = _strings(b.cols[name])
    miss = _missing(s)
    s = pc.if_else(pa.array(miss), pa.scalar(None, pa.string()), s)
    if col.type == "string":
        return s
    if col.type == "bool":
        low = pc.utf8_lower(s)
        is_t = pc.is_in(low, pa.array(_TRUE))
        is_f = pc.is_in(low, pa.array(_FALSE))
        bad = np.asarray(pc.invert(pc.or_(is_t, is_f)).to_numpy(zero_copy_only=False), bool) & ~miss
        if bad.any():
            i = int(np.argmax(bad))
            raise b.error(theirs, i, f"unparsable value {_show(s[i].as_py())}, expected a bool "
                                     f"({'/'.join(_TRUE)} or {'/'.join(_FALSE)})")
        return pc.if_else(pa.array(miss), pa.scalar(None, pa.bool_()), is_t)
    if col.type == "int64":
        # "3.0" (a float column written by pandas) is the integer 3
        x = _cast(b, s, pa.float64(), theirs, "an integer")
        whole = pc.equal(pc.floor(x), x)
        bad = np.asarray(pc.invert(whole).fill_null(False).to_numpy(zero_copy_only=False), bool)
        if bad.any():
            i = int(np.argmax(bad))
            raise b.error(theirs, i, f"unparsable value {_show(s[i].as_py())}, expected an integer")
        try:
            return _cast(b, s, pa.int64(), theirs, "an integer")
        except DataError:
            return pc.cast(x, pa.int64())
    x = _cast(b, s, pa.float64(), theirs, "a number")
    return x


# -- the import ---------------------------------------------------------------------------


@dataclass
class _Log:
    """The log's integer columns, gathered batch by batch (lists of arrays)."""

    user: list[np.ndarray]
    item: list[np.ndarray]
    ts: list[np.ndarray]
    label: list[np.ndarray]
    request: list[np.ndarray]
    position: list[np.ndarray]
    action: list[pa.Array]
    query: list[pa.Array]
    query_image: list[pa.Array]

    @classmethod
    def empty(cls) -> _Log:
        return cls([], [], [], [], [], [], [], [], [])

    def cat(self, name: str) -> np.ndarray:
        """Column ``name`` as one array (concatenated once: the batches are let go)."""
        parts = getattr(self, name)
        if not parts:
            return np.empty(0, np.int64)
        if len(parts) > 1:
            parts[:] = [np.concatenate(parts)]
        return parts[0]

    def text(self, name: str) -> pa.ChunkedArray:
        return pa.chunked_array(getattr(self, name), pa.string())


Hook = Callable[[Batch], Batch]


class _Import:
    """One logs import: the staging folder, the id maps and the gathered columns."""

    def __init__(self, mapping: LogsMapping, out: Path, stage: Path,
                 hooks: dict[str, Hook] | None) -> None:
        self.m, self.out, self.stage = mapping, out, stage
        self.hooks = hooks or {}
        self.maps = {k: IdMap.load(out, k) for k in KINDS}
        self.limits = ImportLimits()

    # items -----------------------------------------------------------------------------

    def items(self) -> None:
        """Items of the mapping's items source (staged as parts) or of ``out``'s world."""
        src = self.m.items
        self.item_parts: list[Path] = []
        if src is None and self.m.items_from_logs:
            self.own_items = True
            self.item_ids = np.zeros(0, np.int64)  # filled from the logs
            return
        if src is None:
            if not has_table(self.out, "items"):
                raise DataError("no items: give an items source in the mapping, or import "
                                "the catalog into --out first (moon data import)",
                                file=str(self.out))
            t = read_table(self.out, "items", ["item_id", "category_id", "launch_ts"])
            self.item_ids = t.column("item_id").to_numpy()
            self.item_cat = t.column("category_id").to_numpy()
            self.item_launch = t.column("launch_ts").cast(pa.int64()).to_numpy()
            self.own_items = False
            return
        self.own_items = True
        extras = src.extras("items")
        needed = {o: t for o in src.OURS if (t := src.their(o)) is not None}
        for label, column in src.attribute_columns().items():
            needed[f"attr:{label}"] = column
        for name, col in extras.items():
            needed[name] = col.column or name
        ids: list[np.ndarray] = []
        cats: list[np.ndarray] = []
        launches: list[np.ndarray] = []
        seen: dict[int, int] = {}
        for n, b in enumerate(self._batches("items", src, needed)):
            t, item_id, cat, launch = self._item_batch(b, src, extras, seen)
            path = self.stage / "_items" / f"part-{n:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, path, compression="zstd")
            self.item_parts.append(path)
            ids.append(item_id)
            cats.append(cat)
            launches.append(launch)
        if not ids:
            raise DataError("no items", file=str(src.path))
        self.item_ids = np.concatenate(ids)
        self.item_cat = np.concatenate(cats)
        self.item_launch = np.concatenate(launches)

    def _item_batch(self, b: Batch, src: ItemsSource, extras: dict[str, ExtraColumn],
                    seen: dict[int, int]) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
        n = len(b)
        item_id = ids_of(b, "item_id", src.their("item_id") or "", self.m.policy("item"),
                         self.maps["item"])
        for i, v in enumerate(item_id.tolist()):
            if v in seen:
                raise b.error(src.their("item_id") or "", i,
                              f"duplicate id (first at row {seen[v]})")
            seen[v] = b.row(i)
        title = _require(b, "title", src.their("title") or "")
        title = _strings(title)
        category = self._label(b, src, "category", "category", n)
        brand = self._label(b, src, "brand", "brand", n)
        text = texts_of(b, "attributes") if "attributes" in b.cols else None
        if src.attributes:
            pieces = []
            for a in src.attribute_columns():
                v = texts_of(b, f"attr:{a}")
                pieces.append(pc.if_else(pc.equal(v, ""), "", pc.binary_join_element_wise(
                    f"{a}: ", v, "")))
            parts = [p.to_pylist() for p in pieces]
            joined = ["; ".join(x for x in row if x) for row in zip(*parts, strict=True)]
            base = text.to_pylist() if text is not None else [""] * n
            text = pa.array(["; ".join(x for x in (t0, j) if x) for t0, j in
                             zip(base, joined, strict=True)], pa.string())
        price = floats_of(b, "price", src.their("price") or "") if "price" in b.cols else np.zeros(n)
        if (price < 0).any():
            i = int(np.argmax(price < 0))
            raise b.error(src.their("price") or "", i, f"price must be >= 0, got {price[i]}")
        launch = (times_of(b, "launch_ts", src.their("launch_ts") or "", src.time or self.m.time,
                           required=False) if "launch_ts" in b.cols else np.full(n, -1, np.int64))
        spu = (ids_of(b, "spu_id", src.their("spu_id") or "", self.m.policy("spu"),
                      self.maps["spu"]) if "spu_id" in b.cols else item_id)
        image = self._images(b, src) if "image" in b.cols else pa.nulls(n, pa.binary())
        cols: dict[str, Any] = {
            "item_id": item_id, "category_id": category, "brand_id": brand,
            "title": title, "attributes": text if text is not None else _same("", n),
            "price": price, "launch_ts": launch, "image": image, "spu_id": spu,
        }
        for name, col in extras.items():
            cols[name] = extra_of(b, name, col)
        return pa.table(cols), item_id, category, launch

    def _label(self, b: Batch, src: ItemsSource, ours: str, kind: str, n: int) -> np.ndarray:
        if ours not in b.cols:
            return np.zeros(n, np.int64)
        theirs = src.their(ours) or ""
        s = _strings(b.cols[ours])
        if ours == "category" and src.category_sep is not None:
            first = pc.list_element(pc.split_pattern(s, src.category_sep), 0)
            s = pc.utf8_trim_whitespace(first)
        miss = _missing(s)
        if miss.all():
            return np.zeros(n, np.int64)
        if self.m.policy(kind) == "keep":
            x = ids_of(Batch(b.file, {ours: pc.if_else(pa.array(miss), "0", s)}, b.start, b.lines),
                       ours, theirs, "keep", self.maps[kind])
            return x
        out = np.zeros(n, np.int64)
        keep = ~miss
        out[keep] = self.maps[kind].map_array(s.filter(pa.array(keep)))
        return out

    def _images(self, b: Batch, src: ItemsSource | ImageQueriesSource) -> pa.Array:
        theirs = src.their("image") or "image"
        if self.m.images is None:
            raise DataError("the mapping maps an image column but gives no images: folder",
                            file=str(src.path), column=theirs)
        names = _strings(b.cols["image"]).to_pylist()
        out: list[bytes | None] = []
        for i, name in enumerate(names):
            if not name:
                if isinstance(src, ItemsSource) and src.missing_image == "null":
                    out.append(None)
                    continue
                raise b.error(theirs, i, "missing image")
            try:
                path = image_path(self.m.images, name)
            except ValueError as exc:
                raise b.error(theirs, i, str(exc)) from None
            if not path.is_file():
                if isinstance(src, ItemsSource) and src.missing_image == "null":
                    out.append(None)
                    continue
                raise b.error(theirs, i, f"image file not found: {path}")
            out.append(self._image(b, theirs, i, path))
        return pa.array(out, pa.binary())

    def _image(self, b: Batch, theirs: str, i: int, path: Path) -> bytes:
        lim = self.limits
        try:
            if path.stat().st_size > lim.max_image_bytes:
                raise b.error(theirs, i, f"image file larger than {lim.max_image_bytes:,} bytes")
            data = path.read_bytes()
        except OSError as exc:
            raise b.error(theirs, i, f"cannot read image {path} ({exc.strerror or exc})") from None
        try:
            w, h = header_size(data)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            w = h = 0
        if w * h > lim.max_image_pixels:
            raise b.error(theirs, i, f"image of {w} x {h} pixels, more than the limit of "
                                     f"{lim.max_image_pixels:,}")
        try:
            return encode_png(decode_prepared(data, self.m.image_size, where=str(path),
                                              limits=lim.image_limits()))
        except DataError as exc:
            raise b.error(theirs, i, exc.reason + f" ({path})") from None

    # users -----------------------------------------------------------------------------

    def users(self) -> None:
        src = self.m.users
        self.user_table: pa.Table | None = None
        self.user_ids: np.ndarray | None = None
        if src is None:
            return
        extras = src.extras("users")
        needed = {o: t for o in src.OURS if (t := src.their(o)) is not None}
        for name, col in extras.items():
            needed[name] = col.column or name
        seen: dict[int, int] = {}
        parts = []
        for b in self._batches("users", src, needed):
            uid = ids_of(b, "user_id", src.their("user_id") or "", self.m.policy("user"),
                         self.maps["user"])
            for i, v in enumerate(uid.tolist()):
                if v in seen:
                    raise b.error(src.their("user_id") or "", i,
                                  f"duplicate id (first at row {seen[v]})")
                seen[v] = b.row(i)
            signup = (times_of(b, "signup_ts", src.their("signup_ts") or "", src.time or self.m.time,
                               required=False) if "signup_ts" in b.cols
                      else np.full(len(b), -1, np.int64))
            cols: dict[str, Any] = {"user_id": uid, "signup_ts": signup}
            for name, col in extras.items():
                cols[name] = extra_of(b, name, col)
            parts.append(pa.table(cols))
        if not parts:
            raise DataError("no users", file=str(src.path))
        self.user_table = pa.concat_tables(parts)
        self.user_ids = np.sort(self.user_table.column("user_id").to_numpy())

    # the logs --------------------------------------------------------------------------

    def log(self) -> None:
        """Read the interaction / behaviour / impression sources into ``self.logs``."""
        from_logs = self.m.items is None and self.m.items_from_logs
        self.sorted_items: np.ndarray | None = None if from_logs else np.sort(self.item_ids)
        self.logs: dict[str, _Log] = {}
        for name in ("interactions", "behaviors", "impressions"):
            src = getattr(self.m, name)
            if src is None:
                continue
            if name == "impressions" and self.m.negatives is not None:
                raise DataError("negative sampling asked of a log that already has impressions "
                                "(drop negatives: from the mapping)", file=str(src.path),
                                column=src.their("clicked"))
            if (name == "interactions" and self.m.negatives is not None
                    and src.their("label") is not None):
                raise DataError("negative sampling asked of a log that already has impressions "
                                "(a label column makes every row an impression)",
                                file=str(src.path), column=src.their("label"))
            if name == "interactions" and (src.their("label") is None) != (src.label_threshold is None):
                raise DataError("a label column and label_threshold go together",
                                file=str(src.path), column=src.their("label"))
            needed = {o: t for o in src.OURS if (t := src.their(o)) is not None}
            log = self.logs[name] = _Log.empty()
            for b in self._batches(name, src, needed):
                self._log_batch(name, src, b, log)
            if not log.user:
                raise DataError("no records", file=str(src.path))

    def _log_batch(self, name: str, src: Source, b: Batch, log: _Log) -> None:
        n = len(b)
        uid_t, iid_t = src.their("user_id") or "", src.their("item_id") or ""
        user = ids_of(b, "user_id", uid_t, self.m.policy("user"), self.maps["user"])
        item = ids_of(b, "item_id", iid_t, self.m.policy("item"), self.maps["item"])
        self._known(b, item, self.sorted_items, iid_t, "item")
        self._known(b, user, self.user_ids, uid_t, "user")
        ts = times_of(b, "ts", src.their("ts") or "", src.time or self.m.time)
        log.user.append(user)
        log.item.append(item)
        log.ts.append(ts)
        if isinstance(src, InteractionsSource) and "label" in b.cols:
            log.label.append(floats_of(b, "label", src.their("label") or ""))
        if isinstance(src, ImpressionsSource):
            ct = src.their("clicked") or ""
            clicked = floats_of(b, "clicked", ct)
            bad = ~np.isin(clicked, (0.0, 1.0))
            if bad.any():
                i = int(np.argmax(bad))
                raise b.error(ct, i, f"clicked must be 0 or 1, got {clicked[i]}")
            log.label.append(clicked)
            if "request_id" in b.cols:
                log.request.append(ids_of(b, "request_id", src.their("request_id") or "",
                                          self.m.policy("request"), self.maps["request"]))
            if "position" in b.cols:
                pos = floats_of(b, "position", src.their("position") or "")
                if ((pos < 0) | (pos != np.floor(pos)) | (pos > 2**31 - 1)).any():
                    i = int(np.argmax((pos < 0) | (pos != np.floor(pos))))
                    raise b.error(src.their("position") or "", i, "position must be an integer >= 0")
                log.position.append(pos.astype(np.int64))
        if isinstance(src, BehaviorsSource):
            if "action" in b.cols:
                act = _require(b, "action", src.their("action") or "")
                act = pc.utf8_lower(_strings(act))
                bad = np.asarray(pc.invert(pc.is_in(act, pa.array(ACTIONS)))
                                 .to_numpy(zero_copy_only=False), bool)
                if bad.any():
                    i = int(np.argmax(bad))
                    raise b.error(src.their("action") or "", i,
                                  f"action {act[i].as_py()!r} not one of {list(ACTIONS)}")
                log.action.append(act)
            else:
                log.action.append(_same(src.action, n))
            if "query_image_id" in b.cols:
                q = _strings(b.cols["query_image_id"])
                miss = _missing(q)
                ids = np.zeros(n, np.int64)
                if (~miss).any():
                    ids[~miss] = self.maps["query"].map_array(q.filter(pa.array(~miss))) \
                        if self.m.policy("query") == "map" else ids_of(
                            Batch(b.file, {"q": pc.if_else(pa.array(miss), "0", q)}, b.start,
                                  b.lines), "q", src.their("query_image_id") or "", "keep",
                            self.maps["query"])[~miss]
                log.query_image.append(pa.array(ids, pa.int64(), mask=miss))
        if isinstance(src, (BehaviorsSource, ImpressionsSource)):
            log.query.append(texts_of(b, "query_text") if "query_text" in b.cols
                             else _same("", n))

    def _known(self, b: Batch, ids: np.ndarray, known: np.ndarray | None, theirs: str,
               what: str) -> None:
        if known is None:
            return
        if known.size == 0:
            bad = np.ones(ids.size, bool)
        else:
            at = np.minimum(np.searchsorted(known, ids), known.size - 1)
            bad = known[at] != ids
        if bad.any():
            i = int(np.argmax(bad))
            raw = b.cols["item_id" if what == "item" else "user_id"][i].as_py()
            raise b.error(theirs, i, f"{what} {_show(raw)} not in the {what}s")

    def _batches(self, name: str, src: Source, needed: dict[str, str]) -> Iterator[Batch]:
        hook = self.hooks.get(name)
        for b in read_batches(src, needed):
            yield hook(b) if hook is not None else b

    # image queries ---------------------------------------------------------------------

    def image_queries(self) -> pa.Table:
        src = self.m.image_queries
        if src is None:
            return TABLES["image_queries"].schema.empty_table()
        needed = {o: t for o in src.OURS if (t := src.their(o)) is not None}
        parts = []
        seen: dict[int, int] = {}
        for b in self._batches("image_queries", src, needed):
            qid = ids_of(b, "query_id", src.their("query_id") or "", self.m.policy("query"),
                         self.maps["query"])
            for i, v in enumerate(qid.tolist()):
                if v in seen:
                    raise b.error(src.their("query_id") or "", i,
                                  f"duplicate id (first at row {seen[v]})")
                seen[v] = b.row(i)
            item = ids_of(b, "item_id", src.their("item_id") or "", self.m.policy("item"),
                          self.maps["item"])
            self._known(b, item, self.sorted_items, src.their("item_id") or "", "item")
            parts.append(pa.table({
                "query_id": qid, "item_id": item,
                "ts": pa.array(times_of(b, "ts", src.their("ts") or "", src.time or self.m.time), pa.int64())
                .cast(TIMESTAMP),
                "image": self._images(b, src),
            }))
        if not parts:
            return TABLES["image_queries"].schema.empty_table()
        return pa.concat_tables(parts)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The arrays end to end (the one array itself, not a copy, when there is one)."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _first(keys: np.ndarray, by: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """[K] the earliest ``ts`` where ``by`` == each key, -1 where none."""
    out = np.full(keys.size, -1, np.int64)
    if by.size == 0:
        return out
    order = np.lexsort((ts, by))
    b, t = by[order], ts[order]
    first = np.ones(b.size, bool)
    first[1:] = b[1:] != b[:-1]
    ub, ut = b[first], t[first]
    at = np.minimum(np.searchsorted(ub, keys), ub.size - 1)
    hit = ub[at] == keys
    out[hit] = ut[at[hit]]
    return out


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat()


def _split_end(ts: np.ndarray, split: Split) -> int:
    if split.train_end is not None:
        end = split.train_end
        if end.tzinfo is None:
            raise DataError("split.train_end without a time zone", column="split.train_end")
        return int(end.timestamp() * 1_000_000)
    return split_end_us(ts, split.quantile)


def split_end_us(ts_us: np.ndarray, quantile: float) -> int:
    """``train_end_ts`` in us: half a second before the first rating of the test period
    (the last ``1 - quantile`` of the ratings in time order; ties at the boundary go to
    the test period).

    Raises:
        DataError: a quantile outside (0, 1) or a split with an empty side.
    """
    if not 0.0 < quantile < 1.0:
        raise DataError(f"split quantile {quantile} outside (0, 1)", column="split_quantile")
    ts = np.sort(ts_us)
    k = min(max(int(quantile * ts.size), 1), ts.size - 1) if ts.size > 1 else 0
    if ts.size < 2 or ts[k] == ts[0]:
        raise DataError(f"the split at quantile {quantile} leaves no training ratings "
                        f"({ts.size} ratings)", column="split_quantile")
    return int(ts[k]) - 500_000



def import_logs(mapping: LogsMapping, out: str | Path, *, overwrite: bool = False,
                hooks: dict[str, Hook] | None = None,
                meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Import the logs of ``mapping`` into world ``out``; returns its world.json content.

    ``out`` may hold a catalog from ``moon data import`` (its items are used when the
    mapping has no items source); other tables there are replaced only with
    ``overwrite``. ``hooks`` (table name -> function of a batch) let an adapter derive
    columns (H&M's photo names) before the one conversion; ``meta`` adds (or replaces)
    keys of world.json.

    Raises:
        DataError: ``FILE: column C: row R: why`` of the first bad record; nothing is
            written then.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("not a folder", file=str(out))
    existing = [n for n in ("users", "behaviors", "impressions") if has_table(out, n)]
    if existing and not overwrite:
        raise DataError(f"the world already has {', '.join(existing)}; pass --overwrite",
                        file=str(out))
    if ("item" not in mapping.ids and mapping.items is None and not mapping.items_from_logs
            and not map_path(out, "item").is_file()):
        # the items are a catalog from `moon data import`: its integer ids are the ids
        mapping = mapping.model_copy(update={"ids": {**mapping.ids, "item": "keep"}})
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    try:
        written = _run(mapping, out, stage, hooks, meta or {})
        _move_in(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return written


def _run(mapping: LogsMapping, out: Path, stage: Path, hooks: dict[str, Hook] | None,
         extra_meta: dict[str, Any]) -> dict[str, Any]:
    imp = _Import(mapping, out, stage, hooks)
    imp.items()
    imp.users()
    imp.log()
    if mapping.items is None and mapping.items_from_logs:
        _items_from_logs(imp)
    image_queries = imp.image_queries()
    world = stage / "world"
    world.mkdir()

    # the split, over the times of what will be impressions (else the behaviours)
    main_log = next(iter(imp.logs.values()))
    ts_all = main_log.cat("ts")
    train_end = _split_end(ts_all, mapping.split)
    all_ts = _joined([lg.cat("ts") for lg in imp.logs.values()])
    start, end = int(all_ts.min()), int(all_ts.max())

    # items: live from their launch or their first interaction, whichever is earlier (a
    # catalog's launch defaults to its import time); never seen: the launch, else the start
    every_item = _joined([lg.cat("item") for lg in imp.logs.values()])
    first_seen = _first(imp.item_ids, every_item, all_ts)
    catalog_launch = imp.item_launch
    launch = np.where(catalog_launch >= 0, catalog_launch, np.where(first_seen >= 0, first_seen,
                                                                    start))
    launch = np.where(first_seen >= 0, np.minimum(launch, first_seen), launch)
    imp.item_launch = launch

    meta: dict[str, Any] = {"source": mapping.source, "imported_at": datetime.now(UTC).isoformat()}
    if not imp.own_items and (out / WORLD_META).is_file():
        meta["catalog"] = read_world_meta(out)
    tables: dict[str, pa.Table] = {}
    behaviors, impressions = _events(imp, mapping, train_end, meta)
    tables["behaviors"] = behaviors
    tables["impressions"] = impressions
    tables["image_queries"] = image_queries

    # users: from the users source, else everyone in the logs; sign-up at the first event
    every_user = _joined([lg.cat("user") for lg in imp.logs.values()])
    if imp.user_table is not None:
        uid = imp.user_table.column("user_id").to_numpy()
        signup = imp.user_table.column("signup_ts").to_numpy()
        first_u = _first(uid, every_user, all_ts)
        signup = np.where(signup >= 0, signup, np.where(first_u >= 0, first_u, start))
        users = imp.user_table.set_column(1, "signup_ts", pa.array(signup).cast(TIMESTAMP))
        users = users.take(pa.array(np.argsort(uid, kind="stable")))
    else:
        uid = np.unique(every_user)
        users = pa.table({"user_id": uid,
                          "signup_ts": pa.array(_first(uid, every_user, all_ts)).cast(TIMESTAMP)})
    tables["users"] = users

    if imp.own_items:
        _write_items(imp, world)
        tables["categories"] = _categories(imp, mapping)
    for name, t in tables.items():
        pq.write_table(conform(t, name), world / f"{name}.parquet", compression="zstd",
                       row_group_size=65_536)
    if not imp.own_items:  # the catalog already in --out, validated with the new tables
        if (launch != catalog_launch).any():  # items sold before their stated launch
            items = read_table(out, "items")
            items = items.set_column(items.column_names.index("launch_ts"), "launch_ts",
                                     pa.array(launch).cast(TIMESTAMP))
            pq.write_table(conform(items, "items"), world / "items.parquet",
                           compression="zstd", row_group_size=16_384)
        for name in ("items", "categories"):
            src = out / f"{name}.parquet"
            if src.is_file() and not (world / f"{name}.parquet").exists():
                os.link(src, world / f"{name}.parquet")

    test = impressions.column("ts").cast(pa.int64()).to_numpy() >= train_end
    cold = launch >= train_end
    imp_items = impressions.column("item_id").to_numpy()
    clicked = impressions.column("clicked").to_numpy()
    meta.update({
        "start_ts": _iso(start), "train_end_ts": _iso(train_end), "end_ts": _iso(end),
        "split": mapping.split.model_dump(mode="json"),
        "text_only": bool(imp.own_items and pq.read_table(
            world / "items.parquet", columns=["image"]).column("image").null_count
            == imp.item_ids.size),
        "n_items": int(imp.item_ids.size), "n_users": users.num_rows,
        "n_impressions": impressions.num_rows, "n_impressions_test": int(test.sum()),
        "n_behaviors": behaviors.num_rows, "n_image_queries": image_queries.num_rows,
        "ctr": round(float(clicked.mean()), 4) if clicked.size else 0.0,
        "ctr_test": round(float(clicked[test].mean()), 4) if test.any() else None,
        "n_cold_items": int(cold.sum()),
        "n_cold_items_test": int(np.isin(imp.item_ids[cold], imp_items[test]).sum()),
        "n_impressions_test_cold": int(np.isin(imp_items[test], imp.item_ids[cold]).sum()),
        "oracle_auc_test": None,

        "image_size": mapping.image_size,
    })
    id_maps = {k: {"n_keys": len(v), "n_new": len(v) - v.n_loaded}
               for k, v in imp.maps.items() if mapping.policy(k) == "map" and len(v)}
    if id_maps:
        meta["id_maps"] = id_maps
    meta.update(extra_meta)
    write_world_meta(world, meta)
    try:
        validate_world(world)
    except DataError as exc:  # a staged table: name the table, not the staging folder
        raise DataError(exc.reason, file=f"{out}/{Path(exc.file or '').name}",
                        column=exc.column, row=exc.row) from exc
    for k, v in imp.maps.items():
        if mapping.policy(k) == "map" and len(v):
            v.save(world)
    return meta


def _events(imp: _Import, mapping: LogsMapping, train_end: int, meta: dict[str, Any]
            ) -> tuple[pa.Table, pa.Table]:
    """(behaviors, impressions) of the gathered logs."""
    empty_imp = TABLES["impressions"].schema.empty_table()
    behaviors = TABLES["behaviors"].schema.empty_table()
    impressions = empty_imp
    if "interactions" in imp.logs:
        src = mapping.interactions
        assert src is not None
        lg = imp.logs["interactions"]
        user, item, ts = lg.cat("user"), lg.cat("item"), lg.cat("ts")
        order = np.lexsort((item, user, ts))
        user, item, ts = user[order], item[order], ts[order]
        if lg.label:
            assert src.label_threshold is not None
            clicked = (lg.cat("label")[order] >= src.label_threshold).astype(np.int8)
            n = order.size
            impressions = pa.table({
                "request_id": np.arange(1, n + 1, dtype=np.int64), "user_id": user,
                "ts": pa.array(ts).cast(TIMESTAMP), "query_text": _same("", n),
                "item_id": item, "position": np.zeros(n, np.int32), "clicked": clicked,
            })
            pos = clicked == 1
            meta["labels"] = (f"impressions: every interaction, clicked = {src.their('label')} "
                              f">= {src.label_threshold:g}; behaviors: the clicked ones, 1 s "
                              "after the impression")
            behaviors = _behaviors(user[pos], item[pos], ts[pos] + BEHAVIOUR_DELAY_US, src.action)
        else:
            behaviors = _behaviors(user, item, ts + BEHAVIOUR_DELAY_US, src.action)
            meta["labels"] = "behaviors: every interaction (implicit positives)"
            if mapping.negatives is not None:
                impressions = _sampled(imp, user, item, ts, mapping.negatives)
                n_neg = impressions.num_rows - user.size
                meta["negatives"] = {**mapping.negatives.model_dump(),
                                     "construction": "each positive a request: itself clicked "
                                     "+ k live items never positive for the user",
                                     # slots left empty: fewer than k qualifying live items
                                     "n_short": int(user.size * mapping.negatives.k - n_neg)}
                meta["labels"] += (f"; impressions: each positive + {mapping.negatives.k} "
                                   f"sampled negatives ({mapping.negatives.strategy})")
        return behaviors, impressions
    if "behaviors" in imp.logs:
        lg = imp.logs["behaviors"]
        n = sum(a.size for a in lg.user)
        qi = (pa.chunked_array(lg.query_image, pa.int64()) if lg.query_image
              else pa.nulls(n, pa.int64()))
        behaviors = pa.table({
            "user_id": lg.cat("user"), "item_id": lg.cat("item"),
            "ts": pa.array(lg.cat("ts")).cast(TIMESTAMP), "action": lg.text("action"),
            "query_text": lg.text("query"), "query_image_id": qi,
        })
        order = np.lexsort((behaviors.column("item_id").to_numpy(),
                            behaviors.column("user_id").to_numpy(),
                            lg.cat("ts")))
        behaviors = behaviors.take(pa.array(order))
    if "impressions" in imp.logs:
        lg = imp.logs["impressions"]
        user, item, ts = lg.cat("user"), lg.cat("item"), lg.cat("ts")
        n = user.size
        request = lg.cat("request") if lg.request else np.arange(1, n + 1, dtype=np.int64)
        position = lg.cat("position") if lg.position else np.zeros(n, np.int64)
        impressions = pa.table({
            "request_id": request, "user_id": user, "ts": pa.array(ts).cast(TIMESTAMP),
            "query_text": lg.text("query"), "item_id": item,
            "position": position.astype(np.int32), "clicked": lg.cat("label").astype(np.int8),
        })
        order = np.lexsort((position, request, ts))
        impressions = impressions.take(pa.array(order))
    return behaviors, impressions


def _same(text: str, n: int) -> pa.Array:
    """A string column of ``n`` times ``text`` (without a Python list of n strings)."""
    return pa.repeat(pa.scalar(text, pa.string()), n)


def _behaviors(user: np.ndarray, item: np.ndarray, ts: np.ndarray, action: str) -> pa.Table:
    n = user.size
    return pa.table({
        "user_id": user, "item_id": item, "ts": pa.array(ts).cast(TIMESTAMP),
        "action": _same(action, n),
        "query_text": _same("", n), "query_image_id": pa.nulls(n, pa.int64()),
    })


def _sampled(imp: _Import, user: np.ndarray, item: np.ndarray, ts: np.ndarray,
             spec: NegativeSampling) -> pa.Table:
    """Each positive one request: itself (clicked) and k negatives, positions shuffled."""
    neg = sample_negatives(user, item, ts, item_ids=imp.item_ids, item_launch=imp.item_launch,
                           item_category=imp.item_cat, spec=spec)
    n, k = neg.shape
    shown = np.concatenate([item[:, None], neg], axis=1)  # [N, k + 1]
    clicked = np.zeros((n, k + 1), np.int8)
    clicked[:, 0] = 1
    rng = np.random.default_rng([spec.seed, 1])
    keep = shown >= 0
    # positions: a seeded shuffle of the request's items (0 .. shown - 1)
    slot = np.argsort(np.where(keep, rng.random((n, k + 1)), np.inf), axis=1)
    pos = np.empty((n, k + 1), np.int32)
    np.put_along_axis(pos, slot, np.arange(k + 1, dtype=np.int32)[None, :].repeat(n, 0), axis=1)
    req = np.repeat(np.arange(1, n + 1, dtype=np.int64)[:, None], k + 1, axis=1)
    # ordered by request, then position
    order = np.argsort(req[keep] * (k + 2) + pos[keep], kind="stable")
    m = int(keep.sum())
    return pa.table({
        "request_id": req[keep][order],
        "user_id": np.repeat(user[:, None], k + 1, axis=1)[keep][order],
        "ts": pa.array(np.repeat(ts[:, None], k + 1, axis=1)[keep][order]).cast(TIMESTAMP),
        "query_text": _same("", m),
        "item_id": shown[keep][order], "position": pos[keep][order],
        "clicked": clicked[keep][order],
    })


def _items_from_logs(imp: _Import) -> None:
    """Items of a log without a catalog: every item id, titled by its key, text-only."""
    ids = np.unique(np.concatenate([lg.cat("item") for lg in imp.logs.values()]))
    keys = (imp.maps["item"].keys_of(ids) if imp.m.policy("item") == "map"
            else [str(i) for i in ids.tolist()])
    n = ids.size
    t = pa.table({
        "item_id": ids, "category_id": np.zeros(n, np.int64), "brand_id": np.zeros(n, np.int64),
        "title": pa.array([f"item {k}" for k in keys], pa.string()),
        "attributes": _same("", n), "price": np.zeros(n),
        "launch_ts": np.full(n, -1, np.int64), "image": pa.nulls(n, pa.binary()), "spu_id": ids,
    })
    path = imp.stage / "_items" / "part-00000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path)
    imp.item_parts = [path]
    imp.item_ids, imp.item_cat = ids, np.zeros(n, np.int64)
    imp.item_launch = np.full(n, -1, np.int64)


def _write_items(imp: _Import, world: Path) -> None:
    """The staged item parts, launch times filled, into ``items.parquet`` part by part
    (in the source's order: the photos of the whole catalog are never in memory at once)."""
    writer: pq.ParquetWriter | None = None
    offset = 0
    try:
        for path in imp.item_parts:
            t = pq.read_table(path)
            n = t.num_rows
            t = t.set_column(t.column_names.index("launch_ts"), "launch_ts",
                             pa.array(imp.item_launch[offset: offset + n]).cast(TIMESTAMP))
            t = conform(t, "items")
            if writer is None:
                writer = pq.ParquetWriter(world / "items.parquet", t.schema, compression="zstd")
            writer.write_table(t, row_group_size=16_384)
            offset += n
            path.unlink()
    finally:
        if writer is not None:
            writer.close()


def _categories(imp: _Import, mapping: LogsMapping) -> pa.Table:
    given = mapping.items.category_names if mapping.items is not None else {}
    cats = sorted(set(imp.item_cat.tolist()) | set(given))
    t = imp.maps["category"].table()
    names = {**dict(zip(t.column("id").to_pylist(), t.column("key").to_pylist(), strict=True)),
             **given}
    look = set(mapping.look_driven)
    unknown = look - set(names.values())
    if unknown:
        raise DataError(f"look_driven names unknown categories {sorted(unknown)}",
                        column="look_driven")
    return pa.table({
        "category_id": pa.array(cats, pa.int64()),
        "parent_id": pa.nulls(len(cats), pa.int64()),
        "name": pa.array([names.get(c, "none" if c == 0 else str(c)) for c in cats], pa.string()),
        "look_driven": pa.array([names.get(c) in look for c in cats], pa.bool_()),
    })


def _move_in(stage: Path, out: Path) -> None:
    """Move the staged world's files into ``out``, world.json last (a linked catalog
    stays where it is)."""
    world = stage / "world"
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(world.iterdir()):
        dst = out / path.name
        if path.name == WORLD_META or (dst.is_file() and dst.samefile(path)):
            continue
        if path.is_dir():
            if dst.exists():
                os.replace(dst, stage / f"old-{path.name}")
            os.replace(path, dst)
        else:
            os.replace(path, dst)
    os.replace(world / WORLD_META, out / WORLD_META)


def run_cli(args: Any) -> int:
    """``moon data import logs --mapping M --out W``: prints world.json."""
    meta = import_logs(load_mapping(args.mapping), args.out, overwrite=args.overwrite)
    print(json.dumps(meta, indent=2))
    return 0
