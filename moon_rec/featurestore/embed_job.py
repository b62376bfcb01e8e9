"""Batch job: embed every catalog item (title + image) with a MOON encoder.

    moon embed --world W --checkpoint C --out E [--batch-size 64] [--part-rows 4096]
    torchrun --nproc-per-node 2 -m moon_rec.cli embed --world W --checkpoint C --out E

Output folder ``E`` (a snapshot: exactly one row per embedded catalog item):
    part-00000.parquet ...  item_id int64, emb_{d} list<float32> per Matryoshka size d
                            (each prefix renormalised), model_version string,
                            event_timestamp timestamp[us, UTC]; catalog order, ``part_rows``
                            items per part
    manifest.json           model_version, dims, counts, parts, the run's event time, and
                            ``semantic_ids``: the quantiser (levels, codebook, dim, file)
    semantic_ids.npz        the semantic-ID quantiser of this model_version (see below)
    _index.parquet          item_id, content_hash, model_version (drives incremental runs)
    rejects.parquet         item_id, row, reason: rows that could not be embedded
                            (empty title, undecodable image); never silently dropped

Semantic IDs: every row also carries ``semantic_ids`` (list<int32>, one codeword per
level) from a residual k-means quantiser (``moon_rec.retrieval.semantic_ids``) fitted once
per model_version on the snapshot's vectors and saved as ``semantic_ids.npz``; a later run
with the same model_version and quantiser config loads it instead of refitting, so old and
new items share one code space (and ``POST /items`` encodes with the same file). Codes are
computed at assembly, from the vectors, for every row, so they always match the file.

Incremental: an item whose content hash (title + image bytes) and model_version match the
index keeps its row (and its old event_timestamp); only the others are embedded.

A text-only catalog (every ``image`` null, such as MovieLens) is embedded from each item's
``product_text(title, attributes)`` with no image (``encode_product(texts, None)``), as
training and evaluation encode it; in a catalog with photos a missing photo is a reject.

Incremental: an item whose content hash (title + image bytes; with no image, title +
attributes) and model_version match the index keeps its row (and its old event_timestamp);
only the others are embedded.
Resumable: the items to embed are cut into chunks of ``part_rows`` in catalog order; each
chunk is written atomically under ``E/.work/<plan>/`` and skipped when present, and the
snapshot is assembled from chunks and the previous snapshot only once all exist, then
swapped in (also resumable). A killed run, run again, gives the same output as an
uninterrupted one, event timestamps included (the plan records its time).
Sharded: under ``torchrun`` rank r embeds chunks j with j % world_size == r; rank 0
assembles the snapshot in catalog order, so the result does not depend on the sharding.
Fast: images are decoded without extra copies and converted to one tensor per chunk, the
encoder runs on batches under ``inference_mode`` and, by default, bf16 autocast where the
hardware has native bf16 (``--precision``; vectors within cosine 0.9999 of fp32).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from moon_rec import runtime
from moon_rec.data.embeddings import (
    MANIFEST,
    PART_GLOB,
    SnapshotManifest,
    emb_column,
    embedding_schema,
    prefixes_of,
    vector_column,
    with_semantic_ids,
)
from moon_rec.data.errors import DataError
from moon_rec.data.images import decode_prepared
from moon_rec.data.io import atomic_write_parquet
from moon_rec.data.rows import RowIndex
from moon_rec.data.schemas import ITEMS, TIMESTAMP
from moon_rec.data.validation import check_column, check_columns, first_duplicate_row, table_files
from moon_rec.encoders.inference import image_size_of, resolve_precision
from moon_rec.retrieval.semantic_ids import (
    SEMANTIC_IDS_FILE,
    SemanticIdConfig,
    SemanticIdQuantiser,
    fit_semantic_ids,
    load_semantic_ids,
)

INDEX = "_index.parquet"
REJECTS = "rejects.parquet"
WORK = ".work"
READ_BATCH = 1024


class ProductEncoder(Protocol):
    """What the job needs of ``moon_rec.encoders.MoonEncoder``."""

    @property
    def dims(self) -> tuple[int, ...]: ...

    @property
    def model_version(self) -> str: ...

    def encode_product(self, titles: list[str], images: torch.Tensor | None) -> torch.Tensor: ...


@dataclass(frozen=True)
class EmbedJobConfig:
    """Knobs of the embed job.

    Args:
        batch_size: items per encoder call.
        part_rows: items per output part and per resumable work chunk.
        progress: show a progress bar.
        event_ts: the event time stamped on new rows (default: when the plan is made).
        device: run the encoder there (e.g. ``cuda``); default: where it was loaded.
        precision: ``fp32``; ``bf16`` (matmuls in bfloat16 under autocast, ~1.7x faster
            on CPUs with native bf16; product vectors stay within cosine 0.9999 of fp32:
            min 0.99994 over 512 items with each trained checkpoint we have); ``auto``
            (default): bf16 where the device computes it natively (CUDA, or a CPU with
            AVX512-BF16/AMX), else fp32 (``moon_rec.encoders.inference``, the path recall
            and serving use too). The resolved precision is part of the resumable plan.
        semantic_ids: the semantic-ID quantiser (its ``dim`` must not exceed the encoder's
            largest Matryoshka size); None writes no codes.
    """

    batch_size: int = 64
    part_rows: int = 4096
    progress: bool = True
    event_ts: datetime | None = None
    device: str | None = None
    precision: str = "auto"
    semantic_ids: SemanticIdConfig | None = field(default_factory=SemanticIdConfig)


REJECT_SCHEMA = pa.schema(
    [pa.field("item_id", pa.int64()), pa.field("row", pa.int64()), pa.field("reason", pa.string())]
)
INDEX_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64()),
        pa.field("content_hash", pa.string()),
        pa.field("model_version", pa.string()),
    ]
)


def _items_files(world: str | Path) -> list[Path]:
    files = table_files(world, "items")
    if not files:
        raise DataError("table 'items' not found", file=str(world))
    return files


def _item_batches(
    world: str | Path, columns: list[str]
) -> Iterator[tuple[Path, int, pa.RecordBatch]]:
    """(file, first row of the batch within that file, batch) over the catalog, in file
    order. Each file must be readable parquet with the contract's ``columns``; anything else
    is a DataError naming the file (and column)."""
    for f in _items_files(world):
        try:
            # no pre_buffer: it caches every row group read so far (memory grows with the file)
            reader = pq.ParquetFile(f, pre_buffer=False, buffer_size=1 << 22)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"not a readable parquet file ({exc})", file=str(f)) from exc
        try:
            check_columns(reader.schema_arrow, ITEMS, str(f), columns)
            row = 0
            for b in reader.iter_batches(batch_size=READ_BATCH, columns=columns):
                yield f, row, b
                row += b.num_rows
        except (pa.ArrowException, OSError) as exc:  # a corrupt row group
            raise DataError(f"not a readable parquet file ({exc})", file=str(f)) from exc
        finally:
            reader.close()


def iter_items(world: str | Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The catalog in file order, in record batches (bounded memory). Only the files and
    the ``columns`` are checked here, not the rows: bad titles and images reach the rejects
    file instead of stopping the job (item ids are checked by ``content_hashes``)."""
    for _, _, b in _item_batches(world, columns):
        yield b


