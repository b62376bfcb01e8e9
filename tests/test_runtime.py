"""moon_rec.runtime: atomic writes, the single-process group, CPU threads and OpenMP policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moon_rec import runtime

ROOT = Path(__file__).resolve().parents[1]


class Boom(RuntimeError):
    pass


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- atomic writes -------------------------------------------------------------------------


def test_atomic_writes_of_bytes_text_and_json(tmp_path: Path) -> None:
    runtime.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    runtime.atomic_write_text(tmp_path / "sub" / "b.txt", "héllo\n")  # parents created
    runtime.atomic_write_json(tmp_path / "c.json", {"b": 1, "a": Path("/x")}, default=str)
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "c.json").read_text() == '{\n  "a": "/x",\n  "b": 1\n}\n'
    runtime.atomic_write_text(tmp_path / "sub" / "b.txt", "new")  # replaces
    assert (tmp_path / "sub" / "b.txt").read_text() == "new"
    assert _names(tmp_path) == ["a.bin", "c.json", "sub"]  # no temp file left


def test_atomic_write_keeps_the_usual_permissions(tmp_path: Path) -> None:
    plain, atomic = tmp_path / "plain", tmp_path / "atomic"
    plain.write_text("x")
    runtime.atomic_write_text(atomic, "x")
    assert atomic.stat().st_mode == plain.stat().st_mode


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "table.parquet"
    target.write_bytes(b"old")
    with pytest.raises(Boom), runtime.atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise Boom
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["table.parquet"]
    with pytest.raises(TypeError):  # a writer failing mid-way (not bytes)
        runtime.atomic_write_bytes(target, "text")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["table.parquet"]


def test_a_failed_first_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(Boom), runtime.atomic_path(tmp_path / "new.pt") as tmp:
        tmp.write_bytes(b"partial")
        raise Boom
    assert _names(tmp_path) == []


def test_atomic_path_with_a_real_writer(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with runtime.atomic_path(tmp_path / "t.parquet") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".t.parquet.")
        pq.write_table(pa.table({"x": [1, 2]}), tmp)
    assert pq.read_table(tmp_path / "t.parquet").column("x").to_pylist() == [1, 2]
    assert _names(tmp_path) == ["t.parquet"]


def test_atomic_dir_replaces_a_directory_whole(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with runtime.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(Boom), runtime.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v2-partial")
        raise Boom
    assert (target / "weights").read_text() == "v1" and _names(tmp_path) == ["ckpt"]
    with runtime.atomic_dir(target) as tmp:
        (tmp / "other").write_text("v3")
    assert _names(target) == ["other"] and _names(tmp_path) == ["ckpt"]


def test_atomic_dir_clears_a_stale_old_copy(tmp_path: Path) -> None:
    # a crash between the two renames of an earlier swap left ckpt.old and no ckpt
    (tmp_path / "ckpt.old").mkdir()
    with runtime.atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "f").write_text("x")
    assert _names(tmp_path) == ["ckpt"]


# -- process group -------------------------------------------------------------------------


def test_single_process_group_is_created_and_destroyed(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    import torch.distributed as dist

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not dist.is_initialized()
    with runtime.process_group("cpu") as env:
        assert dist.is_initialized() and env.created
        assert (env.rank, env.world_size, env.local_rank) == (0, 1, 0) and env.is_main
        assert env.backend == "gloo" and env.device == torch.device("cpu")
        assert runtime.rank() == 0 and runtime.world_size() == 1
        runtime.barrier()
        with runtime.process_group("cpu") as inner:  # an existing group is reused
            assert not inner.created
        assert dist.is_initialized()
        t = torch.ones(2)
        dist.all_reduce(t)
        assert t.tolist() == [1.0, 1.0]
    assert not dist.is_initialized()


def test_without_a_group_one_process_is_rank_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    env = runtime.join_process_group("cpu", single_process=False)
    assert not dist.is_initialized() and env.backend is None and not env.created
    assert (env.rank, env.world_size) == (0, 1)
    runtime.barrier()  # a no-op
    runtime.leave_process_group(env)  # a no-op
    assert runtime.rank() == 0 and runtime.world_size() == 1


def test_backend_follows_the_device() -> None:
    assert runtime.backend_for("cpu") == "gloo"
    assert runtime.backend_for("cuda") == "nccl"
    assert runtime.backend_for("cuda:1") == "nccl"


# -- CPU threads ---------------------------------------------------------------------------


def test_set_threads_sets_torch_and_returns_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv(runtime.WAIT_POLICY, "PASSIVE")
    try:
        assert runtime.set_threads(1) == 1 and torch.get_num_threads() == 1
        assert runtime.set_threads(2) == 2 and torch.get_num_threads() == 2  # as asked
        monkeypatch.setattr(runtime, "free_cores", lambda: 1)
        assert runtime.set_threads(0) == 1  # 0: the free cores
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads: -1"):
        runtime.set_threads(-1)


def test_spinning_threads_are_cut_to_the_free_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.WAIT_POLICY, raising=False)
    monkeypatch.setattr(runtime, "free_cores", lambda: 1)
    assert runtime.choose_threads(2) == 1  # busy machine, OpenMP spins: fewer threads
    monkeypatch.setenv(runtime.WAIT_POLICY, "passive")
    assert runtime.choose_threads(2) == 2  # sleeping threads share the cores gracefully
    monkeypatch.setattr(runtime, "free_cores", lambda: 4)
    monkeypatch.delenv(runtime.WAIT_POLICY)
    assert runtime.choose_threads(2) == 2


def test_free_cores_reads_the_load_average(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "usable_cores", lambda: 4)
    for load, free in [(0.2, 4), (1.6, 2), (3.9, 1), (12.0, 1)]:
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        assert runtime.free_cores() == free


def _fresh_python(code: str, **env: str) -> dict[str, object]:
    base = {k: v for k, v in os.environ.items() if k != runtime.WAIT_POLICY}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True, timeout=120)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_importing_moon_rec_first_makes_openmp_passive() -> None:
    code = ("import json, os, moon_rec; "
            "print(json.dumps({'policy': os.environ.get('OMP_WAIT_POLICY')}))")
    assert _fresh_python(code) == {"policy": "PASSIVE"}
    # an explicit choice in the environment wins
    assert _fresh_python(code, OMP_WAIT_POLICY="ACTIVE") == {"policy": "ACTIVE"}
    # torch first: too late for this process, so left alone (and set_threads knows it)
    late = ("import json, os, torch, moon_rec; from moon_rec import runtime; "
            "print(json.dumps({'policy': os.environ.get('OMP_WAIT_POLICY'), "
            "'passive': runtime.passive_wait()}))")
    assert _fresh_python(late) == {"policy": None, "passive": False}
