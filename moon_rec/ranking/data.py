"""Loading the ranker's inputs: the training-set parquet and the MOON embedding parquet.

Training set (issue 4 -> 5, one row per impression): request_id, user_id, item_id, ts,
query_text, position, clicked, split ("train"/"test"), is_cold, look_driven, and the
feature spec's columns (categoricals and numerics [N], id_sequences list<int64>, most
recent first). A file or a directory of parquet parts.

Embeddings: item rows (item_id, emb_32 ... emb_256, model_version, event_timestamp) and
query rows (query_text, emb_*, model_version), in one directory or separate files; a file
is recognised by its key column.

Bad input is handled, never passed on to the kernels:
- unknown ids (beyond the tables, negative) go to each table's OOV row (see
  :func:`moon_rec.ranking.sparse.remap_ids`); items without a MOON vector get zeros and
  are left out of the content similarities;
- empty behaviour sequences pool to zeros; sequences longer than ``max_seq_len`` keep the
  most recent ``max_seq_len``;
- NaN / inf embedding rows are zeroed (counted in ``MoonEmbeddings.n_bad_rows``, warned);
- missing columns, null impression ids, labels outside {0, 1}, sequences of different
  lengths in one row, mixed ``model_version`` values raise DataError naming file, column
  and row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from moon_rec.data.embeddings import (
    MoonEmbeddings,
)
from moon_rec.data.errors import DataError
from moon_rec.data.feature_spec import (
    DEFAULT_SPEC,
    FeatureSpec,
    FittedFeatures,
    fit_features,
    load_feature_spec,
)
from moon_rec.data.training_set import read_training_set
from moon_rec.ranking.features import RankerBatch, RankerLayout, make_batch, query_tokens

log = logging.getLogger(__name__)

MAX_QUERY_TOKENS = 8


def _padded_lists(col: pa.ChunkedArray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A list<int64> column as ([N, width] int64 padded with -1, full lengths [N])."""
    arr = col.combine_chunks()
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(arr).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    n = len(lengths)
    out = np.full((n, width), -1, dtype=np.int64)
    keep = np.minimum(lengths, width)
    total = int(keep.sum())
    if total:
        # O(values kept): row and column of every kept value, and where it sits in ``flat``.
        rows = np.repeat(np.arange(n), keep)
        cols = np.arange(total) - np.repeat(np.cumsum(keep) - keep, keep)
        out[rows, cols] = flat[np.repeat(starts, keep) + cols]
    return out, lengths


