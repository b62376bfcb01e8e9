"""The embedding table: the one owner of its format (DESIGN §3). Every writer and reader of
item or query embeddings goes through this module.

Item embedding table (a parquet file, or a folder of parts such as ``moon embed``'s)::

    item_id          int64, not null
    emb_{d}          list<float32> [d] per Matryoshka size d, each an L2-normalised prefix
    semantic_ids     list<int32> [L], optional: the item's semantic-ID code, one codeword
                     per level, from the quantiser saved next to the snapshot
                     (``moon_rec.retrieval.semantic_ids``); readers accept files without it
    model_version    string: the encoder version the vectors came from
    event_timestamp  timestamp[us, UTC]

Query embedding table: the same with ``query_text`` (string) in place of ``item_id``. A file
is told apart by its key column; files with no ``emb_`` column (the embed job's rejects and
index) are not embedding files.

Embedding snapshot (``EmbeddingSnapshot``): a folder of item parts (``part-*.parquet``)
with a ``manifest.json`` (``SnapshotManifest``: model_version, Matryoshka sizes, parts,
counts, the semantic-ID quantiser). The embed job writes it; every consumer (Feast views,
materialization, pushes, rankers, compare, serving's center and its refresh) reads sizes,
version and quantiser from it, never from a constant. A folder or file of embedding rows
without a manifest (hand-made, synthetic) is a snapshot too: its sizes come from its
columns and its version from its rows.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, ValidationError

from moon_rec import runtime
from moon_rec.data.errors import DataError
from moon_rec.data.rows import sorted_rows
from moon_rec.data.schemas import TIMESTAMP

log = logging.getLogger(__name__)

EMBEDDING_PREFIX = "emb_"
ITEM_KEY = "item_id"
QUERY_KEY = "query_text"
SEMANTIC_IDS = "semantic_ids"


def emb_column(dim: int) -> str:
    """The column of Matryoshka size ``dim``: ``emb_{dim}``."""
    return f"{EMBEDDING_PREFIX}{int(dim)}"


def embedding_dims(names: Sequence[str]) -> tuple[int, ...]:
    """The Matryoshka sizes of the ``emb_{d}`` columns among ``names``, ascending."""
    dims = []
    for n in names:
        if n.startswith(EMBEDDING_PREFIX) and n[len(EMBEDDING_PREFIX):].isdigit():
            dims.append(int(n[len(EMBEDDING_PREFIX):]))
    return tuple(sorted(dims))


def matryoshka_prefix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` coordinates of ``vectors`` [N, D], renormalised to unit length
    [N, dim] float32 (zero rows stay zero). The numpy twin of
    ``moon_rec.encoders.matryoshka`` for vectors that are not tensors."""
    v = np.asarray(vectors, np.float32)[:, :dim]
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def embedding_schema(
    dims: Sequence[int], key: str = ITEM_KEY, *, semantic_ids: bool = False
) -> pa.Schema:
    """The embedding table's schema for Matryoshka sizes ``dims`` (``key``: ``item_id``
    for items, ``query_text`` for queries; ``semantic_ids``: with the code column)."""
    key_field = (pa.field(ITEM_KEY, pa.int64(), nullable=False) if key == ITEM_KEY
                 else pa.field(QUERY_KEY, pa.string()))
    return pa.schema(
        [key_field]
        + [pa.field(emb_column(d), pa.list_(pa.float32())) for d in dims]
        + ([pa.field(SEMANTIC_IDS, pa.list_(pa.int32()))] if semantic_ids else [])
        + [pa.field("model_version", pa.string()), pa.field("event_timestamp", TIMESTAMP)]
    )


def code_column(codes: np.ndarray) -> pa.Array:
    """Semantic-ID codes [N, L] as a list<int32> column (``semantic_ids``)."""
    n, levels = codes.shape
    offsets = pa.array(np.arange(0, (n + 1) * levels, levels, dtype=np.int32))
    return pa.ListArray.from_arrays(
        offsets, pa.array(np.ascontiguousarray(codes, np.int32).reshape(-1), pa.int32())
    )


def with_semantic_ids(table: pa.Table, codes: np.ndarray) -> pa.Table:
    """``table`` (embedding rows without codes) with the ``semantic_ids`` column of codes
    [N, L] in its place in the schema."""
    if codes.shape[0] != table.num_rows:
        raise ValueError(f"{SEMANTIC_IDS}: {codes.shape[0]} codes for {table.num_rows} rows")
    base = table.drop_columns([SEMANTIC_IDS]) if SEMANTIC_IDS in table.column_names else table
    at = base.column_names.index("model_version")
    return base.add_column(at, pa.field(SEMANTIC_IDS, pa.list_(pa.int32())), code_column(codes))