def _item_columns(world: str | Path) -> list[str]:
    """The columns the job reads (``attributes`` where the catalog has it)."""
    first = _items_files(world)[0]
    try:
        names = pq.read_schema(first).names
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a readable parquet file ({exc})", file=str(first)) from exc
    return ["item_id", "title", *(["attributes"] if "attributes" in names else []), "image"]


def _attributes(b: pa.RecordBatch) -> list[str | None]:
    if "attributes" in b.schema.names:
        return list(b.column("attributes").to_pylist())
    return [None] * b.num_rows


def catalog_scan(world: str | Path) -> tuple[np.ndarray, list[str], bool]:
    """(item_id [N] int64, content hash [N], text-only) of the catalog, in catalog order.

    The hash covers the title and the image bytes, and for an item without an image its
    attributes too (what its ``product_text`` is made of). Text-only: the catalog has items
    and none has an image.

    Raises:
        DataError: naming the file, ``item_id`` and the row (within its file) of the first
            null, negative or duplicate id: the job's output is keyed by item id.
    """
    id_spec = ITEMS.column("item_id")
    ids: list[np.ndarray] = []
    hashes: list[str] = []
    rows_per_file: list[tuple[Path, int]] = []
    n_images = 0
    for f, row, b in _item_batches(world, _item_columns(world)):
        check_column(b.column("item_id"), id_spec, str(f), row, full_images=False)
        ids.append(b.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64))
        if row == 0:
            rows_per_file.append((f, 0))
        rows_per_file[-1] = (f, row + b.num_rows)
        n_images += b.num_rows - b.column("image").null_count
        for title, attributes, image in zip(
            b.column("title").to_pylist(), _attributes(b), b.column("image").to_pylist(),
            strict=True,
        ):
            h = hashlib.sha256()
            h.update((title or "").encode())
            h.update(b"\0")
            h.update(image or b"")
            if image is None:
                h.update(b"\0attributes\0")
                h.update((attributes or "").encode())
            hashes.append(h.hexdigest()[:32])
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    dup = first_duplicate_row(all_ids)
    if dup is not None:
        local = dup
        for file, n in rows_per_file:  # table-wide row -> (file, row within it)
            if local < n:
                raise DataError(f"duplicate item_id {int(all_ids[dup])}", file=str(file),
                                column="item_id", row=local)
            local -= n
    return all_ids, hashes, len(all_ids) > 0 and n_images == 0