@dataclass
class TrainingSet:
    """A ranker training set in memory, as padded numpy arrays (N rows).

    Args:
        path: where it was read from.
        spec: the feature spec it was read for; ``layout`` where its features go.
        request_id, user_id, item_id, position: [N] int64.
        clicked: [N] float32.
        query_vocab: the distinct query texts ("" for none); query_code: [N] index into it.
        query_tokens: [N, 8] hashed tokens padded with -1; query_token_lengths [N].
        raw: the spec's categoricals and numerics as stored, [N] each (int64 ids, -1 for
            null; float64, NaN for null; object strings, None for null).
        sequences: the spec's id_sequences, [N, L] each, padded with -1; hist_lengths [N]
            (<= L, the same for every sequence of a row).
        is_test, is_cold, look_driven: [N] bool.
        features: the spec's fitted features (:meth:`encode_features`), which turn ``raw``
            into sparse_ids ([N] table rows per pooled feature) and dense ([N, F]).
        ts_us: [N] the rows' times in microseconds (when the training set has them).
    """

    path: str
    spec: FeatureSpec
    request_id: np.ndarray
    user_id: np.ndarray
    item_id: np.ndarray
    position: np.ndarray
    clicked: np.ndarray
    query_vocab: list[str]
    query_code: np.ndarray
    query_tokens: np.ndarray
    query_token_lengths: np.ndarray
    raw: dict[str, np.ndarray]
    sequences: dict[str, np.ndarray]
    hist_lengths: np.ndarray
    is_test: np.ndarray
    is_cold: np.ndarray
    look_driven: np.ndarray
    query_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    has_query: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    features: FittedFeatures | None = None
    sparse_ids: dict[str, np.ndarray] = field(default_factory=dict)
    dense: np.ndarray | None = None
    ts_us: np.ndarray | None = None

    @property
    def layout(self) -> RankerLayout:
        return RankerLayout.of(self.spec)

    @property
    def item_sequence(self) -> np.ndarray:
        """[N, L] the behaviours' item ids (the primary pair's sequence)."""
        return self.sequences[self.layout.primary]

    def targets(self, rows: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
        """The sequence targets' raw ids of ``rows`` (e.g. the candidates' categories)."""
        return {k: self.raw[k][rows] for k in self.layout.targets}

    def fit_features(self, spec: FeatureSpec | None = None, default_rows: int = 0
                     ) -> FittedFeatures:
        """Fit ``spec``'s (default: this set's) encoded features on the train split
        (DataError naming the feature: nulls without a fill rule, a vocabulary overflow)."""
        try:
            return fit_features(spec or self.spec, self.raw, ~self.is_test, self.ts_us,
                                default_rows)
        except ValueError as exc:
            raise DataError(str(exc), file=self.path) from None

    def encode_features(self, fitted: FittedFeatures) -> None:
        """Set ``features``, ``sparse_ids`` and ``dense`` from ``raw`` through ``fitted``."""
        try:
            self.sparse_ids, self.dense = fitted.encode(self.raw, self.ts_us)
        except ValueError as exc:
            raise DataError(str(exc), file=self.path) from None
        if not fitted.spec.encoded():
            self.dense = np.zeros((len(self), 0), np.float32)
        self.features = fitted

    def __len__(self) -> int:
        return int(self.item_id.shape[0])

    def attach_queries(self, embeddings: MoonEmbeddings | None) -> None:
        """Resolve each row's query text to a row of ``embeddings.query_vectors``."""
        if embeddings is None or not embeddings.query_index:
            self.query_rows = np.zeros(len(self), np.int64)
            self.has_query = np.zeros(len(self), bool)
        else:
            rows, has = embeddings.query_rows(self.query_vocab)
            self.query_rows, self.has_query = rows[self.query_code], has[self.query_code]

    def batch(self, rows: np.ndarray, query_vectors: np.ndarray | None) -> RankerBatch:
        """The RankerBatch of ``rows`` (indices into this set)."""
        if self.features is None:
            raise ValueError("encode the training set's features first (encode_features)")
        if query_vectors is None or query_vectors.shape[0] == 0 or len(self.has_query) == 0:
            dim = 0 if query_vectors is None else query_vectors.shape[1]
            q = np.zeros((len(rows), dim), np.float32)
            has = np.zeros(len(rows), bool)
        else:
            q = query_vectors[self.query_rows[rows]]
            has = self.has_query[rows]
            q = q * has[:, None]
        return make_batch(
            RankerLayout.of(self.features.spec),
            user_id=self.user_id[rows],
            item_id=self.item_id[rows],
            targets=self.targets(rows),
            position=self.position[rows],
            query_tokens_padded=self.query_tokens[rows],
            query_token_lengths=self.query_token_lengths[rows],
            sequences={k: v[rows] for k, v in self.sequences.items()},
            hist_lengths=self.hist_lengths[rows],
            query_embedding=q,
            has_query=has,
            labels=self.clicked[rows],
            sparse_ids={k: v[rows] for k, v in self.sparse_ids.items()},
            dense=None if self.dense is None else self.dense[rows],
        )


def _ids(table: pa.Table, name: str, file: str) -> np.ndarray:
    col = table.column(name)
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError("null value", file=file, column=name, row=row)
    try:
        return col.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"expected integers ({exc})", file=file, column=name) from exc


