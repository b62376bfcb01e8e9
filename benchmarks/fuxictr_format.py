"""Our point-in-time training set in FuxiCTR's format, for the peer benchmark.

FuxiCTR 2.3.10 ships one DIN in its package: ``model_zoo.LongCTR.DIN`` with its
``LongCTRDataLoader`` (the classic ``model_zoo/DIN`` is only in its repository). That
loader reads data already encoded to integer ids, with ``rebuild_dataset: false`` in the
dataset config (as in reczoo's LongCTR benchmark configs):

- ``{train,valid,test}.parquet``, one row per impression, every column int64:
  ``user_index``, ``item_index``, ``seq_len`` (FuxiCTR ``meta`` columns: keys, not
  features), ``user_id``, ``brand_id``, ``position`` (categorical), ``query_tokens``
  (a sequence feature: our hashed query tokens, padded with 0 to 8) and the label
  ``clicked``.
- ``user_info.parquet``: ``full_item_seq`` per distinct behaviour sequence, oldest first,
  as ``item_index`` values; a row's ``user_index`` points at its own point-in-time history
  (our ``hist_item_ids`` reversed, the newest ``max_len`` kept), and FuxiCTR's collator
  takes its first ``seq_len`` entries. An empty history is stored as ``[0]`` with
  ``seq_len`` 1: index 0 is FuxiCTR's padding item, masked out of the attention (its
  collator cannot form a batch whose histories are all empty).
- ``item_info.parquet`` (and ``item_info_moon.parquet``): row ``i`` is item_index ``i``
  (row 0 the padding item) with the item-side features DIN attends with, ``item_id`` and
  ``category_id`` (FuxiCTR ``source: item``): the target's and every behaviour's.
- ``moon_item_id.npz`` (``key``: encoded item_id, ``value``: [n, C] float32): our MOON
  vectors (column ``emb_{C}`` of the embedding table) for FuxiCTR's ``pretrained_emb``.

With a feature spec (``spec``), every extra feature of it (``FeatureSpec.extras``: the
stored categorical and numeric features beyond the base ranker's) is one more column of
``{train,valid,test}.parquet``, after ``query_tokens``, named as in the spec, and in
``FuxiExport.extras`` (what the dataset config lists). The values are our ranker's own
model inputs: the spec's transforms fitted on the fit rows and applied by the one path
from stored values to model inputs (``moon_rec.data.feature_spec.fit_features`` /
``FittedFeatures.encode``, over the raw columns ``moon_rec.ranking.data.load_training_set``
reads), so both libraries see the same numbers:

- a categorical extra (int ids or string tokens, e.g. gender, occupation, a zip prefix) and
  a bucketised numeric one: FuxiCTR ``categorical``, int64, our table row + 1 (0 stays
  FuxiCTR's padding; our out-of-vocabulary row is its own index), ``vocab_size`` our rows
  + 1; extras sharing a table in the spec share FuxiCTR's (``share_embedding``);
- a numeric extra: FuxiCTR ``numeric``, float32, already transformed (since / log1p /
  standardise, nulls filled), so FuxiCTR's own normalizer is not used (no
  ``normalizer`` key).

Ids are encoded FuxiCTR's way (its ``Tokenizer``): a vocabulary from the fit rows (train
minus the validation slice; an item or category counts when a fit row shows it as target
or behaviour), 0 = padding, 1..V the vocabulary, V + 1 = OOV. In the MOON dataset the
items outside the vocabulary that have a MOON vector (cold items) get their own indices
V + 1 .. V + E (OOV moves to V + E + 1), so each keeps its frozen vector; their ID rows are
never trained (no fit row holds them). FuxiCTR's own vocabulary extension from a
pretrained file cannot be used with pre-encoded integer ids: it adds numpy int64 keys that
its ``save_vocab`` cannot write as JSON.

Splits are ours exactly: test = ``split == "test"``; the validation slice (FuxiCTR's
early stopping) is the last ``valid_fraction`` of the train rows by ``ts`` (whole
timestamps, so a request is never cut); the rest is fit. Rows keep the training set's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from moon_rec.data.embeddings import MoonEmbeddings, parquet_files, read_parquet
from moon_rec.data.errors import DataError
from moon_rec.data.feature_spec import FeatureSpec, fit_features
from moon_rec.data.training_set import REQUIRED_COLUMNS, write_training_set
from moon_rec.ranking.data import MAX_QUERY_TOKENS
from moon_rec.ranking.features import query_tokens

# the training set's own required columns (its owner, moon_rec.data.training_set) plus ts
EXPORT_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, "ts")
MISSING = -1  # a null category / brand becomes this raw value (FuxiCTR's fill_na: a token)


@dataclass
class Vocab:
    """FuxiCTR-style encoding of one id column: 0 pad, 1..V the fit vocabulary, V+1 OOV.

    Args:
        values: [V] sorted raw ids of the vocabulary.
    """

    values: np.ndarray

    @property
    def oov(self) -> int:
        return int(self.values.size) + 1

    @property
    def size(self) -> int:
        """Rows of FuxiCTR's table (pad + V + OOV): the dataset config's vocab_size."""
        return int(self.values.size) + 2

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """[...] raw ids -> [...] int64 indices (OOV for ids outside the vocabulary)."""
        raw = np.asarray(raw, dtype=np.int64)
        if self.values.size == 0:
            return np.full(raw.shape, self.oov, np.int64)
        pos = np.clip(np.searchsorted(self.values, raw), 0, self.values.size - 1)
        hit = self.values[pos] == raw
        return np.where(hit, pos + 1, self.oov).astype(np.int64)


def build_vocab(*arrays: np.ndarray) -> Vocab:
    """The vocabulary of the raw ids in ``arrays`` (padding values < MISSING dropped)."""
    parts = [np.asarray(a, np.int64).ravel() for a in arrays]
    vals = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return Vocab(np.unique(vals[vals >= MISSING]))


@dataclass
class FuxiExport:
    """What :func:`export_training_set` wrote and what the benchmark needs back.

    Args:
        data_dir: the folder of the files listed in the module docstring.
        rows: {"fit", "valid", "test"}: [n] row indices into the training set, in file order.
        valid_from: the first timestamp of the validation slice (ISO, UTC).
        vocab_sizes: {feature: vocab_size} for the dataset config.
        max_len: behaviours kept per row.
        n_sequences: rows of user_info.parquet.
        moon_dim: C of moon_item_id.npz (0 without embeddings).
        moon_extra_items: E, items outside the vocabulary that got a MOON index.
        moon_vocab_size: item_id vocab_size of the MOON dataset (V + E + 2).
        hist_category_mismatches: behaviours whose category in the row differs from the
            item's category in item_info (FuxiCTR takes the latter).
        extras: the spec's extra feature columns, in spec order: {"name", "type"
            (categorical | numeric), "dtype" (int | float), and for a categorical
            "vocab_size" and, when it shares another's table, "share_embedding"}.
        feature_spec: the spec's name (None: no spec).
    """

    data_dir: Path
    rows: dict[str, np.ndarray]
    valid_from: str | None
    vocab_sizes: dict[str, int]
    max_len: int
    n_sequences: int
    moon_dim: int
    moon_extra_items: int
    moon_vocab_size: int
    hist_category_mismatches: int
    extras: list[dict[str, Any]] = field(default_factory=list)
    feature_spec: str | None = None

    def summary(self) -> dict[str, Any]:
        n_train = self.rows["fit"].size + self.rows["valid"].size
        return {
            "fit_rows": int(self.rows["fit"].size),
            "valid_rows": int(self.rows["valid"].size),
            "test_rows": int(self.rows["test"].size),
            "valid_fraction_of_train": round(self.rows["valid"].size / max(n_train, 1), 4),
            "valid_from_ts": self.valid_from,
            "vocab_sizes": self.vocab_sizes,
            "max_len": self.max_len,
            "distinct_sequences": self.n_sequences,
            "moon_dim": self.moon_dim,
            "moon_items_outside_vocab": self.moon_extra_items,
            "moon_item_vocab_size": self.moon_vocab_size,
            "hist_category_mismatches": self.hist_category_mismatches,
            "feature_spec": self.feature_spec,
            "extra_features": [e["name"] for e in self.extras],
        }


def read_for_export(path: str | Path) -> pa.Table:
    """The columns the export needs, checked for presence (DataError naming file/column)."""
    files = parquet_files(path)
    names = set(pq.read_schema(files[0]).names)
    missing = [c for c in EXPORT_COLUMNS if c not in names]
    if missing:
        raise DataError("missing column in training set", file=str(files[0]), column=missing[0])
    return read_parquet(files, list(EXPORT_COLUMNS))


def split_rows(split: np.ndarray, ts: np.ndarray, valid_fraction: float) -> dict[str, np.ndarray]:
    """{"fit", "valid", "test"} row indices (ascending) of our split plus the validation
    slice: the train rows with ts >= the ts at quantile 1 - valid_fraction of the train
    rows (so a timestamp, hence a request, is never cut).

    Args:
        split: [N] "train" / "test".
        ts: [N] int64 (any monotone time unit).
        valid_fraction: in (0, 1).
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    bad = np.flatnonzero((split != "train") & (split != "test"))
    if bad.size:
        raise DataError(
            f"split {split[bad[0]]!r} not in ('train', 'test')", column="split", row=int(bad[0])
        )
    train = np.flatnonzero(split == "train")
    test = np.flatnonzero(split == "test")
    if train.size < 2:
        raise DataError("the train split needs at least 2 rows", column="split")
    order = np.sort(ts[train])
    cut = order[min(int(np.floor((1.0 - valid_fraction) * train.size)), train.size - 1)]
    valid = train[ts[train] >= cut]
    fit = train[ts[train] < cut]
    if fit.size == 0:
        raise DataError(
            "the validation slice would take every train row (one timestamp)", column="ts"
        )
    return {"fit": fit, "valid": valid, "test": test}


