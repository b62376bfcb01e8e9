"""``feature_repo/`` works with the ``feast`` CLI as is, from any working directory:
apply, materialize-incremental and serve, on the embedded and production profiles."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fs_data import embedding_table

from moon_rec.featurestore.repo import FEATURE_REPO

FEAST = str(Path(sys.executable).with_name("feast"))


def _copy_repo(root: Path, profile: str) -> tuple[Path, list[str]]:
    """A copy of feature_repo/ (its relative state path lands in root/artifacts)."""
    repo = root / "feature_repo"
    shutil.copytree(FEATURE_REPO, repo, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "artifacts" / "feature_repo").mkdir(parents=True)
    args = ["-c", str(repo)]
    if profile == "production":
        yaml_path = repo / "production" / "feature_store.yaml"
        text = yaml_path.read_text().replace("project: moon", f"project: t_{uuid.uuid4().hex[:10]}")
        yaml_path.write_text(text)
        args += ["-f", str(yaml_path)]
    return repo, args


def _feast(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [FEAST, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_feast_cli_apply_materialize_serve(tmp_path: Path, profile: str, time0: datetime) -> None:
    data = tmp_path / "data"
    (data / "item_embeddings").mkdir(parents=True)
    emb = embedding_table([1, 2, 3], time0, "v1", seed=3)
    pq.write_table(emb, data / "item_embeddings" / "part-00000.parquet")
    _, args = _copy_repo(tmp_path / "checkout", profile)
    elsewhere = tmp_path / "elsewhere"  # cwd must not matter
    elsewhere.mkdir()
    env = {**os.environ, "MOON_FEATURE_DATA": str(data)}
    try:
        _feast([*args, "apply"], env, elsewhere)
        # one FeatureService per feature spec, applied with the repository
        services = _feast([*args, "feature-services", "list"], env, elsewhere)
        assert "moon_ids" in services and "moon_full" in services
        _feast(
            [*args, "materialize-incremental", "2030-01-01T00:00:00", "--views", "item_embedding"],
            env,
            elsewhere,
        )
        port = _free_port()
        server = subprocess.Popen(
            [FEAST, *args, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=elsewhere,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            body = json.dumps(
                {
                    "features": ["item_embedding:emb_32", "item_embedding:model_version"],
                    "entities": {"item_id": [2, 9]},
                }
            ).encode()
            reply = None
            deadline = time.monotonic() + 240  # a loaded 2-core machine starts it slowly
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    req = urllib.request.Request(
                        f"http://127.0.0.1:{port}/get-online-features",
                        data=body,
                        headers={"Content-Type": "application/json"},
                    )
                    reply = json.loads(urllib.request.urlopen(req, timeout=5).read())
                    break
                except OSError:
                    time.sleep(0.5)
            assert reply is not None, "feast serve did not answer"
        finally:
            server.terminate()
            server.wait(timeout=30)
        names = reply["metadata"]["feature_names"]
        values = dict(zip(names, (r["values"] for r in reply["results"]), strict=True))
        assert values["model_version"] == ["v1", None]
        want = np.array(emb.column("emb_32")[1].as_py(), dtype=np.float32)
        np.testing.assert_allclose(values["emb_32"][0], want, rtol=1e-6)
        assert values["emb_32"][1] is None
    finally:
        if profile == "production":
            subprocess.run(
                [FEAST, *args, "teardown"], env=env, cwd=elsewhere, capture_output=True, timeout=300
            )
