"""Behaviour appends and the item change log on both profiles: every event kept, in
event-time order, from any number of processes (issue 14)."""

from __future__ import annotations

import multiprocessing as mp
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from moon_rec.data.errors import DataError

TS = pa.timestamp("us", tz="UTC")


def _events(user: int, items: list[int], times: list[datetime]) -> pa.Table:
    return pa.table({
        "user_id": pa.array([user] * len(items), pa.int64()),
        "item_id": pa.array(items, pa.int64()),
        "ts": pa.array(times, TS),
        "action": ["click"] * len(items),
    })


def _history(mfs: Any, user: int) -> tuple[list[int], list[int]]:
    from moon_rec.featurestore.online import OnlineFeatureClient

    seq = OnlineFeatureClient(mfs).user_sequences([user])
    n = int(seq.lengths[0])
    return seq.item_ids[0, :n].tolist(), seq.ts[0, :n].tolist()


def test_every_event_is_kept_in_event_time_order(make_store: Any) -> None:
    from moon_rec.featurestore.push import OnlineWriter

    mfs = make_store(seq_len=10)
    writer = OnlineWriter(mfs)
    now = datetime.now(UTC).replace(microsecond=500_000)
    hour, ms = timedelta(hours=1), timedelta(milliseconds=10)
    # the case: now, an hour ago, 10 ms before that (one second, or two)
    for item, when in ((1, now), (2, now - hour), (3, now - hour - ms)):
        writer.append_behaviour(_events(7, [item], [when]), {})
    assert _history(mfs, 7)[0] == [1, 2, 3]
    # within one second, ordered by the microseconds kept beside the row
    writer.append_behaviour(_events(7, [4], [now - hour + ms]), {})
    assert _history(mfs, 7)[0] == [1, 4, 2, 3]
    # equal times: all kept, the later-acknowledged first
    writer.append_behaviour(_events(8, [5, 6], [now, now]), {})
    writer.append_behaviour(_events(8, [7], [now]), {})
    items, times = _history(mfs, 8)
    assert items == [7, 6, 5] and len(set(times)) == 1
    # an event far in the future stays the newest, later events still append
    writer.append_behaviour(_events(9, [1], [datetime(3000, 1, 1, tzinfo=UTC)]), {})
    writer.append_behaviour(_events(9, [2, 3], [now, now - ms]), {})
    assert _history(mfs, 9)[0] == [1, 2, 3]
    # L = 10 keeps the newest ten
    writer.append_behaviour(_events(10, list(range(12)), [now - k * ms for k in range(12)]), {})
    assert _history(mfs, 10)[0] == list(range(10))


def test_an_event_past_year_9999_is_a_data_error_naming_ts(make_store: Any) -> None:
    from moon_rec.featurestore.push import OnlineWriter

    mfs = make_store()
    last = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    with pytest.raises(DataError, match="ts"):
        OnlineWriter(mfs).append_behaviour(_events(1, [1], [last]), {})


def test_an_append_applied_twice_adds_its_events_once() -> None:
    from moon_rec.featurestore.push import BehaviourEvent, append_update

    new = [BehaviourEvent(1_000_000, 5, 1, "click", 42), BehaviourEvent(2_000_000, 6, 1, "buy", 43)]
    once = append_update(None, new, cap=10)
    twice = append_update(once, new, cap=10)  # a retried transaction whose first try landed
    assert twice.values["hist_item_ids"].int64_list_val.val == [6, 5]
    assert twice.event_us > once.event_us


def _append_many(args: tuple[str, str, Any, str, int, list[tuple[int, int]]]) -> int:
    """A child process: open the store and append ``events`` one request at a time."""
    import os

    from moon_rec.featurestore.push import OnlineWriter
    from moon_rec.featurestore.store import open_store

    profile, state, paths, project, user, events = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mfs = open_store(profile, state, paths, project=project, apply=False)
    writer = OnlineWriter(mfs)
    for item, us in events:
        ts = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
        writer.append_behaviour(_events(user, [item], [ts]), {})
    return len(events)


def test_two_processes_appending_for_one_user_keep_all_100_events(
    make_store: Any, profile: str, tmp_path: Path
) -> None:
    mfs = make_store(seq_len=128)
    base = int(datetime.now(UTC).timestamp() * 1e6)
    events = [(i, base - 7_000 * i) for i in range(100)]  # 7 ms apart
    state = str(Path(mfs.config.repo_path))
    jobs = [(profile, state, mfs.paths, mfs.config.project, 3, events[k::2]) for k in range(2)]
    with mp.get_context("spawn").Pool(2) as pool:
        assert sum(pool.map(_append_many, jobs)) == 100
    items, _ = _history(mfs, 3)
    assert items == list(range(100))  # each once, most recent first


def test_the_item_change_log_lists_each_written_item_once(make_store: Any) -> None:
    from moon_rec.featurestore.push import OnlineWriter

    log = OnlineWriter(make_store()).changes
    assert log.read(0) == ([], 0)
    first = log.record([5, 6])
    second = log.record([6, 7])
    assert second > first
    ids, cursor = log.read(0)
    assert ids[0] == 5 and sorted(ids[1:]) == [6, 7]  # by last write; 6 and 7 share one
    assert cursor == second
    assert log.read(cursor) == ([], cursor)
    assert sorted(log.read(first)[0]) == [6, 7]
