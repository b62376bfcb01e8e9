"""The process's runtime: the collective process group, CPU threads and atomic file writes.

The lowest layer of moon_rec: it imports nothing from the package, and torch only inside
functions, because :func:`configure_cpu` must run before torch (or faiss) loads OpenMP.

- Process group: :func:`join_process_group` joins the ``torchrun`` group from the
  environment (nccl on CUDA, gloo on CPU) or, for one process, creates a private
  single-rank group (a ``HashStore``) when the caller needs one (TorchRec's sharding does);
  :func:`leave_process_group` destroys only a group created here. :func:`rank`,
  :func:`world_size` and :func:`barrier` work with or without a group.
- CPU threads: :func:`configure_cpu` (first thing in a process) makes OpenMP's idle
  threads sleep instead of spin; :func:`set_threads` sets torch's and faiss's intra-op
  threads from a config or flag value (0: fit the cores the load average leaves free).
  Why: libgomp's default wait policy spins at every barrier for ~300k iterations before it
  sleeps; when another job holds the cores, a spinning thread burns the timeslice its
  partner thread needs to reach the barrier, and small ops (a small encoder's step is
  thousands of them) then wait a scheduler tick each. ``benchmarks/cpu_contention.py``
  measures it.
- Atomic writes: :func:`atomic_write_bytes`, :func:`atomic_write_text`,
  :func:`atomic_write_json`, :func:`atomic_path` (a temp path for pyarrow / torch writers)
  and :func:`atomic_dir` (a temp directory swapped in whole): a reader or a crash sees the
  old file or the new one, never a partial one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# -- process group -------------------------------------------------------------------------


@dataclass(frozen=True)
class DistributedEnv:
    """Where this process runs.

    Args:
        rank, world_size, local_rank: this process's place in the group (0, 1, 0 alone).
        device: the device its tensors live on (``cuda:<local_rank>`` or ``cpu``).
        backend: ``nccl``, ``gloo``, or ``None`` when no process group is initialised.
        created: True when :func:`join_process_group` created the group (and
            :func:`leave_process_group` will destroy it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None
    created: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the environment names a rank and a world (``torchrun`` sets both)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def backend_for(device: str | torch.device) -> str:
    """The collective backend of ``device``: nccl for CUDA, gloo otherwise."""
    import torch

    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def join_process_group(
    device: str | torch.device | None = None, *, single_process: bool = True
) -> DistributedEnv:
    """Join this run's process group, or create one.

    Args:
        device: where the caller computes (``cuda``, ``cuda:1``, ``cpu``); None: CUDA when
            available. The backend follows it (nccl for CUDA, gloo for CPU); under torchrun
            a CUDA device is the process's ``LOCAL_RANK`` GPU, made current.
        single_process: without torchrun, create a private single-rank group (HashStore,
            world size 1), e.g. for TorchRec's sharding; False leaves one process without
            a group (collectives are then skipped by :func:`barrier` and the callers).

    Returns:
        the DistributedEnv. An existing group is reused (``created`` False).
    """
    import torch
    import torch.distributed as dist

    global _OWN_GROUP
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    joined = dist.is_initialized()
    torchrun = launched_by_torchrun()
    if not (joined or torchrun or single_process):
        return DistributedEnv(0, 1, 0, dev, None)  # one process, no group: nothing to set up
    if dev.type == "cuda":
        if dev.index is None:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            dev = torch.device("cuda", local if torchrun else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    created = False
    if not joined:
        backend = backend_for(dev)
        if torchrun:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        created = _OWN_GROUP = True
    rank_ = dist.get_rank()
    return DistributedEnv(rank_, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank_)),
                          dev, str(dist.get_backend()), created)


_OWN_GROUP = False  # the initialised group was created by join_process_group


def leave_process_group(env: DistributedEnv | None = None) -> None:
    """Destroy the process group if :func:`join_process_group` created it (``env``: that
    join's result, a no-op unless it created the group; None: whatever group this module
    created). Idempotent."""
    import torch.distributed as dist

    global _OWN_GROUP
    if env is not None and not env.created:
        return
    if _OWN_GROUP and dist.is_initialized():
        dist.destroy_process_group()
    _OWN_GROUP = False


@contextlib.contextmanager
def process_group(
    device: str | torch.device | None = None, *, single_process: bool = True
) -> Iterator[DistributedEnv]:
    """:func:`join_process_group` for the duration of a ``with`` block; a group created
    here is destroyed on exit, an existing one is left as it was."""
    env = join_process_group(device, single_process=single_process)
    try:
        yield env
    finally:
        leave_process_group(env)


