"""The bounded worker pool: request work off the event loop, with back-pressure.

The endpoints' work (image decoding, encoding, ranking and the blocking online-store calls)
runs on a few worker threads, so the event loop only parses requests and writes responses:
``/healthz``, ``/metrics`` and the refusals (401, 413, 422 of the schema, 503) never wait
behind an expensive request. At most ``workers + max_queue`` calls are admitted at once;
past that a request is refused at once (``Overloaded``: 503 with ``Retry-After``) rather
than queued without bound (each waiting request holds its body, up to the body limit).

Threads, not processes: the work releases the GIL where it is long (PIL decoding, torch,
numpy, socket and SQLite I/O), and the model lives once per process; torch calls are
serialised by the model lock anyway, so more workers than a few add waiting, not speed.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from serving.errors import Overloaded

T = TypeVar("T")


class WorkerPool:
    """``workers`` threads and at most ``max_queue`` calls waiting for one.

    Args:
        workers: threads running calls.
        max_queue: calls admitted beyond the running ones; more are ``Overloaded``.
        retry_after_s: the ``Retry-After`` seconds of the refusal.

    Example::

        pool = WorkerPool(workers=4, max_queue=32)
        result = await pool.run(service.rank, user_id, item_ids)  # in an async endpoint
    """

    def __init__(self, workers: int, max_queue: int, retry_after_s: int = 1) -> None:
        if workers < 1 or max_queue < 0:
            raise ValueError(f"workers must be >= 1 and max_queue >= 0, got {workers}, {max_queue}")
        self.workers, self.max_queue, self.retry_after_s = workers, max_queue, retry_after_s
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="moon-worker")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting
        self._running = 0

    @property
    def capacity(self) -> int:
        return self.workers + self.max_queue

    def stats(self) -> dict[str, int]:
        """``busy`` (calls running), ``queued`` (admitted, waiting for a worker), and the
        bounds."""
        with self._lock:
            return {"busy": self._running, "queued": self._admitted - self._running,
                    "workers": self.workers, "max_queue": self.max_queue}

    def _admit(self) -> None:
        with self._lock:
            if self._admitted >= self.capacity:
                raise Overloaded(
                    f"overloaded: {self.workers} workers busy and {self.max_queue} requests "
                    f"waiting; retry in {self.retry_after_s} s", self.retry_after_s)
            self._admitted += 1

    def _release(self, _: Future[Any]) -> None:
        with self._lock:
            self._admitted -= 1

    def _call(self, fn: Callable[[], T]) -> T:
        with self._lock:
            self._running += 1
        try:
            return fn()
        finally:
            with self._lock:
                self._running -= 1

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on a worker; ``Overloaded`` at once when the pool is full.
        A call stays counted until it ends, even when its client has gone."""
        self._admit()
        try:
            future = self._executor.submit(self._call, functools.partial(fn, *args, **kwargs))
        except BaseException:
            with self._lock:
                self._admitted -= 1
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop taking calls; the running ones finish, the waiting ones are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)
