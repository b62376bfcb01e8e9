"""The trainer runs like real training: checkpoints with model_version, negatives of
stage 2, resume after a SIGKILL, and a two-rank torchrun (gloo) run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moon_rec.encoders import MoonEncoder
from moon_rec.training.config import TrainConfig, load_config
from moon_rec.training.data import WorldData, load_world
from moon_rec.training.trainer import train_stage

FAST = ["pretrain.steps=4", "pretrain.batch_size=8", "pretrain.checkpoint_every=2",
        "pretrain.log_every=1", "encoder.hidden_size=32", "encoder.num_heads=2",
        "encoder.vocab_size=300"]


@pytest.fixture(scope="module")
def world(tiny_world: Path) -> WorldData:
    torch.set_num_threads(1)
    return load_world(tiny_world)


@pytest.fixture(scope="module")
def config() -> TrainConfig:
    return load_config("tiny", overrides=[*FAST, "stage2.steps=3", "stage2.batch_size=8",
                                          "stage2.queue_size=16", "stage2.hard_negatives=1",
                                          "stage2.resample_categories=200", "stage2.log_every=1"])


@pytest.fixture(scope="module")
def pretrained(world: WorldData, config: TrainConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "pretrain"
    train_stage(world, "pretrain", config, out, progress=False)
    return out


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_stage_writes_checkpoint_with_version(pretrained: Path) -> None:
    summary = json.loads((pretrained / "summary.json").read_text())
    enc = MoonEncoder.from_pretrained(pretrained / "encoder")
    assert summary["model_version"] == enc.model_version != summary["init_version"]
    state = torch.load(pretrained / "state" / "trainer.pt", weights_only=False)
    assert state["step"] == 2 and len(state["model_version"]) == 12
    log = _log(pretrained)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and r["pairs_per_s"] > 0 for r in log)


def test_stage2_uses_hard_and_queue_negatives(world: WorldData, config: TrainConfig,
                                              pretrained: Path, tmp_path: Path) -> None:
    summary = train_stage(world, "stage2", config, tmp_path / "s2", init=pretrained, progress=False)
    assert summary["init_version"] == json.loads((pretrained / "summary.json").read_text())["model_version"]
    assert set(summary["pairs"]) <= {"photo_product", "aug_product", "text_product"}
    log = _log(tmp_path / "s2")
    first, last = log[0], log[-1]
    assert first["queue_negatives"] == 0  # nothing queued before the first step
    assert last["queue_negatives"] == 16  # two earlier steps of 8 targets each
    assert last["hard_negatives"] > 0
    assert last["negatives_per_query"] == 8 - 1 + last["hard_negatives"] + 16


def _cli(out: Path, world: Path, extra_env: dict[str, str] | None = None,
         runner: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [*(runner or [sys.executable]), "-m", "moon_rec.cli", "encoder", "pretrain",
           "--world", str(world), "--out", str(out), "--preset", "tiny", "--quiet"]
    for o in FAST:
        cmd += ["--set", o]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(extra_env or {})}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


# ``moon encoder pretrain`` in a fresh interpreter (the same config as ``_cli``), SIGKILLed by
# its own step hook once step 2's checkpoint is on disk (the hook of step 3 runs after it).
_KILL_AT_STEP_3 = """
import os, signal, sys
from moon_rec.training.config import load_config
from moon_rec.training.trainer import train_stage

def kill(step, encoder):
    if step == 3:
        os.kill(os.getpid(), signal.SIGKILL)

train_stage(sys.argv[1], "pretrain", load_config("tiny", overrides=sys.argv[3:]), sys.argv[2],
            progress=False, on_step=kill)