def content_hashes(world: str | Path) -> tuple[np.ndarray, list[str]]:
    """(item_id [N] int64, content hash [N]) of the catalog, in catalog order
    (``catalog_scan`` without the text-only flag)."""
    ids, hashes, _text_only = catalog_scan(world)
    return ids, hashes


def embed_rows(
    encoder: ProductEncoder,
    titles: list[str],
    images: list[np.ndarray] | None,
    batch_size: int,
    precision: str = "fp32",
) -> dict[int, np.ndarray]:
    """Product embeddings [N, d] per Matryoshka size d (each prefix renormalised).

    Args:
        titles: [N] product texts: titles beside photos, ``product_text(title,
            attributes)`` for text-only products.
        images: (S, S, 3) uint8 arrays at the encoder's image size; None: text-only
            products (``encode_product(titles, None)``).
        precision: ``fp32`` or ``bf16`` (autocast; outputs are float32 either way).

    The project's one encode path (``moon_rec.encoders.inference.embed_products``), so
    recall measures exactly these vectors; each prefix by ``prefixes_of``.
    """
    from moon_rec.encoders.inference import embed_products

    full = embed_products(encoder, titles, images, batch_size, precision=precision)
    return prefixes_of(full, tuple(int(d) for d in encoder.dims))


def _write_parquet(table: pa.Table, path: Path) -> None:
    atomic_write_parquet(table, path)


@dataclass
class _Plan:
    plan_id: str
    dir: Path
    event_ts: datetime
    todo_ids: np.ndarray  # items to embed, catalog order
    chunks: list[np.ndarray]


def _load_index(out: Path) -> dict[int, tuple[str, str]]:
    p = out / INDEX
    if not p.is_file():
        return {}
    try:
        t = pq.read_table(p, columns=INDEX_SCHEMA.names)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"unreadable embedding index ({exc}); delete it to re-embed everything",
                        file=str(p)) from exc
    return {
        int(i): (h, v)
        for i, h, v in zip(
            t.column("item_id").to_pylist(),
            t.column("content_hash").to_pylist(),
            t.column("model_version").to_pylist(),
            strict=True,
        )
    }


