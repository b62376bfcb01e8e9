"""The store guard: every online-store call of the service goes through one circuit breaker.

A failing store call becomes ``StoreUnavailable`` (503) and opens the breaker: requests
then fail fast (no wait on the store client's own retries) while a background probe
calls the store every ``retry_s`` seconds; the first probe that succeeds closes it.
Errors about the request (``DataError``, ``ServiceError``, ``ModelVersionMismatch``)
pass through unchanged and never open it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from moon_rec.data.errors import DataError
from moon_rec.featurestore.online import ModelVersionMismatch
from serving.errors import ServiceError, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# not store faults: the request (or the data it names) is at fault
_PASS_THROUGH: tuple[type[BaseException], ...] = (DataError, ModelVersionMismatch, ServiceError)


class StoreGuard:
    """The circuit breaker around the online store (see the module docstring).

    Args:
        probe: a cheap store call (e.g. a one-row read) that raises while the store is down.
        retry_s: seconds between probes while the breaker is open.

    Example::

        guard = StoreGuard(lambda: client.user_sequences([0]), retry_s=1.0)
        seq = guard.call("user features", client.user_sequences, [user_id])
    """

    def __init__(self, probe: Callable[[], Any], retry_s: float = 1.0) -> None:
        self._probe_fn = probe
        self.retry_s = retry_s
        self.healthy = True
        self.error = ""
        self.calls = 0  # successful store calls
        self._lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._stop = threading.Event()

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``; a store failure raises ``StoreUnavailable`` naming
        ``what`` and opens the breaker; while it is open, raises at once."""
        if not self.healthy:
            raise StoreUnavailable(
                f"online store unavailable ({what}): {self.error}; probing it in the background"
            )
        try:
            out = fn(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            self.trip()
            raise StoreUnavailable(f"online store unavailable ({what}): {self.error}") from exc
        with self._lock:
            self.calls += 1
        return out

    def trip(self) -> None:
        """Open the breaker and start the background probe (if not running)."""
        with self._lock:
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

    def check(self) -> bool:
        """True when the store answers the probe call (False at once while open)."""
        if not self.healthy:
            return False
        try:
            self.call("health", self._probe_fn)
        except StoreUnavailable:
            return False
        return True

    def close(self) -> None:
        """Stop the background probe."""
        self._stop.set()
