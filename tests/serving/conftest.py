"""Fixtures of the serving tests: the whole loop on the tiny world, built once per session
(untrained tiny encoder -> embed job -> feature tables -> Feast -> training set -> CUBE
ranker, one short epoch), and the real service on free loopback ports over the embedded
store (SQLite) and the production store (Redis on a private port + PostgreSQL registry)."""

from __future__ import annotations

import base64
import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from moon_rec.loop import ServingArtifacts

TRAIN = {"train": {"epochs": 1, "batch_size": 512}}
# the services under test require it for POST /items and /behaviors (issue 27)
WRITE_TOKEN = "test-write-token-0123456789"
AUTH = {"Authorization": f"Bearer {WRITE_TOKEN}"}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def serving_loop(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> ServingArtifacts:
    from moon_rec.loop import prepare_serving

    return prepare_serving(
        tiny_world, tmp_path_factory.mktemp("serving") / "loop", train_overrides=TRAIN
    )


@pytest.fixture(scope="session")
def world_ids(tiny_world: Path) -> dict[str, Any]:
    """Catalog item ids, a user with a short history and one with a long one."""
    items = pq.read_table(tiny_world / "items.parquet", columns=["item_id", "image"])
    beh = pq.read_table(tiny_world / "behaviors.parquet", columns=["user_id"]).column(0)
    users, counts = np.unique(beh.to_numpy(), return_counts=True)
    return {
        "items": items.column("item_id").to_pylist(),
        "image": items.column("image")[0].as_py(),
        "short_user": int(users[np.argmin(counts)]),
        "user": int(users[np.argmax(counts)]),
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def make_service(loop: ServingArtifacts, repo: Path | None = None, **config: Any) -> Any:
    from serving.service import RankingService, ServiceConfig

    config.setdefault("write_token", WRITE_TOKEN)
    return RankingService(
        loop.ranker, repo or loop.repo, encoder=loop.encoder,
        config=ServiceConfig(refresh_s=0, **config),
    )


def copy_store(
    loop: ServingArtifacts, dest: Path, model_version: str | None = None, embeddings: bool = False
) -> Path:
    """An isolated copy of the embedded store (SQLite + registry) with its own repo folder;
    ``model_version`` re-applies the definitions with another embedding tag; ``embeddings``
    copies the embedding snapshot too (the copy's repo reads it)."""
    from dataclasses import replace

    from moon_rec.featurestore.layout import FeatureDataPaths
    from moon_rec.featurestore.repo import write_feast_repo
    from moon_rec.featurestore.store import open_store

    state = dest / "state"
    shutil.copytree(loop.state, state)
    paths = FeatureDataPaths.from_json((loop.repo / "paths.json").read_text())
    if embeddings:
        shutil.copytree(loop.embeddings, dest / "embeddings")
        paths = replace(paths, item_embeddings=str(dest / "embeddings" / "part-*.parquet"))
    if model_version is not None:
        open_store("embedded", state, paths, project=loop.project, model_version=model_version,
                   seq_len=20)
    return write_feast_repo(dest / "repo", "embedded", state, loop.project, paths)


class RedisServer:
    """A private redis-server on a free loopback port, persisting to ``dir`` on SAVE, or
    (``aof``) to an append-only file synced on every write, so a kill -9 loses no
    acknowledged write."""

    def __init__(self, directory: Path, aof: bool = False) -> None:
        from serving.server import free_port

        self.dir, self.port, self.aof = directory, free_port(), aof
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        persist = (["--appendonly", "yes", "--appendfsync", "always"] if self.aof
                   else ["--appendonly", "no"])
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.dir), "--dbfilename", "dump.rdb", "--save", "", *persist],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if self.cli("ping") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args: str) -> str:
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                           text=True, check=False)
        return r.stdout.strip()

    def crash(self) -> None:
        """Snapshot to disk, then kill -9 (the data comes back on start)."""
        self.cli("save")
        self.kill()

    def kill(self) -> None:
        """kill -9, no snapshot first."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def production_repo(
    serving_loop: ServingArtifacts, redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    """The loop's data published to the production profile (private Redis, SQL registry
    on the loopback PostgreSQL) under a fresh project."""
    import os

    from moon_rec.featurestore.layout import FeatureDataPaths
    from moon_rec.featurestore.repo import publish_store

    old = os.environ.get("MOON_REDIS")
    os.environ["MOON_REDIS"] = f"127.0.0.1:{redis_server.port}"
    root = tmp_path_factory.mktemp("prod")
    paths = FeatureDataPaths.from_json((serving_loop.repo / "paths.json").read_text())
    project = f"t_{uuid.uuid4().hex[:12]}"
    try:
        repo, _ = publish_store(paths, root / "state", root / "repo", profile="production",
                                project=project, seq_len=20)
    finally:
        if old is None:
            os.environ.pop("MOON_REDIS", None)
        else:
            os.environ["MOON_REDIS"] = old
    yield repo
    from serving.service import open_repo_store

    # drop this project's rows in the shared services (not Feast's teardown: it drops
    # every project of the shared SQL registry)
    with contextlib.suppress(Exception):
        open_repo_store(repo).teardown()


class ServeProcess:
    """``moon serve`` in a subprocess on a free loopback port (its output in ``log``), with
    the write token ``token`` (``MOON_WRITE_TOKEN``; None: no token, writes refused)."""

    def __init__(self, loop: ServingArtifacts, repo: Path, log: Path, *extra: str,
                 token: str | None = WRITE_TOKEN) -> None:
        import os
        import sys

        from serving.server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "moon_rec.cli", "serve", "--model", str(loop.ranker),
               "--repo", str(repo), "--encoder", str(loop.encoder), "--port", str(self.port),
               "--allow-unknown-users", *extra]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        env.pop("MOON_WRITE_TOKEN", None)
        if token is not None:
            env["MOON_WRITE_TOKEN"] = token
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 300.0) -> ServeProcess:
        from serving.server import wait_healthy

        wait_healthy(self.url, self.proc, timeout=timeout, log=self.log)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def publish_wide(
    loop: ServingArtifacts, root: Path, profile: str, seq_len: int = 128
) -> Path:
    """The loop's data published to a fresh project of ``profile`` whose behaviour
    sequences hold ``seq_len`` events (room to count 100 appended events); returns the
    repo folder. The production profile goes to ``MOON_REDIS`` (set by the caller)."""
    from moon_rec.featurestore.layout import FeatureDataPaths
    from moon_rec.featurestore.repo import publish_store

    paths = FeatureDataPaths.from_json((loop.repo / "paths.json").read_text())
    repo, _ = publish_store(paths, root / "state", root / "repo", profile=profile,
                            project=f"t_{uuid.uuid4().hex[:12]}", seq_len=seq_len)
    return repo