def vector_column(m: np.ndarray) -> pa.Array:
    """An [N, d] float matrix as a list<float32> column (no per-row Python objects)."""
    n, d = m.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(m, np.float32)
                                                      .reshape(-1), pa.float32()))


def embedding_table(
    keys: Sequence[int] | Sequence[str] | np.ndarray,
    prefixes: dict[int, np.ndarray],
    model_version: str,
    event_ts: datetime | Sequence[datetime] | pa.Array,
    *,
    key: str = ITEM_KEY,
    semantic_ids: np.ndarray | None = None,
) -> pa.Table:
    """Rows of the embedding table.

    Args:
        keys: [N] item ids (int64) or query texts.
        prefixes: Matryoshka size d -> [N, d] float32, already L2-normalised (see
            ``matryoshka_prefix`` / ``prefixes_of``).
        model_version: one version for every row.
        event_ts: one time for every row, or [N] times.
        key: ``item_id`` or ``query_text``.
        semantic_ids: [N, L] int codes (items only), or None for no code column.
    """
    dims = tuple(sorted(prefixes))
    n = len(keys)
    for d, m in prefixes.items():
        if m.shape != (n, d):
            raise ValueError(f"{emb_column(d)}: expected shape {(n, d)}, got {m.shape}")
    if isinstance(event_ts, datetime):
        ts: pa.Array = pa.array([event_ts] * n, TIMESTAMP)
    elif isinstance(event_ts, pa.Array | pa.ChunkedArray):
        ts = event_ts.cast(TIMESTAMP)
    else:
        ts = pa.array(list(event_ts), TIMESTAMP)
    key_arr = (pa.array(np.asarray(keys, np.int64), pa.int64()) if key == ITEM_KEY
               else pa.array(list(keys), pa.string()))
    table = pa.Table.from_arrays(
        [key_arr, *(vector_column(prefixes[d]) for d in dims),
         pa.array([model_version] * n, pa.string()), ts],
        schema=embedding_schema(dims, key),
    )
    return table if semantic_ids is None else with_semantic_ids(table, semantic_ids)


def prefixes_of(vectors: np.ndarray, dims: Sequence[int]) -> dict[int, np.ndarray]:
    """Every Matryoshka prefix of full vectors [N, D]: d -> [N, d] renormalised."""
    return {int(d): matryoshka_prefix(vectors, int(d)) for d in dims}


def write_embedding_table(table: pa.Table, path: str | Path) -> Path:
    """Write an embedding table (file ``path``) atomically after checking its schema."""
    from moon_rec.data.io import atomic_write_parquet

    names = table.schema.names
    key = ITEM_KEY if ITEM_KEY in names else QUERY_KEY
    want = embedding_schema(embedding_dims(names), key, semantic_ids=SEMANTIC_IDS in names)
    if not table.schema.equals(want, check_metadata=False):
        raise DataError(f"not the embedding table's schema: {table.schema} (want {want})",
                        file=str(path))
    return atomic_write_parquet(table, Path(path))


# -- reading -------------------------------------------------------------------------------


def parquet_files(path: str | Path) -> list[Path]:
    """``path`` itself, or every ``*.parquet`` under the directory ``path`` (sorted)."""
    path = Path(path)
    if path.is_dir():
        # Hidden and underscore paths are job internals (.work/ chunks, _index.parquet).
        files = sorted(
            p
            for p in path.rglob("*.parquet")
            if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
        )
        if not files:
            raise DataError("no parquet files", file=str(path))
        return files
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    return [path]


def read_parquet(files: list[Path], columns: list[str] | None = None) -> pa.Table:
    """The parquet ``files`` as one table; an unreadable file is a DataError naming it."""
    try:
        parts = [pq.read_table(f, columns=columns) for f in files]
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise DataError(f"cannot read parquet ({exc})", file=str(files[0])) from exc
    return pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0]


def embedding_files(*paths: str | Path | None) -> tuple[list[Path], list[Path]]:
    """(item files, query files) among the parquet files of ``paths``."""
    item_files, query_files = [], []
    for p in paths:
        if p is None:
            continue
        for f in parquet_files(p):
            names = pq.read_schema(f).names
            if not embedding_dims(names):
                continue  # e.g. the embed job's rejects.parquet
            if ITEM_KEY in names:
                item_files.append(f)
            elif QUERY_KEY in names:
                query_files.append(f)
    return item_files, query_files


