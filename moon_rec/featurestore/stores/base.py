"""``MoonOnlineStore``: what an online store implements to serve MOON, beside Feast's API.

Feast's ``OnlineStore`` plug-in contract (``online_write_batch``, ``online_read``,
``update``, ``teardown``) is kept as it is, so ``feast materialize``, ``feast serve`` and
``get_online_features`` work on every MOON store. ``MoonOnlineStore`` adds the rule and the
four operations the project relies on; pushes, materialization and serving call them on the
profile's store through this interface and never name a back-end:

==========================  ==============================================================
``online_write_batch``      Feast's write, with one rule: a row is replaced only when the
                            incoming event time is strictly later (microseconds), so a
                            late push never overwrites newer data.
``write_encoded``           the bulk write: rows already serialised (``EncodedRows``),
                            stored with the same bytes and rule as ``online_write_batch``.
``update_rows``             an atomic read-modify-write of entity rows across processes
                            (behaviour appends); the update's row is written whatever its
                            event time; contention beyond the store's patience raises
                            ``StoreBusy``.
``log_changes`` /           an entity change log per view: which int64 entities were
``read_changes``            written since a cursor, each once, one increasing sequence
                            shared by all processes (serving processes catch up with
                            each other's new items).
``fault_types()``           the exception types that mean this back-end (not the request)
                            failed; serving's circuit breaker opens on them.
==========================  ==============================================================

Adding a back-end: one module with ``class MyStore(FeastsStore, MoonOnlineStore)`` (or
``MoonOnlineStore`` alone over Feast's abstract methods) and its pydantic config class
``MyStoreConfig`` (``type: Literal["my.module.MyStore"]``, ``extra="forbid"`` as Feast's
configs), then a profile YAML in ``configs/featurestore/`` whose ``online_store.type`` is the
class's dotted path. A class that misses a method cannot be instantiated (``TypeError``
naming it and the methods); a store that is not a ``MoonOnlineStore`` is refused where
the writer and the service start (``online_store_of``: ``StoreInterfaceError`` naming its
class, which ``moon`` reports as ``error: ...``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from feast.feature_view import FeatureView
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.repo_config import RepoConfig

from moon_rec.featurestore.stores.rows import EncodedRows, RowUpdate


class StoreBusy(RuntimeError):
    """A write gave up waiting for other writers (a lock held too long, a transaction
    invalidated too often). The store is up and reads go on: the call may be retried.
    Serving answers it with 503 without opening its circuit breaker."""


class StoreContention(StoreBusy):
    """A read-modify-write lost to concurrent writers too many times in a row."""


class StoreInterfaceError(ValueError):
    """The profile's online store does not implement ``MoonOnlineStore`` (a configuration
    error: the CLI reports it as ``error: ...``)."""


COMMON_FAULTS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
"""Fault types of any networked back-end; ``fault_types()`` implementations add theirs."""


class MoonOnlineStore(OnlineStore):
    """The MOON online store interface (see the module docstring for the contract).

    Every method takes Feast's ``RepoConfig`` (its ``online_store`` is the store's own
    pydantic config) and the ``FeatureView`` whose rows it touches, as Feast's plug-in
    methods do. Entities have one int64 join key.

    Example::

        store = require_moon_store(feature_store._get_provider().online_store)
        store.write_encoded(config, view, rows)                # newest wins
        store.update_rows(config, view, keys, lambda i, row: new_row(i, row))
        seq = store.log_changes(config, view, [7, 8])
        ids, cursor = store.read_changes(config, view, after=0)
    """

    @abstractmethod
    def write_encoded(self, config: RepoConfig, table: FeatureView, batch: EncodedRows) -> None:
        """Write ``batch`` (N rows of ``table``, already in Feast's wire format).

        The stored bytes and the newest-wins rule are exactly ``online_write_batch``'s on
        ``batch.write_rows()`` (the simplest correct implementation is that call); a
        back-end overrides it to skip the protobuf objects on bulk loads.
        """

    @abstractmethod
    def update_rows(
        self,
        config: RepoConfig,
        table: FeatureView,
        keys: Sequence[EntityKeyProto],
        update: RowUpdate,
    ) -> None:
        """Atomically replace the rows of ``keys`` by ``update(i, stored row)``.

        Per key: read the stored ``OnlineRow`` (values, event time, extra bytes; None when
        absent), call ``update``, write its row (whatever its event time) with its extra
        bytes, with no concurrent writer of any process in between (a transaction, or a
        compare-and-retry, in which case ``update`` is called again). A key repeated in
        ``keys`` sees its own earlier update. Raises ``StoreBusy`` when other writers keep
        it out past the store's configured patience.
        """

    @abstractmethod
    def log_changes(self, config: RepoConfig, table: FeatureView, ids: Sequence[int]) -> int:
        """Record that the rows of entity ``ids`` of ``table`` were written.

        Returns:
            the sequence number given to them: one increasing sequence per view, shared by
            all processes.
        """

    @abstractmethod
    def read_changes(
        self, config: RepoConfig, table: FeatureView, after: int, limit: int = 10_000
    ) -> tuple[list[int], int]:
        """The entities of ``table`` logged after sequence number ``after``.

        Returns:
            (entity ids, each once, oldest first, at most ``limit``; the cursor to read on
            from: ``after`` when there are none). A view never logged reads as empty.
        """

    @abstractmethod
    def fault_types(self) -> tuple[type[BaseException], ...]:
        """The exception types that mean the back-end failed (connection refused or reset,
        timeout, unreadable database, a server loading or read-only), not the request:
        ``COMMON_FAULTS`` plus the driver's. ``StoreBusy`` is not one of them."""


_HOW = (
    "the class named by online_store.type must derive from "
    "moon_rec.featurestore.stores.MoonOnlineStore and implement write_encoded, update_rows, "
    "log_changes, read_changes and fault_types (see the profiles in configs/featurestore/)"
)


def online_store_of(provider: Any, store_type: str) -> MoonOnlineStore:
    """The ``online_store`` of a Feast provider, made by Feast from ``store_type`` (the
    profile's ``online_store.type``), as a ``MoonOnlineStore``.

    Raises:
        StoreInterfaceError: naming the store's class when it does not implement the
            interface, or misses one of its methods (Python refuses to instantiate it).
    """
    try:
        store = provider.online_store
    except TypeError as exc:
        if "abstract" not in str(exc):
            raise
        raise StoreInterfaceError(f"online store {store_type}: {exc}; {_HOW}") from exc
    return require_moon_store(store)


def require_moon_store(store: Any) -> MoonOnlineStore:
    """``store`` (a Feast provider's ``online_store``) as a ``MoonOnlineStore``.

    Raises:
        StoreInterfaceError: naming the store's class when it does not implement the
            interface.
    """
    if not isinstance(store, MoonOnlineStore):
        cls = type(store)
        raise StoreInterfaceError(
            f"online store {cls.__module__}.{cls.__qualname__} is not a MOON online store: "
            f"{_HOW}"
        )
    return store
