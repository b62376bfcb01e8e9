"""Study configs: the presets load, the versions span the recipe and its variants, the
candidate metrics say whether a real catalog can compute them, and bad keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from moon_rec.studies.config import METRICS, load_study_config, metric_info
from moon_rec.studies.runs import encoder_versions


def test_small_preset_versions_span_the_recipe_and_its_variants() -> None:
    cfg = load_study_config("small")
    versions = {v.name: v for v in encoder_versions(cfg)}
    assert len(versions) >= 12 and len(cfg.ranker.seeds) >= 3
    assert {"untrained", "pretrain", "stage1", "stage2", "text_only", "image_only",
            "no_matryoshka", "no_hard_negatives"} <= set(versions)
    tokens = sorted(v.pairs_seen for v in versions.values() if v.group == "stage1")
    assert len(tokens) >= 5 and tokens[-1] / tokens[0] >= 10 ** 1.5
    negatives = sorted(v.negatives for v in versions.values()
                       if v.group == "negatives" or v.name == "stage2")
    assert len(negatives) >= 5 and negatives[-1] / negatives[0] >= 10 ** 1.5
    assert len(cfg.ranker.seq_lens) >= 5 and max(cfg.ranker.seq_lens) / min(
        cfg.ranker.seq_lens) >= 10 ** 1.5
    assert versions["stage2"].negatives == 127 + 128  # in-batch + one hard per query
    assert versions["stage1_s00100"].pairs_seen == 100 * 128
    assert cfg.ranker.max_train_requests == 0  # the full training set


def test_metric_catalogue() -> None:
    assert "recall@10" in METRICS and "recall@100_d64" in METRICS and "style_r2" in METRICS
    assert metric_info("recall@10_d64").label == "image-search recall@10, 64-d"
    assert metric_info("recall@1").real_catalog
    assert not metric_info("style_r2").real_catalog
    with pytest.raises(ValueError, match="unknown candidate metric"):
        metric_info("auc")
    with pytest.raises(ValueError, match="unknown candidate metric"):
        load_study_config("tiny", overrides=["metrics=[recall@10, nope]"])


@pytest.mark.parametrize("override, message", [
    ("encoder.variants={stage2: {init: pretrain}}", "version name"),
    ("encoder.variants={queue_q00001: {init: pretrain}}", "version name"),
    ("encoder.variants={x: {update: {no_such_setting: 1}}}", "unknown stage settings"),
    ("encoder.snapshots={stage3: [1]}", "stage3"),
    ("ranker.seeds=[0, 0]", "distinct"),
    ("encoder.typo=1", "typo"),
])
def test_bad_keys_are_errors(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_study_config("tiny", overrides=[override])


def test_a_given_encoder_is_a_version(tiny_world: Path, tmp_path: Path) -> None:
    from moon_rec.studies.runs import Study, recipe_config
    from moon_rec.training.trainer import build_untrained_encoder

    cfg = load_study_config("tiny")
    ckpt = build_untrained_encoder(tiny_world, recipe_config(cfg), tmp_path / "look", seed=5)
    cfg = load_study_config("tiny", overrides=[f"encoder.given={{look: {ckpt}}}"])
    study = Study(tiny_world, tmp_path / "study", cfg, progress=False)
    v = study.version("look")
    assert v.source == "given" and v.group == "given"
    point = study.encoder_point(v)
    assert point.config["digest"] and point.config["path"] == str(ckpt.resolve())
    result = point.run()  # no training: the checkpoint as it is
    assert result["checkpoint"] == str(ckpt.resolve()) and result["model_version"]