@dataclass
class MoonEmbeddings:
    """MOON embeddings at one Matryoshka size.

    Args:
        item_ids: [N] int64, sorted, unique.
        item_vectors: [N, C] float32 (zero rows where the input was NaN/inf).
        query_index: query_text -> row of ``query_vectors``.
        query_vectors: [Q, C] float32.
        model_version: the encoder version the vectors came from.
        dim: C.
        n_bad_rows: rows zeroed because they held NaN/inf.
        semantic_ids: [N, L] int32 codes of the items (rows of ``item_ids``), or None
            when the files have no ``semantic_ids`` column.
    """

    item_ids: np.ndarray
    item_vectors: np.ndarray
    query_index: dict[str, int]
    query_vectors: np.ndarray
    model_version: str
    dim: int
    n_bad_rows: int = 0
    semantic_ids: np.ndarray | None = None

    def item_rows(self, ids: np.ndarray) -> np.ndarray:
        """The row of ``item_ids`` holding each of ``ids`` (any shape), -1 where absent
        (``moon_rec.data.rows``)."""
        return sorted_rows(self.item_ids, np.asarray(ids, np.int64))

    def query_rows(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row index [N] (0 where absent), has_query [N] bool) of each query text."""
        idx = np.array([self.query_index.get(t, -1) for t in texts], dtype=np.int64)
        return np.maximum(idx, 0), idx >= 0


def _vectors(table: pa.Table, column: str, dim: int, file: str) -> tuple[np.ndarray, int]:
    col = table.column(column).combine_chunks()
    lengths = pc.list_value_length(col).fill_null(-1).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != dim)
    if bad.size:
        raise DataError(
            f"vector of length {int(lengths[bad[0]])}, expected {dim}",
            file=file,
            column=column,
            row=int(bad[0]),
        )
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    vecs = flat.reshape(-1, dim).copy()
    nonfinite = ~np.isfinite(vecs).all(axis=1)
    n_bad = int(nonfinite.sum())
    if n_bad:
        vecs[nonfinite] = 0.0
        msg = f"{file}: {n_bad} embedding rows with NaN/inf in {column} were zeroed"
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        log.warning(msg)
    return vecs, n_bad


def _codes(table: pa.Table, file: str) -> np.ndarray:
    """The ``semantic_ids`` column as [N, L] int32; every row must hold L codes >= 0."""
    col = table.column(SEMANTIC_IDS).combine_chunks()
    lengths = pc.list_value_length(col).fill_null(-1).to_numpy(zero_copy_only=False)
    levels = int(lengths[0]) if len(lengths) else 0
    bad = np.flatnonzero(lengths != levels)
    if bad.size or (levels <= 0 and len(lengths)):
        row = int(bad[0]) if bad.size else 0
        raise DataError(f"code of {int(lengths[row])} levels, expected {max(levels, 1)}",
                        file=file, column=SEMANTIC_IDS, row=row)
    flat = pc.list_flatten(col).fill_null(-1).to_numpy(zero_copy_only=False)
    codes = flat.astype(np.int32).reshape(-1, levels) if levels else np.zeros((0, 0), np.int32)
    neg = np.flatnonzero((codes < 0).any(axis=1))
    if neg.size:
        raise DataError("negative or null codeword", file=file, column=SEMANTIC_IDS,
                        row=int(neg[0]))
    return codes


def single_version(table: pa.Table, file: str) -> str:
    """The one ``model_version`` of ``table``; a DataError when there are several."""
    if "model_version" not in table.column_names:
        raise DataError("missing column", file=file, column="model_version")
    versions = pc.unique(table.column("model_version").drop_null()).to_pylist()
    if len(versions) != 1:
        raise DataError(
            f"expected one model_version, found {sorted(map(str, versions))[:5]}",
            file=file,
            column="model_version",
        )
    return str(versions[0])


def load_moon_embeddings(
    items: str | Path, dim: int, queries: str | Path | None = None
) -> MoonEmbeddings:
    """Load item (and query) MOON embeddings at Matryoshka size ``dim``.

    Args:
        items: an item-embedding parquet file, or a directory whose parquet files are
            item files (with ``item_id``) or query files (with ``query_text``).
        dim: Matryoshka size; reads column ``emb_{dim}``.
        queries: query-embedding parquet file or directory (optional).

    Raises:
        DataError: a missing column, a wrong vector length, mixed model versions.
    """
    item_files, query_files = embedding_files(items, queries)
    if not item_files:
        raise DataError("no item embedding file (a parquet with column item_id)", file=str(items))
    column = emb_column(dim)
    where = str(item_files[0])
    for f in item_files + query_files:
        names = pq.read_schema(f).names
        if column not in names:
            dims = [emb_column(d) for d in embedding_dims(names)]
            raise DataError(f"missing column (available: {dims})", file=str(f), column=column)
    cols = [ITEM_KEY, column, "model_version"]
    has_ts = all("event_timestamp" in pq.read_schema(f).names for f in item_files)
    # codes only when every item file has them (older snapshots have none)
    has_codes = all(SEMANTIC_IDS in pq.read_schema(f).names for f in item_files)
    if has_codes:
        cols.append(SEMANTIC_IDS)
    table = read_parquet(item_files, [*cols, "event_timestamp"] if has_ts else cols)
    version = single_version(table, where)
    ids = table.column(ITEM_KEY).to_numpy(zero_copy_only=False)
    if table.column(ITEM_KEY).null_count:
        row = int(
            np.flatnonzero(table.column(ITEM_KEY).is_null().to_numpy(zero_copy_only=False))[0]
        )
        raise DataError("null item_id", file=where, column=ITEM_KEY, row=row)
    vecs, n_bad = _vectors(table, column, dim, where)
    codes = _codes(table, where) if has_codes else None
    # Keep one row per item: the latest event_timestamp (else the last row).
    ts = (
        table.column("event_timestamp").cast(pa.int64()).to_numpy(zero_copy_only=False)
        if has_ts
        else np.arange(len(ids))
    )
    order = np.lexsort((ts, ids))
    ids_sorted = ids[order].astype(np.int64)
    last = np.ones(len(order), dtype=bool)
    last[:-1] = ids_sorted[1:] != ids_sorted[:-1]
    keep = order[last]
    q_index: dict[str, int] = {}
    q_vecs = np.zeros((0, dim), np.float32)
    if query_files:
        qt = read_parquet(query_files, [QUERY_KEY, column, "model_version"])
        q_version = single_version(qt, str(query_files[0]))
        if q_version != version:
            raise DataError(
                f"query embeddings come from model_version {q_version}, items from {version}",
                file=str(query_files[0]),
                column="model_version",
            )
        q_vecs, q_bad = _vectors(qt, column, dim, str(query_files[0]))
        n_bad += q_bad
        for i, text in enumerate(qt.column(QUERY_KEY).to_pylist()):
            if text is not None:
                q_index[str(text)] = i
    return MoonEmbeddings(
        item_ids=ids[keep].astype(np.int64),
        item_vectors=vecs[keep],
        query_index=q_index,
        query_vectors=q_vecs,
        model_version=version,
        dim=dim,
        n_bad_rows=n_bad,
        semantic_ids=codes[keep] if codes is not None else None,
    )


# -- the snapshot: manifest and owner ------------------------------------------------------

MANIFEST = "manifest.json"
PART_GLOB = "part-*.parquet"
UNKNOWN_MODEL_VERSION = "unknown"


class SnapshotManifest(BaseModel):
    """``manifest.json`` of an embedding snapshot: what the folder holds.

    Args:
        model_version: the encoder version of every vector.
        dims: the Matryoshka sizes, one ``emb_{d}`` column each (ascending); a manifest
            written without them (older or hand-made) gets them from the parts' columns.
        n_items: rows over all parts (one per item).
        n_rejects: catalog rows the embed job could not embed (its ``rejects.parquet``).
        parts: the part files, in catalog order.
        latest_event_ts: the newest row's event time (ISO-8601), None when empty.
        part_rows: rows per part.
        semantic_ids: the semantic-ID quantiser (``SemanticIdQuantiser.describe()``:
            levels, codebook, dim, file, ...), None when the rows carry no codes.
    """

    # later writers may add fields (run figures, ...): kept, not refused
    model_config = ConfigDict(extra="allow", frozen=True)

    model_version: str
    dims: tuple[int, ...] | None = None
    n_items: int | None = None
    n_rejects: int = 0
    parts: tuple[str, ...] = ()
    latest_event_ts: str | None = None
    part_rows: int | None = None
    semantic_ids: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/manifest.json`` atomically."""
        return runtime.atomic_write_json(Path(folder) / MANIFEST, self.to_json())

    @classmethod
    def read(cls, folder: str | Path) -> SnapshotManifest:
        """``folder/manifest.json``; a DataError naming the file and field when malformed,
        FileNotFoundError when absent."""
        path = Path(folder) / MANIFEST
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise DataError(f"unreadable snapshot manifest ({exc})", file=str(path)) from exc
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or None
            raise DataError(f"bad snapshot manifest: {err['msg']}", file=str(path),
                            column=field) from exc