def _make_plan(
    out: Path,
    ids: np.ndarray,
    hashes: list[str],
    model_version: str,
    cfg: EmbedJobConfig,
    dims: tuple[int, ...],
    precision: str = "fp32",
) -> _Plan:
    index = _load_index(out)
    todo = np.array(
        [
            i
            for i, h in zip(ids.tolist(), hashes, strict=True)
            if index.get(i) != (h, model_version)
        ],
        dtype=np.int64,
    )
    key = hashlib.sha256()
    sid = cfg.semantic_ids.model_dump() if cfg.semantic_ids is not None else None
    key.update(
        json.dumps(
            [model_version, list(dims), cfg.part_rows, cfg.batch_size, precision, sid]
        ).encode()
    )
    key.update(todo.tobytes())
    key.update("".join(h for i, h in zip(ids.tolist(), hashes, strict=True)).encode())
    plan_id = key.hexdigest()[:16]
    pdir = out / WORK / plan_id
    pdir.mkdir(parents=True, exist_ok=True)
    pfile = pdir / "plan.json"
    if pfile.is_file():
        event_ts = datetime.fromisoformat(json.loads(pfile.read_text())["event_ts"])
    else:
        event_ts = (cfg.event_ts or datetime.now(UTC)).astimezone(UTC)
        runtime.atomic_write_text(
            pfile,
            json.dumps(
                {
                    "event_ts": event_ts.isoformat(),
                    "model_version": model_version,
                    "n_todo": len(todo),
                    "precision": precision,
                }
            ),
        )
    chunks = [todo[s : s + cfg.part_rows] for s in range(0, len(todo), cfg.part_rows)]
    return _Plan(plan_id, pdir, event_ts, todo, chunks)


@dataclass
class _ChunkInput:
    index: int
    item_ids: list[int]
    rows: list[int]
    titles: list[str | None]
    attributes: list[str | None]
    images: list[bytes | None]


def _iter_chunk_inputs(world: str | Path, plan: _Plan, wanted: set[int]) -> Iterator[_ChunkInput]:
    """One pass over the catalog yielding the raw inputs of chunks ``wanted``, in order.

    Chunks are runs of consecutive to-do items in catalog order, so at most one is open.
    """
    chunk_of = {int(i): j for j, c in enumerate(plan.chunks) if j in wanted for i in c.tolist()}
    open_: _ChunkInput | None = None
    row = 0
    for b in iter_items(world, _item_columns(world)):
        bids = b.column("item_id").to_pylist()
        pick = [k for k, i in enumerate(bids) if i in chunk_of]
        if pick:
            if len(pick) > b.num_rows // 4:  # one conversion per column, not per value
                bt: Any = b.column("title").to_pylist()
                bi: Any = b.column("image").to_pylist()
            else:
                bt = [None] * b.num_rows
                bi = [None] * b.num_rows
                for k in pick:
                    bt[k] = b.column("title")[k].as_py()
                    bi[k] = b.column("image")[k].as_py()
            ba = _attributes(b)
            for k in pick:
                j = chunk_of[bids[k]]
                if open_ is None or open_.index != j:
                    open_ = _ChunkInput(j, [], [], [], [], [])
                open_.item_ids.append(bids[k])
                open_.rows.append(row + k)
                open_.titles.append(bt[k])
                open_.attributes.append(ba[k])
                open_.images.append(bi[k])
                if len(open_.item_ids) == len(plan.chunks[j]):
                    yield open_
                    open_ = None
        row += b.num_rows
    if open_ is not None:
        raise RuntimeError(f"embed job: chunk {open_.index} incomplete (catalog changed mid-run?)")