def _lists(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A list<int64> column as (flat values [M] with nulls -> MISSING, offsets [N + 1])."""
    arr = col.combine_chunks()
    if isinstance(arr, pa.ChunkedArray):  # pragma: no cover - combine_chunks of a list column
        arr = arr.combine_chunks()
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(arr).fill_null(MISSING).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return flat.astype(np.int64), offsets


def _ints(table: pa.Table, name: str, fill: int | None = None) -> np.ndarray:
    col = table.column(name)
    if col.null_count and fill is None:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError("null value", column=name, row=row)
    if fill is not None:
        col = col.fill_null(fill)
    return col.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)


def sequences(
    flat: np.ndarray, offsets: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct behaviour sequences, oldest first, of rows whose histories are newest first.

    Args:
        flat, offsets: the rows' histories (newest first) as values [M] and offsets [N + 1].
        max_len: keep the newest ``max_len`` behaviours.

    Returns:
        (unique [S, max_len] int64 oldest-first sequences right-padded with -1,
        lengths [S] (0 for an empty history), inverse [N]: each row's sequence).
    """
    n = offsets.size - 1
    lengths = np.minimum(np.diff(offsets), max_len)
    padded = np.full((n, max_len), -1, np.int64)
    for k in range(max_len):  # column k of the oldest-first sequence = behaviour len-1-k
        rows = np.flatnonzero(lengths > k)
        padded[rows, k] = flat[offsets[rows] + lengths[rows] - 1 - k]
    if n == 0:
        return padded, lengths, np.zeros(0, np.int64)
    unique, inverse = np.unique(padded, axis=0, return_inverse=True)
    return unique, (unique >= 0).sum(axis=1).astype(np.int64), inverse.reshape(-1)


def export_training_set(
    training_set: str | Path,
    out: str | Path,
    *,
    max_len: int,
    query_token_buckets: int,
    valid_fraction: float = 0.1,
    embeddings: MoonEmbeddings | None = None,
    spec: FeatureSpec | None = None,
) -> FuxiExport:
    """Write our training set in FuxiCTR's LongCTR format (module docstring) into ``out``.

    Args:
        training_set: our training set (file or folder, moon_rec.data.training_set).
        out: folder (created); existing files are overwritten.
        max_len: behaviours kept per row (the newest).
        query_token_buckets: hash buckets of our query tokens (the ranker config's).
        valid_fraction: the validation slice, from the end of the train period.
        embeddings: MOON vectors; writes item_info_moon.parquet and moon_item_id.npz.
        spec: also export its extra features (module docstring); the training set must
            hold their columns.

    Raises:
        DataError: a missing column, a null id or label, a split other than train / test,
            histories of items and categories of different lengths; a spec's feature with
            no column, or a null without a fill rule (the feature named).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    where = str(training_set)
    table = read_for_export(training_set)
    try:
        extras = _extra_inputs(training_set, spec, table.column("split"), table.column("ts"),
                               max_len, query_token_buckets, valid_fraction)
        made = _export(table, out, max_len, query_token_buckets, valid_fraction, embeddings,
                       extras)
        if spec is not None:
            made.feature_spec = spec.name
        return made
    except DataError as exc:
        if exc.file is None:
            exc = DataError(exc.reason, file=where, column=exc.column, row=exc.row)
        raise exc from None


@dataclass
class _Extra:
    """One exported extra feature: its FuxiCTR column spec and values [N]."""

    spec: dict[str, Any]
    values: np.ndarray


def _extra_inputs(
    training_set: str | Path,
    spec: FeatureSpec | None,
    split_col: pa.ChunkedArray,
    ts_col: pa.ChunkedArray,
    max_len: int,
    buckets: int,
    valid_fraction: float,
) -> list[_Extra]:
    """The spec's extras as our ranker's model inputs, fitted on the fit rows."""
    if spec is None or not spec.extras():
        return []
    from moon_rec.ranking.data import load_training_set

    data = load_training_set(training_set, max_len, buckets, spec)
    split = np.asarray(split_col.fill_null("").to_pylist(), dtype=object)
    ts = ts_col.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    fit = np.zeros(split.size, bool)
    fit[split_rows(split, ts, valid_fraction)["fit"]] = True
    try:
        fitted = fit_features(spec, data.raw, fit, data.ts_us)
        ids, dense = fitted.encode(data.raw, data.ts_us)
    except ValueError as exc:  # names the feature
        raise DataError(str(exc)) from None
    out: list[_Extra] = []
    first_of_table: dict[str, str] = {}
    table_rows = {name: rows for name, _, rows, _ in fitted.tables(1)}
    dense_at = {name: j for j, name in enumerate(fitted.dense_names)}
    for e in spec.extras():
        if e.is_dense:
            out.append(_Extra({"name": e.column, "type": "numeric", "dtype": "float"},
                              dense[:, dense_at[e.column]].astype(np.float32)))
            continue
        table = e.table_name if e.kind == "categorical" else e.column
        col: dict[str, Any] = {"name": e.column, "type": "categorical", "dtype": "int",
                               "vocab_size": int(table_rows[table]) + 1}
        if table in first_of_table:
            col["share_embedding"] = first_of_table[table]
        else:
            first_of_table[table] = e.column
        out.append(_Extra(col, ids[e.column].astype(np.int64) + 1))
    return out


def _export(
    table: pa.Table,
    out: Path,
    max_len: int,
    buckets: int,
    valid_fraction: float,
    embeddings: MoonEmbeddings | None,
    extras: list[_Extra] | None = None,
) -> FuxiExport:
    split = np.asarray(table.column("split").fill_null("").to_pylist(), dtype=object)
    ts = table.column("ts").cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    parts = split_rows(split, ts, valid_fraction)
    fit = parts["fit"]

    clicked = _ints(table, "clicked")
    bad = np.flatnonzero((clicked != 0) & (clicked != 1))
    if bad.size:
        raise DataError(
            f"label {clicked[bad[0]]} not in {{0, 1}}", column="clicked", row=int(bad[0])
        )
    user = _ints(table, "user_id")
    item = _ints(table, "item_id")
    position = _ints(table, "position")
    category = _ints(table, "category_id", fill=MISSING)
    brand = _ints(table, "brand_id", fill=MISSING)
    h_item, off = _lists(table.column("hist_item_ids"))
    h_cat, off_c = _lists(table.column("hist_category_ids"))
    if not np.array_equal(off, off_c):
        row = int(np.flatnonzero(np.diff(off) != np.diff(off_c))[0])
        raise DataError(
            "hist_item_ids and hist_category_ids differ in length",
            column="hist_category_ids",
            row=row,
        )
    n = table.num_rows
    row_of_value = np.repeat(np.arange(n), np.diff(off))
    fit_mask = np.zeros(n, bool)
    fit_mask[fit] = True
    fit_hist = fit_mask[row_of_value]

    # Query tokens: our hashed tokens, encoded as a FuxiCTR sequence feature (pad 0).
    encoded = pc.dictionary_encode(table.column("query_text").fill_null("")).combine_chunks()
    texts = [str(t) for t in encoded.dictionary.to_pylist()]
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    text_tokens = np.full((len(texts), MAX_QUERY_TOKENS), -2, np.int64)
    for i, t in enumerate(texts):
        toks = query_tokens(t, buckets, MAX_QUERY_TOKENS)
        text_tokens[i, : len(toks)] = toks
    row_tokens = text_tokens[codes]  # [N, 8], -2 = none
    token_vocab = build_vocab(row_tokens[fit])
    q_enc = np.where(row_tokens >= 0, token_vocab.encode(np.maximum(row_tokens, 0)), 0)

    vocabs = {
        "user_id": build_vocab(user[fit]),
        "item_id": build_vocab(item[fit], h_item[fit_hist]),
        "category_id": build_vocab(category[fit], h_cat[fit_hist]),
        "brand_id": build_vocab(brand[fit]),
        "position": build_vocab(position[fit]),
    }

    # item_info: every item seen anywhere; its category from its latest target row, else
    # from a behaviour (FuxiCTR keeps one category per item).
    all_items = np.unique(np.concatenate([item, h_item]))
    item_cat = np.full(all_items.size, MISSING, np.int64)
    hpos = np.searchsorted(all_items, h_item)
    item_cat[hpos] = h_cat
    by_ts = np.argsort(ts, kind="stable")
    tpos = np.searchsorted(all_items, item[by_ts])
    item_cat[tpos] = category[by_ts]  # later rows overwrite earlier ones
    mismatches = int((item_cat[hpos] != h_cat).sum()) if h_item.size else 0
    ids_item = vocabs["item_id"].encode(all_items)
    cat_enc = vocabs["category_id"].encode(item_cat)
    _write(
        out / "item_info.parquet",
        {
            "item_index": np.arange(all_items.size + 1, dtype=np.int64),
            "item_id": np.concatenate([[0], ids_item]),
            "category_id": np.concatenate([[0], cat_enc]),
        },
    )
    moon_dim, extra = 0, 0
    if embeddings is not None:
        moon_dim, extra = _write_moon(
            out, all_items, ids_item, cat_enc, vocabs["item_id"], embeddings
        )

    # user_info: the distinct point-in-time histories, as item_index sequences.
    h_index = np.searchsorted(all_items, h_item) + 1 if h_item.size else h_item
    uniq, lengths, inverse = sequences(h_index.astype(np.int64), off, max_len)
    seqs = [row[:k].tolist() if k else [0] for row, k in zip(uniq, lengths, strict=True)]
    _write(
        out / "user_info.parquet",
        {"user_index": np.arange(len(seqs), dtype=np.int64)},
        lists={"full_item_seq": seqs},
    )
    seq_len = np.maximum(lengths, 1)[inverse] if n else np.zeros(0, np.int64)

    rows_cols = {
        "user_index": inverse.astype(np.int64),
        "item_index": np.searchsorted(all_items, item).astype(np.int64) + 1,
        "seq_len": seq_len.astype(np.int64),
        "user_id": vocabs["user_id"].encode(user),
        "brand_id": vocabs["brand_id"].encode(brand),
        "position": vocabs["position"].encode(position),
        "clicked": clicked.astype(np.int64),
    }
    extras = extras or []
    for name, idx in parts.items():
        fname = "train" if name == "fit" else name
        _write(
            out / f"{fname}.parquet",
            {k: v[idx] for k, v in rows_cols.items()},
            lists={"query_tokens": q_enc[idx].tolist()},
            order=[
                "user_index",
                "item_index",
                "seq_len",
                "user_id",
                "brand_id",
                "position",
                "query_tokens",
                *(x.spec["name"] for x in extras),
                "clicked",
            ],
            floats={x.spec["name"]: x.values[idx] for x in extras
                    if x.spec["type"] == "numeric"},
            more_ints={x.spec["name"]: x.values[idx] for x in extras
                       if x.spec["type"] == "categorical"},
        )
    sizes = {k: v.size for k, v in vocabs.items()}
    sizes["query_tokens"] = token_vocab.size
    valid_from = None
    if parts["valid"].size:
        valid_from = pa.scalar(int(ts[parts["valid"]].min()), pa.timestamp("us", "UTC")).as_py()
        valid_from = valid_from.isoformat() if valid_from is not None else None
    return FuxiExport(
        data_dir=out,
        rows=parts,
        valid_from=valid_from,
        vocab_sizes=sizes,
        max_len=max_len,
        n_sequences=len(seqs),
        moon_dim=moon_dim,
        moon_extra_items=extra,
        moon_vocab_size=vocabs["item_id"].size + extra,
        hist_category_mismatches=mismatches,
        extras=[x.spec for x in extras],
    )


def _write_moon(
    out: Path,
    all_items: np.ndarray,
    ids_item: np.ndarray,
    cat_enc: np.ndarray,
    vocab: Vocab,
    embeddings: MoonEmbeddings,
) -> tuple[int, int]:
    """item_info_moon.parquet and moon_item_id.npz; returns (C, E extra items)."""
    n_emb = embeddings.item_ids.size
    pos = np.clip(np.searchsorted(embeddings.item_ids, all_items), 0, max(n_emb - 1, 0))
    has = (embeddings.item_ids[pos] == all_items) if n_emb else np.zeros(all_items.size, bool)
    in_vocab = ids_item != vocab.oov
    extra = has & ~in_vocab
    n_extra = int(extra.sum())
    moon_item = np.where(in_vocab, ids_item, vocab.oov + n_extra)  # the moved OOV
    moon_item[extra] = vocab.oov + np.arange(n_extra)  # V + 1 .. V + E, in item_id order
    _write(
        out / "item_info_moon.parquet",
        {
            "item_index": np.arange(all_items.size + 1, dtype=np.int64),
            "item_id": np.concatenate([[0], moon_item]),
            "category_id": np.concatenate([[0], cat_enc]),
        },
    )
    order = np.argsort(moon_item[has], kind="stable")
    np.savez(
        out / "moon_item_id.npz",
        key=moon_item[has][order].astype(np.int64),
        value=embeddings.item_vectors[pos[has]][order].astype(np.float32),
    )
    return int(embeddings.dim), n_extra


def _write(
    path: Path,
    cols: dict[str, np.ndarray],
    lists: dict[str, list[list[int]]] | None = None,
    order: list[str] | None = None,
    floats: dict[str, np.ndarray] | None = None,
    more_ints: dict[str, np.ndarray] | None = None,
) -> None:
    arrays: dict[str, pa.Array] = {k: pa.array(v, pa.int64())
                                   for k, v in {**cols, **(more_ints or {})}.items()}
    for k, f in (floats or {}).items():
        arrays[k] = pa.array(np.asarray(f, np.float32), pa.float32())
    for k, v in (lists or {}).items():
        arrays[k] = pa.array(v, pa.list_(pa.int64()))
    names = order or list(arrays)
    pq.write_table(pa.table({k: arrays[k] for k in names}), path)


def write_without_valid(training_set: str | Path, valid_rows: np.ndarray, out: str | Path,
                        spec: FeatureSpec | None = None) -> Path:
    """Our training set less the validation slice (through its owner's writer, with
    ``spec``'s extra columns), so our ranker trains on exactly FuxiCTR's fit rows."""
    files = parquet_files(training_set)
    table = read_parquet(files)
    keep = np.ones(table.num_rows, bool)
    keep[valid_rows] = False
    return write_training_set(table.filter(pa.array(keep)), out, spec)