"""


def _killed_after_checkpoint(out: Path, world: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", _KILL_AT_STEP_3, str(world), str(out), *FAST],
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # two fresh interpreters importing torch + transformers
def test_resume_after_kill_matches_an_uninterrupted_run(tiny_world: Path, pretrained: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "killed"
    killed = _killed_after_checkpoint(out, tiny_world)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "encoder").exists()
    assert torch.load(out / "state" / "trainer.pt", weights_only=False)["step"] == 2
    resumed = _cli(out, tiny_world)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == 2
    reference = json.loads((pretrained / "summary.json").read_text())
    assert summary["model_version"] == reference["model_version"]


@pytest.mark.slow  # two ranks started by torchrun
def test_two_rank_torchrun_uses_all_gathered_negatives(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    run = _cli(out, tiny_world, runner=[sys.executable, "-m", "torch.distributed.run",
                                        "--standalone", "--nproc_per_node", "2"])
    assert run.returncode == 0, run.stderr[-3000:]
    log = _log(out)
    assert all(r["world_size"] == 2 for r in log)
    # each query sees its 7 in-batch negatives plus the other rank's 8 targets
    assert all(r["spatial_negatives"] == 8 and r["negatives_per_query"] == 15 for r in log)
    assert log[-1]["loss"] < log[0]["loss"] * 1.5
    versions = {json.loads((out / f"rank{r}.json").read_text())["model_version"] for r in (0, 1)}
    assert len(versions) == 1  # DDP kept the replicas identical
    assert MoonEncoder.from_pretrained(out / "encoder").model_version in versions


def test_mllm_pretrain_with_title_generation(world: WorldData, tmp_path: Path) -> None:
    from moon_rec.encoders.mllm import MllmEncoder

    cfg = load_config("tiny_mllm", overrides=["pretrain.steps=2", "pretrain.batch_size=6",
                                               "pretrain.log_every=1", "encoder.hidden_size=32"])
    assert cfg.pretrain.caption_weight > 0
    summary = train_stage(world, "pretrain", cfg, tmp_path / "mllm", progress=False)
    enc = MoonEncoder.from_pretrained(tmp_path / "mllm" / "encoder")
    assert isinstance(enc, MllmEncoder) and enc.model_version == summary["model_version"]
    assert len(_log(tmp_path / "mllm")) == 2


def test_stage2_with_mined_hard_negatives(world: WorldData, config: TrainConfig,
                                          pretrained: Path, tmp_path: Path) -> None:
    cfg = config.model_copy(deep=True)
    cfg.stage2 = cfg.stage2.model_copy(update={"hard_negative_source": "mined",
                                               "hard_negative_pool": 5, "checkpoint_every": 2})
    train_stage(world, "stage2", cfg, tmp_path / "mined", init=pretrained, progress=False)
    log = _log(tmp_path / "mined")
    assert all(r["hard_negatives"] == 8 for r in log)
    state = torch.load(tmp_path / "mined" / "state" / "trainer.pt", weights_only=False)
    assert state["mined"].shape[1] == 5  # resume reuses the same neighbours


def test_co_engaged_pairs_with_their_own_tau_and_attribute_negatives(
        world: WorldData, config: TrainConfig, pretrained: Path, tmp_path: Path) -> None:
    cfg = config.model_copy(deep=True)
    cfg.stage2 = cfg.stage2.model_copy(update={
        "mix": {"co_engaged": 1.0, "aug_product": 1.0}, "actions": None,
        "kind_temperature": {"co_engaged": 0.2}, "hard_negative_source": "attribute",
        "hard_negative_attribute": "color", "queue_size": 0, "resample_categories": 0})
    summary = train_stage(world, "stage2", cfg, tmp_path / "look", init=pretrained,
                          progress=False)
    assert summary["pairs"]["co_engaged"] > 0
    log = _log(tmp_path / "look")
    assert all(math.isfinite(r["loss"]) for r in log)
    assert any(r["hard_negatives"] > 0 for r in log)


def test_learned_temperature_and_category_batches(world: WorldData, config: TrainConfig,
                                                  tmp_path: Path) -> None:
    cfg = config.model_copy(deep=True)
    cfg.pretrain = cfg.pretrain.model_copy(update={"learn_temperature": True,
                                                   "batch_categories": 2, "lr": 0.05})
    train_stage(world, "pretrain", cfg, tmp_path / "lt", progress=False)
    temps = [r["temperature"] for r in _log(tmp_path / "lt")]
    assert len(temps) == 4 and temps[0] != temps[-1] and all(0.01 <= t <= 1 for t in temps)
    state = torch.load(tmp_path / "lt" / "state" / "trainer.pt", weights_only=False)
    assert isinstance(state["log_scale"], float)


def test_finished_stage_is_not_retrained(world: WorldData, config: TrainConfig,
                                         pretrained: Path) -> None:
    before = (pretrained / "summary.json").read_text()
    again = train_stage(world, "pretrain", config, pretrained, progress=False)
    assert again["model_version"] == json.loads(before)["model_version"]
    assert (pretrained / "summary.json").read_text() == before
    # the threads and the cache switches change the speed, not the result: still finished
    faster = config.model_copy(update={
        "threads": config.threads + 1,
        "pretrain": config.pretrain.model_copy(update={"cache_frozen_image": False,
                                                       "cache_frozen_text": False})})
    train_stage(world, "pretrain", faster, pretrained, progress=False)
    assert (pretrained / "summary.json").read_text() == before
