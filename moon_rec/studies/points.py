"""Resumable sweeps: one JSON file per finished point, written atomically.

A point is one unit of work of a study (an encoder version, its intermediate metrics, one
ranker run). Its file ``<study>/points/<kind>/<name>.json`` holds::

    {"kind", "name", "config" (everything the point depends on), "seed", "result",
     "seconds", "finished_at"}

so a point is reproducible from its file. A sweep skips a point whose file exists with the
same config; a changed config recomputes it. A killed sweep, run again, redoes only the
point that was in flight. One tqdm bar covers the whole sweep.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from moon_rec.runtime import atomic_write_json


def _normal(obj: Any) -> Any:
    """JSON round trip: tuples -> lists, Paths -> str, so configs compare as stored."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class PointStore:
    """The finished points of one study directory."""

    def __init__(self, study_dir: str | Path) -> None:
        self.root = Path(study_dir) / "points"

    def path(self, kind: str, name: str) -> Path:
        return self.root / kind / f"{name.replace('/', '--')}.json"

    def get(self, kind: str, name: str, config: Any | None = None) -> dict[str, Any] | None:
        """The point's record, or None when absent (or made with another ``config``)."""
        p = self.path(kind, name)
        if not p.is_file():
            return None
        rec: dict[str, Any] = json.loads(p.read_text())
        if config is not None and rec.get("config") != _normal(config):
            return None
        return rec

    def put(self, kind: str, name: str, config: Any, seed: int | None, result: dict[str, Any],
            seconds: float) -> dict[str, Any]:
        rec = {"kind": kind, "name": name, "config": _normal(config), "seed": seed,
               "result": _normal(result), "seconds": round(seconds, 2),
               "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
        atomic_write_json(self.path(kind, name), rec, default=str)
        return rec

    def all(self, kind: str) -> list[dict[str, Any]]:
        d = self.root / kind
        return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


@dataclass
class Point:
    """One unit of a sweep: ``run()`` returns the result dict."""

    kind: str
    name: str
    config: dict[str, Any]
    run: Callable[[], dict[str, Any]]
    seed: int | None = None
    needs: list[tuple[str, str]] = field(default_factory=list)


def run_sweep(store: PointStore, points: Iterable[Point], *, desc: str = "study",
              progress: bool = True, log: Callable[[str], None] | None = None,
              ) -> dict[tuple[str, str], dict[str, Any]]:
    """Run every point not finished yet, in order; returns (kind, name) -> record.

    Points with the same (kind, name) are run once. The bar counts all points, finished
    ones included, so it shows progress across the whole sweep.
    """
    todo: list[Point] = []
    seen: set[tuple[str, str]] = set()
    for p in points:
        if (p.kind, p.name) not in seen:
            seen.add((p.kind, p.name))
            todo.append(p)
    records: dict[tuple[str, str], dict[str, Any]] = {}
    done = 0
    for p in todo:
        rec = store.get(p.kind, p.name, p.config)
        if rec is not None:
            records[(p.kind, p.name)] = rec
            done += 1
    with tqdm(total=len(todo), initial=done, desc=desc, unit="point", disable=not progress,
              dynamic_ncols=True) as bar:
        for p in todo:
            if (p.kind, p.name) in records:
                continue
            bar.set_postfix_str(f"{p.kind}/{p.name}")
            t0 = time.time()
            result = p.run()
            records[(p.kind, p.name)] = store.put(p.kind, p.name, p.config, p.seed, result,
                                                  time.time() - t0)
            if log is not None:
                log(f"{p.kind}/{p.name}: {time.time() - t0:.1f}s")
            bar.update(1)
    return records
