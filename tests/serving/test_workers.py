"""The worker pool's bound and the serialised store calls (issue 27), in process, by
events rather than clocks."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from serving.errors import Overloaded
from serving.workers import SerialCalls, WorkerPool


def test_a_full_pool_refuses_at_once_and_frees_its_slots() -> None:
    pool = WorkerPool(workers=1, max_queue=1, retry_after_s=3)
    release = threading.Event()
    started = threading.Event()

    def blocked() -> str:
        started.set()
        release.wait()
        return "done"

    async def scenario() -> list[Any]:
        running = asyncio.ensure_future(pool.run(blocked))
        waiting = asyncio.ensure_future(pool.run(lambda: "queued"))
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        assert pool.stats() == {"busy": 1, "queued": 1, "workers": 1, "max_queue": 1}
        with pytest.raises(Overloaded) as info:
            await pool.run(lambda: "refused")
        assert info.value.status == 503 and info.value.headers == {"Retry-After": "3"}
        release.set()
        out = [await running, await waiting]
        out.append(await pool.run(lambda: "after"))  # the slots came back
        return out

    try:
        assert asyncio.run(scenario()) == ["done", "queued", "after"]
        assert pool.stats()["busy"] == 0 and pool.stats()["queued"] == 0
    finally:
        pool.close()


class _Store:
    """Records whether two calls ever ran at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.overlapped = False
        self.max_len = 7
        self.changes = self
        self.entered = threading.Event()
        self.second_entered = threading.Event()
        self.go_on = threading.Event()

    def read(self, first: bool) -> int:
        self.inside += 1
        self.overlapped |= self.inside > 1
        if first:
            self.entered.set()
            self.go_on.wait()
        else:
            self.second_entered.set()
        self.inside -= 1
        return 1

    record = read


def test_serial_calls_never_overlap_and_pass_attributes_through() -> None:
    store = _Store()
    serial = SerialCalls(store, threading.RLock(), nested=("changes",))
    assert serial.max_len == 7
    first = threading.Thread(target=serial.read, args=(True,))
    first.start()
    store.entered.wait()
    second = threading.Thread(target=serial.changes.record, args=(False,))
    second.start()
    # the second call waits on the lock while the first is inside (given a moment to get
    # in, were the calls not serialised)
    assert not store.second_entered.wait(0.2)
    store.go_on.set()
    first.join()
    second.join()
    assert store.second_entered.is_set() and not store.overlapped