def _embed_chunk(
    chunk: _ChunkInput,
    encoder: ProductEncoder,
    cfg: EmbedJobConfig,
    event_ts: datetime,
    precision: str = "fp32",
    text_only: bool = False,
) -> tuple[pa.Table, pa.Table]:
    """Embed one chunk; returns (embedding rows, rejects with reasons). ``text_only``: the
    catalog has no photos, each product is its ``product_text(title, attributes)``."""
    from moon_rec.encoders.base import product_text

    titles: list[str] = []
    images: list[np.ndarray] = []
    ok_ids: list[int] = []
    rejects: list[tuple[int, int, str]] = []
    size = image_size_of(encoder)
    for item, row, title, attributes, data in zip(
        chunk.item_ids, chunk.rows, chunk.titles, chunk.attributes, chunk.images, strict=True
    ):
        if title is None or not str(title).strip():
            rejects.append((item, row, "empty title"))
            continue
        if text_only:
            ok_ids.append(item)
            titles.append(product_text(str(title), attributes))
            continue
        try:
            img = decode_prepared(data or b"", size, where=f"items row {row}")
        except DataError as exc:  # memory addresses out, so reruns give identical files
            rejects.append((item, row, re.sub(r" at 0x[0-9a-fA-F]+", "", str(exc))))
            continue
        ok_ids.append(item)
        titles.append(str(title))
        images.append(img)
    vecs = embed_rows(encoder, titles, None if text_only else images, cfg.batch_size, precision)
    dims = tuple(encoder.dims)
    table = pa.table(
        {
            "item_id": pa.array(ok_ids, pa.int64()),
            **{emb_column(d): vector_column(vecs[d]) for d in dims},
            "model_version": pa.array([encoder.model_version] * len(ok_ids), pa.string()),
            "event_timestamp": pa.array([event_ts] * len(ok_ids), TIMESTAMP),
        },
        schema=embedding_schema(dims),
    )
    rej = pa.table(
        {
            "item_id": pa.array([r[0] for r in rejects], pa.int64()),
            "row": pa.array([r[1] for r in rejects], pa.int64()),
            "reason": pa.array([r[2] for r in rejects], pa.string()),
        },
        schema=REJECT_SCHEMA,
    )
    return table, rej


