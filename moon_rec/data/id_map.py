"""Stable int64 ids for a source's own ids (strings of any kind: hex customer ids, SKUs,
"u_17"), written beside the world so that serving and a later import agree.

One map per kind of id (``user``, ``item``, ``query``, ``category``, ``brand``, ``spu``,
``request``) lives in
``WORLD/id_maps/<kind>.parquet`` (columns ``key`` string, ``id`` int64; the owner of that
format is this module). A key keeps its id forever: a later import of the same world loads
the maps first and gives only new keys new ids (the next after the largest), so an id a
model or a feature row holds never changes meaning.

Policies (per id column of a mapping):
    map   every value is a key (its text; ``17`` and ``"17"`` are the same key); ids are
          dense from 0 (categories and brands from 1: 0 means "none").
    keep  the source's ids are already integers in 0 .. 2^63-1 and are kept as they are
          (no map is written); anything else is an error naming the row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from moon_rec.data.errors import DataError

ID_MAPS = "id_maps"
IdPolicy = Literal["map", "keep"]
KINDS: tuple[str, ...] = ("user", "item", "query", "category", "brand", "spu", "request")
# the first id a kind's map hands out (0 is "no category / no brand" in the items table)
FIRST_ID = {"user": 0, "item": 0, "query": 0, "category": 1, "brand": 1, "spu": 0,
            "request": 1}


def map_path(root: str | Path, kind: str) -> Path:
    return Path(root) / ID_MAPS / f"{kind}.parquet"


class IdMap:
    """Key (text) -> int64 id of one kind; loaded from a world, extended, saved.

    Args:
        kind: one of ``KINDS``.
        keys / ids: the pairs already given out (from ``load``).
    """

    def __init__(self, kind: str, keys: list[str] | None = None, ids: list[int] | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown id kind {kind!r} (known: {', '.join(KINDS)})")
        self.kind = kind
        self._ids: dict[str, int] = dict(zip(keys or [], ids or [], strict=True))
        self._next = max(self._ids.values(), default=FIRST_ID[kind] - 1) + 1
        self.n_loaded = len(self._ids)

    @classmethod
    def load(cls, root: str | Path, kind: str) -> IdMap:
        """The map of ``kind`` written beside world ``root`` (empty when there is none)."""
        path = map_path(root, kind)
        if not path.is_file():
            return cls(kind)
        try:
            table = pq.read_table(path, columns=["key", "id"])
        except (pa.ArrowInvalid, OSError, KeyError) as exc:
            raise DataError(f"unreadable id map ({exc})", file=str(path)) from exc
        keys = table.column("key").to_pylist()
        ids = table.column("id").to_pylist()
        if len(set(keys)) != len(keys) or len(set(ids)) != len(ids) or None in keys or None in ids:
            raise DataError("id map with a duplicate or null key or id", file=str(path))
        return cls(kind, keys, ids)

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, key: str) -> int | None:
        return self._ids.get(key)

    def id_of(self, key: str) -> int:
        """The id of ``key``, a new one if it has none yet."""
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = self._next
            self._next += 1
        return found

    def map_array(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """[N] int64 ids of an array of keys (strings, or integers taken as their text);
        nulls must have been rejected before. Works on the distinct values of the batch."""
        if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
            values = values.cast(pa.string())
        uniques = pc.unique(values)
        ids = np.fromiter((self.id_of(k) for k in uniques.to_pylist()), np.int64, len(uniques))
        index = pc.index_in(values, value_set=uniques).to_numpy(zero_copy_only=False)
        return ids[np.asarray(index, np.int64)]

    def keys_of(self, ids: np.ndarray) -> list[str | None]:
        """The keys of ``ids`` (None where an id is not in the map)."""
        inverse = {v: k for k, v in self._ids.items()}
        return [inverse.get(int(i)) for i in ids.tolist()]

    def table(self) -> pa.Table:
        items = sorted(self._ids.items(), key=lambda kv: kv[1])
        return pa.table({
            "key": pa.array([k for k, _ in items], pa.string()),
            "id": pa.array([v for _, v in items], pa.int64()),
        })

    def save(self, root: str | Path) -> Path:
        """Write the map into ``root/id_maps/`` (a staging folder: moved in with the world)."""
        path = map_path(root, self.kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.table(), path, compression="zstd")
        return path