def load_training_set(
    path: str | Path, max_seq_len: int, query_token_buckets: int,
    spec: FeatureSpec | None = None, features: FittedFeatures | None = None,
    default_rows: int = 0,
) -> TrainingSet:
    """Read a training-set parquet (file or directory) into padded arrays, its features
    encoded.

    Args:
        path: the training set.
        max_seq_len: L, behaviours kept per row (most recent first).
        query_token_buckets: hash buckets of query tokens.
        spec: the feature spec whose columns to read (default: ``features``' spec, else
            the default spec, ``ids``).
        features: encode with these fitted features (a trained ranker's); default: fit
            them on the train split (``default_rows``: see ``fit_features``).

    Raises:
        DataError: missing column, null impression id, label outside {0, 1}, split
            outside {train, test}, sequences of different lengths in a row, a feature that
            does not fit (nulls without a fill rule, a vocabulary overflow).
    """
    where = str(path)
    if spec is None:
        spec = features.spec if features is not None else load_feature_spec(DEFAULT_SPEC)
    table = read_training_set(path, spec)
    n = table.num_rows
    clicked = _ids(table, "clicked", where)
    bad = np.flatnonzero((clicked != 0) & (clicked != 1))
    if bad.size:
        raise DataError(
            f"label {int(clicked[bad[0]])} not in {{0, 1}}",
            file=where,
            column="clicked",
            row=int(bad[0]),
        )
    split = table.column("split")
    ok = pc.is_in(split, value_set=pa.array(["train", "test"])).to_numpy(zero_copy_only=False)
    bad_split = np.flatnonzero(~ok)
    if bad_split.size:
        row = int(bad_split[0])
        raise DataError(
            f"split {split[row].as_py()!r} not in ('train', 'test')",
            file=where,
            column="split",
            row=row,
        )
    sequences: dict[str, np.ndarray] = {}
    hist_len = np.zeros(n, np.int64)
    for i, e in enumerate(spec.sequences()):
        sequences[e.column], lengths = _padded_lists(table.column(e.column), max_seq_len)
        if i == 0:
            hist_len, first = lengths, e.column
            continue
        mismatch = np.flatnonzero(lengths != hist_len)
        if mismatch.size:
            raise DataError(f"{first} and {e.column} differ in length", file=where,
                            column=e.column, row=int(mismatch[0]))
    # Tokenise each distinct query once, then expand by the per-row dictionary codes.
    encoded = pc.dictionary_encode(table.column("query_text").fill_null("")).combine_chunks()
    vocab = [str(t) for t in encoded.dictionary.to_pylist()]
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    vocab_tok = np.full((len(vocab), MAX_QUERY_TOKENS), -1, np.int64)
    vocab_len = np.zeros(len(vocab), np.int64)
    for i, t in enumerate(vocab):
        toks = query_tokens(t, query_token_buckets, MAX_QUERY_TOKENS)
        vocab_tok[i, : len(toks)] = toks
        vocab_len[i] = len(toks)
    q_tok, q_len = vocab_tok[codes], vocab_len[codes]

    def flag(name: str) -> np.ndarray:
        if name not in table.column_names:
            return np.zeros(n, bool)
        return table.column(name).fill_null(False).to_numpy(zero_copy_only=False).astype(bool)

    raw: dict[str, np.ndarray] = {}
    for e in spec.features:
        if e.kind not in ("categorical", "numeric"):
            continue
        col = table.column(e.column)
        try:
            if e.kind == "categorical" and e.dtype == "string":
                raw[e.column] = np.asarray(col.cast(pa.string()).to_pylist(), object)
            elif e.kind == "categorical":
                raw[e.column] = (col.cast(pa.int64()).fill_null(-1)
                                 .to_numpy(zero_copy_only=False).astype(np.int64))
            else:
                raw[e.column] = (col.cast(pa.float64()).fill_null(np.nan)
                                 .to_numpy(zero_copy_only=False).astype(np.float64))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"feature {e.column}: not a {e.kind} column ({exc})", file=where,
                            column=e.column) from exc
    ts_us = None
    if "ts" in table.column_names:
        ts_us = (pc.cast(table.column("ts"), pa.timestamp("us", tz="UTC")).cast(pa.int64())
                 .to_numpy(zero_copy_only=False).astype(np.float64))
    data = TrainingSet(
        path=where,
        spec=spec,
        ts_us=ts_us,
        raw=raw,
        request_id=_ids(table, "request_id", where),
        user_id=_ids(table, "user_id", where),
        item_id=_ids(table, "item_id", where),
        position=_ids(table, "position", where),
        clicked=clicked.astype(np.float32),
        query_vocab=vocab,
        query_code=codes,
        query_tokens=q_tok,
        query_token_lengths=q_len,
        sequences=sequences,
        hist_lengths=np.minimum(hist_len, max_seq_len),
        is_test=pc.equal(split, "test").to_numpy(zero_copy_only=False).astype(bool),
        is_cold=flag("is_cold"),
        look_driven=flag("look_driven"),
    )
    data.encode_features(features if features is not None else data.fit_features(
        default_rows=default_rows))
    return data