class _RowLocator:
    """Where each item's row is among parquet ``files``; gathers rows in a given order."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.where: dict[int, tuple[int, int]] = {}
        for fi, f in enumerate(files):
            col = pq.read_table(f, columns=["item_id"]).column("item_id").to_pylist()
            for r, i in enumerate(col):
                self.where[int(i)] = (fi, r)
        self._cache: tuple[int, pa.Table] | None = None

    def _file(self, fi: int) -> pa.Table:
        if self._cache is None or self._cache[0] != fi:
            self._cache = (fi, pq.read_table(self.files[fi]))
        return self._cache[1]

    def gather(self, ids: list[int], schema: pa.Schema) -> pa.Table:
        """Rows of ``ids`` (all must be known), in that order."""
        pieces: list[pa.Table] = []
        positions: list[int] = []
        by_file: dict[int, list[tuple[int, int]]] = {}
        for pos, i in enumerate(ids):
            fi, r = self.where[i]
            by_file.setdefault(fi, []).append((pos, r))
        for fi in sorted(by_file):
            sel = by_file[fi]
            pieces.append(self._file(fi).take(pa.array([r for _, r in sel])).select(schema.names))
            positions.extend(p for p, _ in sel)
        if not pieces:
            return schema.empty_table()
        table = pa.concat_tables(pieces).cast(schema)
        order = np.argsort(np.array(positions, dtype=np.int64), kind="stable")
        return table.take(pa.array(order))


def _assemble(
    out: Path,
    plan: _Plan,
    ids: np.ndarray,
    hashes: list[str],
    model_version: str,
    dims: tuple[int, ...],
    cfg: EmbedJobConfig,
) -> dict[str, Any]:
    """Build the new snapshot under the plan dir, then swap it in; returns the manifest."""
    final = plan.dir / "final"
    final.mkdir(exist_ok=True)
    done_marker = final / "_COMPLETE"
    schema = embedding_schema(dims)
    chunk_files = [plan.dir / f"chunk-{j:05d}.parquet" for j in range(len(plan.chunks))]
    reject_tables = [
        pq.read_table(plan.dir / f"chunk-{j:05d}.rejects.parquet") for j in range(len(plan.chunks))
    ]
    rejects = pa.concat_tables([REJECT_SCHEMA.empty_table(), *reject_tables])
    rejected = set(rejects.column("item_id").to_pylist())
    todo = set(plan.todo_ids.tolist())
    keep = [i for i in ids.tolist() if i not in rejected]
    parts: list[str] = []
    if not done_marker.is_file():
        new_files = [f for f in chunk_files if f.is_file()]
        old_files = sorted(out.glob(PART_GLOB))
        new_rows = _RowLocator(new_files)
        old_rows = _RowLocator(old_files)
        quantiser = None
        if cfg.semantic_ids is not None and keep:
            quantiser = _quantiser(out, final, model_version, cfg.semantic_ids,
                                   _SnapshotVectors(keep, todo, new_files, old_files, dims))
        for k, s in enumerate(range(0, len(keep), cfg.part_rows)):
            name = f"part-{k:05d}.parquet"
            parts.append(name)
            if (final / name).is_file():
                continue
            part_ids = keep[s : s + cfg.part_rows]
            is_new = np.array([i in todo for i in part_ids], dtype=bool)
            missing = [i for i in part_ids if i not in (new_rows if i in todo else old_rows).where]
            if missing:
                raise RuntimeError(f"embed job: no row for item_id {missing[0]} (corrupt output?)")
            new_ids = [i for i, n in zip(part_ids, is_new, strict=True) if n]
            old_ids = [i for i, n in zip(part_ids, is_new, strict=True) if not n]
            both = pa.concat_tables(
                [new_rows.gather(new_ids, schema), old_rows.gather(old_ids, schema)]
            )
            # back to catalog order: new rows first in `both`, then old ones
            slot = np.empty(len(part_ids), dtype=np.int64)
            slot[np.flatnonzero(is_new)] = np.arange(len(new_ids))
            slot[np.flatnonzero(~is_new)] = len(new_ids) + np.arange(len(old_ids))
            rows = both.take(pa.array(slot))
            if quantiser is not None:
                vecs = _matrix(rows, emb_column(max(dims)), max(dims))
                rows = with_semantic_ids(rows, quantiser.encode_codes(vecs))
            _write_parquet(rows, final / name)
        _write_parquet(rejects.sort_by([("row", "ascending")]), final / REJECTS)
        hash_of = dict(zip(ids.tolist(), hashes, strict=True))
        index = pa.table(
            {
                "item_id": pa.array(keep, pa.int64()),
                "content_hash": pa.array([hash_of[i] for i in keep], pa.string()),
                "model_version": pa.array([model_version] * len(keep), pa.string()),
            },
            schema=INDEX_SCHEMA,
        )
        _write_parquet(index, final / INDEX)
        stamps = [
            pq.read_table(final / p, columns=["event_timestamp"]).column(0).to_pylist()
            for p in parts
        ]
        newest = max((t for ts in stamps for t in ts), default=None)
        # the snapshot's description only: identical snapshots have identical manifests
        SnapshotManifest(
            model_version=model_version,
            dims=dims,
            n_items=len(keep),
            n_rejects=rejects.num_rows,
            parts=tuple(parts),
            latest_event_ts=newest.isoformat() if newest else None,
            part_rows=cfg.part_rows,
            semantic_ids=quantiser.describe() if quantiser is not None else None,
        ).write(final)
        done_marker.write_text("ok\n")
    return _swap_in(out, final)


def _matrix(table: pa.Table, column: str, dim: int) -> np.ndarray:
    """A list<float32> column of equal-length vectors as [N, dim] float32."""
    col = table.column(column).combine_chunks()
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False)
    return np.asarray(flat, np.float32).reshape(-1, dim)


@dataclass
class _SnapshotVectors:
    """Where the new snapshot's vectors are: ``keep`` (catalog order) are its items, those
    in ``todo`` in the new chunk files, the others in the old parts."""

    keep: list[int]
    todo: set[int]
    new_files: list[Path]
    old_files: list[Path]
    dims: tuple[int, ...]

    def sample(self, limit: int, seed: int) -> np.ndarray:
        """Vectors [n, max dim] of at most ``limit`` items (a seeded sample), catalog order."""
        ids = np.asarray(self.keep, np.int64)
        if ids.size > limit:
            ids = ids[np.sort(np.random.default_rng(seed).choice(ids.size, limit, replace=False))]
        todo = np.fromiter(self.todo, np.int64, len(self.todo))
        index = RowIndex(ids)
        dim = max(self.dims)
        column = emb_column(dim)
        out = np.zeros((ids.size, dim), np.float32)
        seen = np.zeros(ids.size, bool)
        for files, new in ((self.new_files, True), (self.old_files, False)):
            for f in files:
                t = pq.read_table(f, columns=["item_id", column])
                fid = t.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)
                take = np.isin(fid, ids) & (np.isin(fid, todo) == new)
                if take.any():
                    slot = index.rows(fid[take])
                    out[slot] = _matrix(t, column, dim)[take]
                    seen[slot] = True
        if not seen.all():
            first = int(ids[np.flatnonzero(~seen)[0]])
            raise RuntimeError(f"embed job: no vector for item_id {first} (corrupt output?)")
        return out


def _quantiser(
    out: Path,
    final: Path,
    model_version: str,
    config: SemanticIdConfig,
    vectors: _SnapshotVectors,
) -> SemanticIdQuantiser:
    """The snapshot's semantic-ID quantiser, saved in ``final``: the one this assembly
    already saved (a resumed run), else the previous snapshot's when its model_version and
    config match (incremental runs never refit), else a new fit on the snapshot."""
    mine = final / SEMANTIC_IDS_FILE
    if mine.is_file():
        return load_semantic_ids(mine)
    prev = out / SEMANTIC_IDS_FILE
    if prev.is_file():
        try:
            q = load_semantic_ids(prev)
        except DataError:
            q = None  # unreadable: refit
        if q is not None and q.model_version == model_version and q.config == config:
            q.save(mine)
            return q
    seed = zlib.crc32(f"{model_version}\0{config.seed}\0sample".encode())
    q = fit_semantic_ids(vectors.sample(config.max_train_points, seed), model_version, config)
    q.save(mine)
    return q


def _swap_in(out: Path, final: Path) -> dict[str, Any]:
    """Move a complete snapshot from ``final`` into ``out`` (idempotent, resumable)."""
    manifest = SnapshotManifest.read(final)
    wanted = set(manifest.parts)
    (out / MANIFEST).unlink(missing_ok=True)  # readers see "no manifest" mid-swap
    for p in out.glob(PART_GLOB):
        if p.name not in wanted:
            p.unlink()
    if not manifest.semantic_ids:  # no codes in this snapshot: no stale quantiser
        (out / SEMANTIC_IDS_FILE).unlink(missing_ok=True)
    for name in [*manifest.parts, REJECTS, INDEX, SEMANTIC_IDS_FILE]:
        src = final / name
        if src.is_file():
            os.replace(src, out / name)
    os.replace(final / MANIFEST, out / MANIFEST)
    shutil.rmtree(out / WORK, ignore_errors=True)
    return manifest.to_json()


def _dist() -> tuple[int, int]:
    """(rank, world size): the torchrun group joined (nccl where CUDA is available, the
    barriers being its only collectives), or (0, 1) for one process."""
    env = runtime.join_process_group(single_process=False)
    return env.rank, env.world_size


def _barrier(world: int) -> None:
    if world > 1:
        runtime.barrier()


def load_encoder(checkpoint: str | Path) -> ProductEncoder:
    """The MOON encoder of a ``save_pretrained`` checkpoint, in eval mode."""
    from moon_rec.encoders import MoonEncoder

    enc = MoonEncoder.from_pretrained(checkpoint)
    enc.eval()
    return enc


def run_embed_job(
    world: str | Path,
    checkpoint: str | Path | None,
    out: str | Path,
    cfg: EmbedJobConfig | None = None,
    *,
    encoder: ProductEncoder | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Embed the catalog of ``world`` into ``out`` (see the module docstring).

    Args:
        world: the world directory (its ``items`` table).
        checkpoint: a ``MoonEncoder.save_pretrained`` folder (ignored when ``encoder`` given).
        out: the output folder.
        cfg: job knobs.
        encoder: an already loaded encoder.
        on_chunk: called with the number of chunks this call has embedded, after each
            chunk is safely on disk (progress reporting; an exception raised there stops
            the job as a kill would, and a rerun resumes).
    Returns:
        the manifest (``SnapshotManifest``'s fields) with the run's figures (on rank 0;
        other ranks return their chunk counts).
    """
    cfg = cfg or EmbedJobConfig()
    out = Path(out)
    # the catalog's files, columns and ids are checked before anything is written
    ids, hashes, text_only = catalog_scan(world)
    out.mkdir(parents=True, exist_ok=True)
    rank, world_size = _dist()
    # finish a swap that a kill interrupted, before looking at the index
    for final in sorted(out.glob(f"{WORK}/*/final")):
        if (final / "_COMPLETE").is_file() and rank == 0:
            _swap_in(out, final)
    _barrier(world_size)
    if encoder is None:
        if checkpoint is None:
            raise ValueError("embed job: give a checkpoint or an encoder")
        encoder = load_encoder(checkpoint)
    if cfg.device is not None and hasattr(encoder, "to"):
        encoder = encoder.to(cfg.device)
    model_version = str(encoder.model_version)
    dims = tuple(int(d) for d in encoder.dims)
    if cfg.semantic_ids is not None and cfg.semantic_ids.dim > max(dims):
        raise ValueError(
            f"semantic_ids.dim {cfg.semantic_ids.dim} exceeds the encoder's largest "
            f"Matryoshka size {max(dims)}"
        )
    precision = resolve_precision(cfg.precision, getattr(encoder, "device", "cpu"))
    plan = _make_plan(out, ids, hashes, model_version, cfg, dims, precision)
    mine = [j for j in range(len(plan.chunks)) if j % world_size == rank]
    todo_here = sum(len(plan.chunks[j]) for j in mine)
    t0 = time.perf_counter()
    embedded = 0
    with tqdm(
        total=todo_here,
        desc=f"embed[{rank}]",
        unit="item",
        disable=not cfg.progress,
        file=sys.stderr,
    ) as bar:
        pending = set()
        for j in mine:
            if (plan.dir / f"chunk-{j:05d}.parquet").is_file():
                bar.update(len(plan.chunks[j]))
            else:
                pending.add(j)
        for chunk in _iter_chunk_inputs(world, plan, pending):
            table, rej = _embed_chunk(chunk, encoder, cfg, plan.event_ts, precision, text_only)
            j = chunk.index
            _write_parquet(rej, plan.dir / f"chunk-{j:05d}.rejects.parquet")
            # written last: its presence marks the chunk done
            _write_parquet(table, plan.dir / f"chunk-{j:05d}.parquet")
            bar.update(len(chunk.item_ids))
            embedded += 1
            if on_chunk is not None:
                on_chunk(embedded)
    _barrier(world_size)
    if rank != 0:
        return {"rank": rank, "chunks": len(mine)}
    manifest = _assemble(out, plan, ids, hashes, model_version, dims, cfg)
    n_new = len(set(plan.todo_ids.tolist()) & set(_load_index(out)))
    manifest["n_embedded"] = n_new
    manifest["n_reused"] = manifest["n_items"] - n_new
    manifest["plan"] = plan.plan_id
    manifest["precision"] = precision
    manifest["seconds"] = round(time.perf_counter() - t0, 3)
    manifest["items_per_s"] = (
        round(len(plan.todo_ids) / manifest["seconds"], 1) if manifest["seconds"] else None
    )
    return manifest

