"""The store guard: it opens on the fault types the store declares, and a busy store (a
write that gave up waiting for another writer) is 503 without opening it."""

from __future__ import annotations

import sqlite3

import pytest

from moon_rec.featurestore.stores import StoreBusy, StoreContention
from serving.errors import StoreUnavailable
from serving.store_guard import StoreGuard

FAULTS = (ConnectionError, sqlite3.OperationalError)


def _raise(exc: BaseException) -> None:
    raise exc


def _guard() -> StoreGuard:
    return StoreGuard(lambda: None, FAULTS, retry_s=60.0, health_s=0)


@pytest.mark.parametrize("busy", [StoreBusy("locked"), StoreContention("lost 200 times")])
def test_a_busy_store_is_503_and_the_breaker_stays_closed(busy: StoreBusy) -> None:
    guard = _guard()
    with pytest.raises(StoreUnavailable, match="busy"):
        guard.call("behaviour append", _raise, busy)
    assert guard.healthy and guard.trips == 0
    assert guard.call("read", lambda: 7) == 7


def test_a_declared_fault_opens_the_breaker_even_wrapped() -> None:
    guard = _guard()
    try:
        try:
            sqlite3.connect(":memory:").execute("SELECT * FROM missing")
        except sqlite3.OperationalError as exc:
            raise RuntimeError("Feast wrapped it") from exc
    except RuntimeError as wrapped:
        with pytest.raises(StoreUnavailable):
            guard.call("read", _raise, wrapped)
    assert not guard.healthy and guard.trips == 1
    with pytest.raises(StoreUnavailable):  # fails fast while open
        guard.call("read", lambda: 7)
    guard.close()


def test_anything_else_passes_through_and_leaves_the_breaker_alone() -> None:
    guard = _guard()
    with pytest.raises(KeyError):
        guard.call("read", _raise, KeyError("item 5"))
    with pytest.raises(TimeoutError):  # not declared by this store
        guard.call("read", _raise, TimeoutError())
    assert guard.healthy and guard.trips == 0
