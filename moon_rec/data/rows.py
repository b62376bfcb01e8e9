"""Id -> row lookups: the one numpy implementation (its torch twin for models is
``moon_rec.ranking.modules.ItemRows``, with the same convention).

Convention: a lookup answers the row of each id, or ``ABSENT`` (-1) where the id is not
there. Callers that must not meet an absent id use ``RowIndex.require`` (a ``DataError``
naming the first one); callers that want a value per id use ``RowIndex.take`` with a
default.

    >>> index = RowIndex(np.array([30, 10, 20]))
    >>> index.rows(np.array([20, 99, 30])).tolist()
    [2, -1, 0]
"""

from __future__ import annotations

import numpy as np

from moon_rec.data.errors import DataError

ABSENT = -1


def sorted_rows(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The position of each of ``ids`` (any shape) in ascending ``sorted_ids`` [N], ``ABSENT``
    where it is not there."""
    ids = np.asarray(ids)
    if len(sorted_ids) == 0:
        return np.full(ids.shape, ABSENT, np.int64)
    pos = np.searchsorted(sorted_ids, ids).clip(max=len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == ids, pos, ABSENT).astype(np.int64, copy=False)


class RowIndex:
    """The rows of ``ids`` [N] (any order; duplicates: the first row), looked up by id.

    Args:
        ids: [N] the keys, e.g. a table's ``item_id`` column.
        is_sorted: ``ids`` are known to be ascending and unique (no sort is made).
    """

    def __init__(self, ids: np.ndarray, *, is_sorted: bool = False) -> None:
        ids = np.asarray(ids)
        if is_sorted:
            self._order: np.ndarray | None = None
            self._sorted = ids
        else:
            self._order = np.argsort(ids, kind="stable")
            self._sorted = ids[self._order]
        self.n = int(ids.shape[0])

    def __len__(self) -> int:
        return self.n

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The row of each of ``ids`` (any shape), ``ABSENT`` where absent."""
        pos = sorted_rows(self._sorted, ids)
        if self._order is None:
            return pos
        return np.where(pos >= 0, self._order[pos.clip(min=0)], ABSENT) if self.n else pos

    def require(self, ids: np.ndarray, *, what: str, column: str,
                file: str | None = None) -> np.ndarray:
        """``rows`` of ``ids`` [N], all of which must be there; a ``DataError`` naming the
        first absent id (``what``: where it was looked for, e.g. ``items``)."""
        ids = np.asarray(ids)
        rows = self.rows(ids)
        bad = np.flatnonzero(rows.reshape(-1) < 0)
        if bad.size:
            raise DataError(f"id {int(ids.reshape(-1)[bad[0]])} is not in {what}",
                            file=file, column=column, row=int(bad[0]))
        return rows

    def take(self, values: np.ndarray, ids: np.ndarray, default: object) -> np.ndarray:
        """``values`` [N] (aligned with the index's ids) at each of ``ids``, ``default``
        where absent."""
        rows = self.rows(ids)
        values = np.asarray(values)
        out = np.full(rows.shape, default, dtype=values.dtype if values.size else object)
        hit = rows >= 0
        out[hit] = values[rows[hit]]
        return out
