"""Training configs: presets as data, strict keys, overrides, clear CLI errors."""

from __future__ import annotations

import pytest

from moon_rec.cli import main
from moon_rec.training.config import load_config


def test_presets_load_and_differ() -> None:
    tiny, small = load_config("tiny"), load_config("small")
    assert tiny.preset == "tiny" and small.preset == "small"
    assert small.stage1.steps > tiny.stage1.steps
    assert small.encoder.dims == (32, 64, 128, 256)
    assert small.stage2.actions == ["buy"] and small.stage2.hard_negatives > 0


def test_overrides_are_yaml_values() -> None:
    cfg = load_config("tiny", overrides=["stage1.steps=7", "stage2.loss=circle",
                                         "stage1.mix={aug_product: 1.0}"])
    assert cfg.stage1.steps == 7 and cfg.stage2.loss == "circle"
    assert cfg.stage1.mix == {"aug_product": 1.0}


@pytest.mark.parametrize("override, message", [
    ("stage1.stepz=3", "stepz"),
    ("stage1.mix={photo_selfie: 1.0}", "unknown pair kinds"),
    ("encoder.dims=[32, 64]", "must end at embed_dim"),
    ("stage2.loss=triplet", "loss"),
    ("stage2.kind_temperature={co_engagd: 0.2}", "kind_temperature: unknown pair kinds"),
    ("stage2.kind_temperature={co_engaged: 0}", "tau must be > 0"),
    ("stage2.hard_negative_source=colour", "hard_negative_source"),
])
def test_typos_are_errors(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config("tiny", overrides=[override])


def test_cli_errors_exit_2(tmp_path, capsys) -> None:
    status = main(["encoder", "pretrain", "--world", str(tmp_path), "--out", str(tmp_path / "o"),
                   "--preset", "nope"])
    assert status == 2
    assert "error: unknown preset 'nope'" in capsys.readouterr().err
    status = main(["encoder", "pretrain", "--world", str(tmp_path / "missing"),
                   "--out", str(tmp_path / "o"), "--preset", "tiny"])
    assert status == 2
    assert "error:" in capsys.readouterr().err
