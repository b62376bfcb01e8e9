"""Point-in-time feature retrieval through Feast, rows returned in the input order.

Feast's ``get_historical_features`` on the DuckDB offline store keeps entity rows that
have no earlier feature row (with nulls; the file/dask store silently drops them, so it is
never used here) but returns rows in arbitrary order. We tag every entity row with its
position and sort the result back, and check that no row was lost or duplicated.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from moon_rec.data.schemas import TIMESTAMP
from moon_rec.featurestore.definitions import TIMESTAMP_FIELD
from moon_rec.featurestore.store import MoonFeatureStore

ROW_COLUMN = "moon_entity_row"


def historical_features(
    mfs: MoonFeatureStore,
    entities: pa.Table,
    features: list[str],
    *,
    timestamp_column: str = "ts",
) -> pa.Table:
    """As-of join of ``features`` onto ``entities`` (feature time <= entity time).

    Args:
        mfs: the store (DuckDB offline store for the embedded/production profiles).
        entities: N rows with the join keys of the requested views (``item_id``,
            ``user_id``) and ``timestamp_column`` (timestamp, UTC).
        features: Feast references, e.g. ``["user_behaviour:hist_item_ids"]``.
        timestamp_column: the entity time column.
    Returns:
        N rows, in the input order: the join keys, ``timestamp_column`` and one column per
        feature (null where no feature row is at or before the entity time).
    """
    if timestamp_column not in entities.column_names:
        raise ValueError(f"entity table has no '{timestamp_column}' column")
    n = entities.num_rows
    keys = [c for c in entities.column_names if c != timestamp_column]
    frame = pa.table(
        {
            **{c: entities.column(c) for c in keys},
            TIMESTAMP_FIELD: pc.cast(entities.column(timestamp_column), TIMESTAMP),
            ROW_COLUMN: pa.array(np.arange(n, dtype=np.int64)),
        }
    ).to_pandas()
    job = mfs.store.get_historical_features(entity_df=frame, features=features)
    result = job.to_arrow()
    if result.num_rows != n:
        raise RuntimeError(
            f"point-in-time join returned {result.num_rows} rows for {n} entity rows"
        )
    order = pc.sort_indices(result.column(ROW_COLUMN))
    result = result.take(order)
    rows = result.column(ROW_COLUMN).to_numpy()
    if not np.array_equal(rows, np.arange(n)):
        raise RuntimeError("point-in-time join lost or duplicated entity rows")
    names = [f.split(":", 1)[1] for f in features]
    out = {c: entities.column(c) for c in keys}
    out[timestamp_column] = entities.column(timestamp_column)
    for name in names:
        out[name] = result.column(name)
    return pa.table(out)
