"""The worker pool's bound (issue 27), in process, by events rather than clocks. (The
store calls are not serialised: the stores' reads never wait on a write, see
tests/featurestore/test_sqlite_readers.py and tests/serving/test_writes.py.)"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from serving.errors import Overloaded
from serving.workers import WorkerPool


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
