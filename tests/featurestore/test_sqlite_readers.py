"""The SQLite store's readers never wait on a writer (issue 27, case 4): while another
process holds ``online.db``'s write lock, reads go on; a write of this process that waits
for the lock does not hold up this process's reads; a write that gives up is ``StoreBusy``
(serving: 503, the breaker stays closed)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from sqlite_lock import LockHolder


def _profile(tmp_path: Path, busy_timeout_s: float) -> Path:
    from moon_rec.featurestore.store import PROFILE_DIR

    body = (PROFILE_DIR / "embedded.yaml").read_text()
    path = tmp_path / f"embedded_busy{busy_timeout_s:g}.yaml"
    path.write_text(body.replace("  path: online.db\n",
                                 f"  path: online.db\n  busy_timeout_s: {busy_timeout_s}\n"))
    return path


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """One embedded store opened twice: a patient writer (waits 60 s for the lock) and an
    impatient one (0.2 s)."""
    from moon_rec.featurestore.layout import FeatureDataPaths
    from moon_rec.featurestore.store import open_store

    paths = FeatureDataPaths.from_dir(tmp_path / "data")
    project = f"t_{uuid.uuid4().hex[:12]}"
    patient = open_store(_profile(tmp_path, 60), tmp_path / "state", paths, project=project)
    impatient = open_store(_profile(tmp_path, 0.2), tmp_path / "state", paths, project=project,
                           apply=False)
    yield patient, impatient
    patient.teardown()


def _click(user: int, item: int, ts: datetime) -> pa.Table:
    return pa.table({"user_id": [user], "item_id": [item], "action": ["click"],
                     "ts": pa.array([ts], pa.timestamp("us", tz="UTC"))})


def test_reads_go_on_while_another_process_holds_the_write_lock(
    stores: tuple[Any, Any]
) -> None:
    from moon_rec.featurestore.online import OnlineFeatureClient
    from moon_rec.featurestore.push import OnlineWriter
    from moon_rec.featurestore.stores import StoreBusy

    patient, impatient = stores
    writer, client = OnlineWriter(patient), OnlineFeatureClient(patient)
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    writer.append_behaviour(_click(1, 10, t0), {10: 3})
    writer.changes.record([10])
    db = Path(patient.config.online_store.path)

    def history() -> list[int]:
        seq = client.user_sequences([1])
        return seq.item_ids[0, : int(seq.lengths[0])].tolist()

    with LockHolder(db):
        # a write of this process waits for the lock (60 s) ...
        done = threading.Event()

        def write() -> None:
            writer.append_behaviour(_click(1, 11, t0 + timedelta(seconds=1)), {11: 3})
            done.set()

        waiting = threading.Thread(target=write)
        waiting.start()
        # ... and this process's reads neither wait for it nor for the other process
        for _ in range(3):
            assert history() == [10]
            assert writer.changes.read(0)[0] == [10]
        assert not done.is_set(), "the reads returned only after the write"
        # a writer that gives up is StoreBusy (503 in serving), not an outage
        with pytest.raises(StoreBusy, match="write lock"):
            OnlineWriter(impatient).append_behaviour(
                _click(2, 12, t0 + timedelta(seconds=2)), {12: 3})
        assert history() == [10]
    waiting.join(timeout=120)
    assert done.is_set()
    assert history() == [11, 10]