def _item_files(path: Path) -> list[Path]:
    item_files, _ = embedding_files(path)
    if not item_files:
        raise DataError("no item embedding file (a parquet with column item_id)", file=str(path))
    return item_files


def _file_dims(path: Path) -> tuple[int, ...]:
    """The Matryoshka sizes of the item files at ``path`` (all must have the same)."""
    item_files = _item_files(path)
    dims = embedding_dims(pq.read_schema(item_files[0]).names)
    for f in item_files[1:]:
        other = embedding_dims(pq.read_schema(f).names)
        if other != dims:
            raise DataError(f"Matryoshka sizes {list(other)} differ from {list(dims)} "
                            f"of {item_files[0].name}", file=str(f))
    return dims


class EmbeddingSnapshot:
    """An embedding snapshot: the one owner of its format (see the module docstring).

    Open one with ``EmbeddingSnapshot.open(path)`` (a snapshot folder, or any embedding
    file / folder of files) or ``EmbeddingSnapshot.find(folder)`` (None when the folder
    holds nothing yet).

    Args:
        path: the folder (or file) of the item rows.
        manifest: what it holds (for a folder without ``manifest.json``: derived from the
            rows' columns and versions).
        has_manifest: the manifest was read from ``manifest.json`` (written by the embed
            job), not derived.
    """

    def __init__(self, path: Path, manifest: SnapshotManifest, has_manifest: bool) -> None:
        self.path = path
        self.manifest = manifest
        self.has_manifest = has_manifest

    # -- opening ----------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> EmbeddingSnapshot:
        """The snapshot at ``path``: a folder with ``manifest.json``, else any embedding
        file or folder of files (sizes from the columns, the one model_version of the
        rows). DataError when there is no item embedding file or the rows disagree."""
        path = Path(path)
        if path.is_dir() and (path / MANIFEST).is_file():
            manifest = SnapshotManifest.read(path)
            if manifest.dims is None:
                manifest = manifest.model_copy(update={"dims": _file_dims(path)})
            return cls(path, manifest, True)
        item_files = _item_files(path)
        table = read_parquet(item_files, [ITEM_KEY, "model_version"])
        versions = pc.unique(table.column("model_version").drop_null()).to_pylist()
        manifest = SnapshotManifest(
            # several versions: none to vouch for (readers of vectors refuse the mix)
            model_version=str(versions[0]) if len(versions) == 1 else UNKNOWN_MODEL_VERSION,
            dims=_file_dims(path), n_items=table.num_rows,
            parts=tuple(str(f.relative_to(path)) if path.is_dir() else f.name
                        for f in item_files),
            part_rows=table.num_rows,
        )
        return cls(path, manifest, False)

    @classmethod
    def find(cls, folder: str | Path) -> EmbeddingSnapshot | None:
        """The snapshot in ``folder``, or None when it holds no embedding rows yet (no
        manifest and no part: the embed job has not run)."""
        folder = Path(folder)
        if (folder / MANIFEST).is_file():
            return cls.open(folder)
        if not folder.exists() or (folder.is_dir() and not any(folder.glob(PART_GLOB))):
            return None
        return cls.open(folder)

    @staticmethod
    def state(folder: str | Path) -> str:
        """A token that changes whenever a new snapshot is swapped into ``folder`` (the
        manifest's text; "" while there is none, e.g. mid-swap)."""
        try:
            return (Path(folder) / MANIFEST).read_text()
        except OSError:
            return ""

    # -- what it holds ----------------------------------------------------------------
    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    @property
    def dims(self) -> tuple[int, ...]:
        """The Matryoshka sizes, ascending."""
        return tuple(sorted(self.manifest.dims or ()))

    @property
    def quantiser(self) -> dict[str, Any] | None:
        """The semantic-ID quantiser the rows' codes come from (its ``describe()``), or
        None: no codes."""
        return self.manifest.semantic_ids


    def require_dim(self, dim: int) -> None:
        """A DataError naming the snapshot unless it holds Matryoshka size ``dim``."""
        if int(dim) not in self.dims:
            raise DataError(f"no Matryoshka size {dim} in this snapshot (sizes: "
                            f"{list(self.dims)})", file=str(self.path), column=emb_column(dim))

    def vectors(self, dim: int, queries: str | Path | None = None) -> MoonEmbeddings:
        """Every item's vector at size ``dim`` (and the query vectors of ``queries``, or of
        the folder's query files), with the items' semantic-ID codes (``semantic_ids``)
        and their id -> row lookup (``item_rows``)."""
        self.require_dim(dim)
        emb = load_moon_embeddings(self.path, dim, queries=queries)
        if self.has_manifest and emb.model_version != self.model_version:
            raise DataError(f"rows are model_version {emb.model_version}, the manifest says "
                            f"{self.model_version}", file=str(self.path), column="model_version")
        return emb
