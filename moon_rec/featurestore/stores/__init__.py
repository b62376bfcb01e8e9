"""The online stores: one interface (``base.MoonOnlineStore``), one module per back-end.

Modules:
    base    ``MoonOnlineStore``: Feast's ``OnlineStore`` plus the bulk write, the atomic
            row update, the change log and ``fault_types()``; ``StoreBusy``;
            ``online_store_of`` / ``require_moon_store``
    rows    ``EncodedRows``, ``OnlineRow``, entity-key serialisation, epoch microseconds
    sqlite  ``MoonSqliteOnlineStore`` (the embedded profile)
    redis   ``MoonRedisOnlineStore`` (the production profile)

A profile names its store by dotted path (``online_store.type`` in
``configs/featurestore/*.yaml``); nothing else names a back-end.
"""

from moon_rec.featurestore.stores.base import (
    COMMON_FAULTS,
    MoonOnlineStore,
    StoreBusy,
    StoreContention,
    StoreInterfaceError,
    online_store_of,
    require_moon_store,
)
from moon_rec.featurestore.stores.rows import (
    EncodedRows,
    OnlineRow,
    RowUpdate,
    WriteRow,
    epoch_micros,
    from_epoch_micros,
)

__all__ = [
    "COMMON_FAULTS",
    "EncodedRows",
    "MoonOnlineStore",
    "OnlineRow",
    "RowUpdate",
    "StoreBusy",
    "StoreContention",
    "StoreInterfaceError",
    "WriteRow",
    "epoch_micros",
    "from_epoch_micros",
    "online_store_of",
    "require_moon_store",
]