def rank() -> int:
    """This process's rank in the initialised group (0 without one)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The initialised group's size (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    """Wait for every rank; a no-op without a process group or with one rank."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    if dist.get_backend() == "nccl":  # name the GPU: nccl cannot tell which one we use
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


# -- CPU threads ---------------------------------------------------------------------------

WAIT_POLICY = "OMP_WAIT_POLICY"
_OPENMP_MODULES = ("torch", "faiss")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; the CPU count elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_cores() -> int:
    """The usable cores that the 1-minute load average leaves free, at least 1.

    The load average counts this process too once it has run a while, so ask before the
    work starts.
    """
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores
    return max(1, min(cores, cores - math.floor(load + 0.5)))


def passive_wait() -> bool:
    """True when OpenMP's idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``, read by OpenMP
    when it loads)."""
    return os.environ.get(WAIT_POLICY, "").strip().upper() == "PASSIVE"


def configure_cpu(threads: int | None = None, *, quiet: bool = False) -> int | None:
    """Prepare OpenMP for a shared machine. Call first thing in a process: before torch or
    faiss is imported (OpenMP reads its environment once, when it loads). ``import
    moon_rec`` already calls it (quietly), so this only matters for a process that imports
    torch first, or to set the threads at the same time.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already names a policy (child
    processes inherit it), and with ``threads``, the intra-op threads (:func:`set_threads`,
    which imports torch).

    Args:
        threads: None: leave the thread count to a later :func:`set_threads`; >= 1 that
            many; 0: :func:`free_cores`.
        quiet: no warning when torch or faiss is already imported (the policy is then
            left alone: this process spins anyway, and :func:`set_threads` knows it).

    Returns:
        the thread count set, or None.
    """
    if WAIT_POLICY not in os.environ:
        loaded = [m for m in _OPENMP_MODULES if m in sys.modules]
        if not loaded:
            os.environ[WAIT_POLICY] = "PASSIVE"
        elif not quiet:
            log.warning("configure_cpu: %s already imported, OpenMP keeps its default "
                        "(spinning) wait policy; call configure_cpu before importing them",
                        ", ".join(loaded))
    return None if threads is None else set_threads(threads)


def choose_threads(threads: int) -> int:
    """The intra-op thread count for a config or flag value ``threads``.

    0 means :func:`free_cores`. A count above the free cores is also cut to them when
    OpenMP spins (:func:`configure_cpu` did not run first), since spinning threads on
    shared cores slow every thread down more than fewer threads would.
    """
    if threads < 0:
        raise ValueError(f"threads: {threads} (give a count >= 1, or 0 for the free cores)")
    if threads == 0:
        return free_cores()
    if not passive_wait():
        free = free_cores()
        if threads > free:
            log.info("threads: %d asked, %d free cores and OpenMP spins: using %d",
                     threads, free, free)
            return free
    return threads


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads (and faiss's, when faiss is imported).

    Args:
        threads: the config or flag value (see :func:`choose_threads`; 0: the free cores).

    Returns:
        the count set.
    """
    import torch

    n = choose_threads(threads)
    torch.set_num_threads(n)
    faiss = sys.modules.get("faiss")
    if faiss is not None and hasattr(faiss, "omp_set_num_threads"):
        faiss.omp_set_num_threads(n)
    return n


# -- atomic writes -------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    """A fresh hidden name beside ``path`` (unique per process and call, so concurrent
    writers of one path never share a temp file; hidden, so part globs skip it). Created
    by the writer, so it gets the usual permissions (``mkstemp`` would make it 0600)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path beside ``path`` to write to (pyarrow, torch.save, any writer); on a clean
    exit it is fsynced and renamed onto ``path``, on an exception removed.

    Example::

        with atomic_path(out / "part-00000.parquet") as tmp:
            pq.write_table(table, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any, *, default: Any = None) -> Path:
    """Write ``data`` as indented, key-sorted JSON plus a newline, atomically; ``default``
    as in ``json.dumps`` (e.g. ``str`` for Paths and timestamps). Returns ``path``."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True,
                                              default=default) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A temp directory beside ``path`` to fill; on a clean exit it replaces ``path`` whole
    (a previous ``path`` is moved aside first, then removed), on an exception it is removed.

    A crash between the two renames leaves ``<path>.old`` and no ``path``; readers that
    must survive that look for ``.old`` (the encoder trainer's resume does).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        old = path.with_name(path.name + ".old")
        if path.exists():
            _remove(old)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        _remove(old)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    """Delete a file or a directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
