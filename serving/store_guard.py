"""The store guard: every online-store call of the service goes through one circuit breaker.

Only store faults open it: the exception types the feature store declares
(``MoonFeatureStore.fault_types``: its online store's ``MoonOnlineStore.fault_types`` and
its registry's), e.g. a connection refused or reset, a timeout, an unreadable database, a
server that is loading or read-only (``is_store_fault``). Such a call becomes
``StoreUnavailable`` (503) and opens the breaker: requests then fail fast (no wait on the
store) while a background probe calls the store every ``retry_s`` seconds; the first probe
that succeeds closes it. A write that gave up waiting for other writers (``StoreBusy``: a
lock held by another process, a transaction lost to contention) is 503 too, but the store
is up and reads go on, so the breaker stays closed. Anything else raised by a call is about
the request or a bug, never the store's health: it passes through unchanged and the breaker
stays as it is (``DataError`` / ``ServiceError`` become 4xx in the app).

Health is known without waiting: a monitor thread probes the store every ``health_s``
seconds while the breaker is closed, so ``healthy`` is never older than that and
``/healthz`` reads it instead of calling the store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from moon_rec.featurestore.stores import StoreBusy
from serving.errors import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from (Feast and SQLAlchemy wrap driver
    errors), at most 5."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(out) < 5:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def is_store_fault(exc: BaseException, faults: tuple[type[BaseException], ...]) -> bool:
    """True when ``exc`` (or an exception it was raised from) is one of ``faults``."""
    return any(isinstance(e, faults) for e in _chain(exc))


def is_store_busy(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) is ``StoreBusy``."""
    return any(isinstance(e, StoreBusy) for e in _chain(exc))


class StoreGuard:
    """The circuit breaker around the online store (see the module docstring).

    Args:
        probe: a cheap store call (e.g. a one-row read) that raises while the store is down.
        faults: the exception types that mean the store failed (``mfs.fault_types()``).
        retry_s: seconds between probes while the breaker is open.
        health_s: seconds between health probes while it is closed (0: none).

    Example::

        guard = StoreGuard(lambda: client.user_sequences([0]), mfs.fault_types())
        seq = guard.call("user features", client.user_sequences, [user_id])
    """

    def __init__(self, probe: Callable[[], Any], faults: tuple[type[BaseException], ...],
                 retry_s: float = 1.0, health_s: float = 1.0) -> None:
        self._probe_fn = probe
        self.faults = faults
        self.retry_s = retry_s
        self.health_s = health_s
        self.healthy = True
        self.error = ""
        self.calls = 0  # successful store calls
        self.trips = 0  # times the breaker opened
        self._lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._monitor: threading.Thread | None = None
        self._stop = threading.Event()

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``; a store fault raises ``StoreUnavailable`` naming
        ``what`` and opens the breaker; while it is open, raises at once. ``StoreBusy``
        raises ``StoreUnavailable`` and leaves the breaker closed. Other errors pass
        through and leave the breaker alone."""
        if not self.healthy:
            raise StoreUnavailable(
                f"online store unavailable ({what}): {self.error}; probing it in the background"
            )
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:
            if is_store_busy(exc):
                raise StoreUnavailable(
                    f"online store busy ({what}): {type(exc).__name__}: {str(exc)[:200]}"
                ) from exc
            if not is_store_fault(exc, self.faults):
                raise
            self.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            self.trip()
            raise StoreUnavailable(f"online store unavailable ({what}): {self.error}") from exc
        with self._lock:
            self.calls += 1
        return out

    def trip(self) -> None:
        """Open the breaker and start the background probe (if not running)."""
        with self._lock:
            if self.healthy:
                self.trips += 1
            self.healthy = False
            if self._probe is not None and self._probe.is_alive():
                return
            log.warning("online store unavailable: %s", self.error)
            self._probe = threading.Thread(target=self._run_probe, name="store-probe",
                                           daemon=True)
            self._probe.start()

    def _run_probe(self) -> None:
        while not self._stop.wait(self.retry_s):
            try:
                self._probe_fn()
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {str(exc)[:200]}"
                continue
            self.healthy = True
            log.warning("online store is back")
            return

    def start_monitor(self) -> None:
        """Probe the store every ``health_s`` seconds while the breaker is closed; a
        failing probe opens it (so ``healthy`` is fresh without a request)."""
        if self.health_s <= 0 or self._monitor is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.health_s):
                if not self.healthy:
                    continue  # the probe thread is on it
                try:
                    self._probe_fn()
                except Exception as exc:
                    if is_store_fault(exc, self.faults):
                        self.error = f"{type(exc).__name__}: {str(exc)[:200]}"
                        self.trip()
                    else:
                        log.exception("store health probe failed")

        self._monitor = threading.Thread(target=loop, name="store-health", daemon=True)
        self._monitor.start()

    def check(self) -> bool:
        """The breaker's state: True while closed. Never calls the store."""
        return self.healthy

    def close(self) -> None:
        """Stop the background threads."""
        self._stop.set()
