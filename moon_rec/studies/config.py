"""Study configuration: YAML presets (configs/studies/<preset>.yaml), strict keys.

The budgets of every run in a study (encoder steps, batch, snapshots, variants, ranker
epochs, rows, seeds) are data, recorded with each point, so a point is reproducible from its
config and seed. Structure::

    preset: tiny
    seed: 0
    threads: 1
    metrics: [recall@10, text_recall@10, probe_acc, image_title_align]
    encoder: {EncoderBudget}
    ranker: {RankerBudget}
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from moon_rec._yaml_config import load_yaml_config

ROOT = Path(__file__).resolve().parents[2]
PRESET_DIR = ROOT / "configs" / "studies"
METRICS: tuple[str, ...] = ("recall@10", "text_recall@10", "probe_acc", "image_title_align")


class EncoderBudget(BaseModel):
    """The encoder versions of the studies.

    One pretraining run, then post-training (stage 1) runs initialised from it:
    ``main`` (``main_steps``, snapshots kept at ``snapshots``: the tokens axis and the
    "checkpoints along training" versions), ``text_only`` / ``image_only`` (pairs of one
    query modality only) and one run per ``queue_sizes`` entry (the negatives axis:
    negatives per query = batch_size - 1 in-batch + queue_size temporal), each
    ``variant_steps`` long. Plus the untrained encoder (same architecture and tokenizer).

    Args:
        preset: configs/encoder/<preset>.yaml, the architecture and base recipe.
        overrides: ``key.sub=value`` overrides of that recipe (applied first).
        pretrain_steps / pretrain_batch_size: the pretraining run.
        batch_size: pairs per step of every post-training run.
        main_steps: steps of the main post-training run.
        snapshots: steps of the main run kept as encoder versions.
        variant_steps: steps of each variant run.
        text_only_mix / image_only_mix: the pair mix of the one-modality variants.
        queue_sizes: temporal-queue sizes of the negatives axis.
    """

    model_config = ConfigDict(extra="forbid")

    preset: str = "tiny"
    overrides: list[str] = Field(default_factory=list)
    pretrain_steps: int = 40
    pretrain_batch_size: int = 32
    batch_size: int = 32
    main_steps: int = 100
    snapshots: list[int] = Field(default_factory=lambda: [10, 25, 50, 100])
    variant_steps: int = 50
    text_only_mix: dict[str, float] = Field(default_factory=lambda: {"text_product": 1.0})
    image_only_mix: dict[str, float] = Field(
        default_factory=lambda: {"photo_product": 1.0, "aug_product": 1.0})
    queue_sizes: list[int] = Field(default_factory=lambda: [0, 32, 128, 512])

    @model_validator(mode="after")
    def _check(self) -> EncoderBudget:
        if any(s <= 0 or s > self.main_steps for s in self.snapshots):
            raise ValueError(f"snapshots must lie in 1..main_steps={self.main_steps}")
        if any(q < 0 for q in self.queue_sizes):
            raise ValueError("queue_sizes must be >= 0")
        for k in ("pretrain_steps", "pretrain_batch_size", "batch_size", "main_steps",
                  "variant_steps"):
            if getattr(self, k) <= 0:
                raise ValueError(f"{k} must be > 0")
        return self


class RankerBudget(BaseModel):
    """The downstream ranker of every point: one experiment, a reduced budget fixed across
    versions.

    Args:
        config / experiment: the ranker YAML (relative to the repository) and its block.
        epochs / batch_size: override the experiment's (None keeps them).
        seeds: ranker seeds of every encoder version (the AUC is their mean).
        noise_versions / noise_seeds: extra seeds for a few versions only: the seed-to-seed
            AUC spread (the noise floor) at a fraction of the cost of more seeds everywhere.
        max_train_requests / max_test_requests: keep a seeded subset of requests of each
            split (0: all); the same subset for every point.
        reference_experiment: an ID-only experiment trained once on the same ranker set
            (seed: the first of ``seeds``), the floor the content features lift.
        seq_lens: the behaviour-sequence lengths of the seq_len axis.
        seq_len_version: the encoder version the seq_len axis uses (``main`` = the main
            run's last snapshot).
    """

    model_config = ConfigDict(extra="forbid")

    config: str = "configs/ranker/experiments.yaml"
    experiment: str = "cube_moon_tiny"
    epochs: int | None = None
    batch_size: int | None = None
    seeds: list[int] = Field(default_factory=lambda: [0])
    noise_versions: list[str] = Field(default_factory=list)
    noise_seeds: list[int] = Field(default_factory=list)
    max_train_requests: int = 0
    max_test_requests: int = 0
    reference_experiment: str | None = None
    seq_lens: list[int] = Field(default_factory=lambda: [2, 5, 10, 20])
    seq_len_version: str = "main"

    @model_validator(mode="after")
    def _check(self) -> RankerBudget:
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if any(s <= 0 for s in self.seq_lens):
            raise ValueError("seq_lens must be > 0")
        return self

    def config_path(self) -> Path:
        p = Path(self.config)
        return p if p.is_absolute() else ROOT / p


class StudyConfig(BaseModel):
    """A study: encoder versions, downstream ranker, metrics."""

    model_config = ConfigDict(extra="forbid")

    preset: str = "custom"
    seed: int = 0
    threads: int = 1
    metrics: list[str] = Field(default_factory=lambda: list(METRICS))
    encoder: EncoderBudget = Field(default_factory=EncoderBudget)
    ranker: RankerBudget = Field(default_factory=RankerBudget)



def load_study_config(preset: str | None = None, path: str | Path | None = None,
                      overrides: list[str] | None = None) -> StudyConfig:
    """A preset (configs/studies/<preset>.yaml) or a YAML file, plus ``key.sub=value``
    overrides (values parsed as YAML).

    Raises:
        ValueError: unknown preset, unknown key or bad value.
    """
    return load_yaml_config(StudyConfig, PRESET_DIR, preset, path, overrides, what='study config')
