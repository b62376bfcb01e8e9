"""Study configuration: YAML presets (configs/studies/<preset>.yaml), strict keys.

Everything a study's points depend on (the encoder recipe and its snapshots, the variant
runs, the ranker budget and seeds, the bootstrap) is data, recorded with each point, so a
point is reproducible from its config and seed. Structure::

    preset: tiny
    seed: 0
    threads: 1
    metrics: [recall@10, ..., style_r2]       # the candidate intermediate metrics
    bootstrap_resamples: 1000
    encoder: {EncoderBudget}
    ranker: {RankerBudget}

The candidate metrics (``metric_info`` names each and says whether a real catalog can
compute it): image-search recall@K (K = 1, 10, 100) at the full dimension (``recall@K``)
and per smaller Matryoshka prefix (``recall@K_dD``), text-query recall@10
(``text_recall@10``), the category probe (``probe_acc``), image-title alignment
(``image_title_align``) and the style probe (``style_r2``: linear R^2 of the hidden style
from 64-dim vectors, which needs the synthetic world's ground truth).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from moon_rec._yaml_config import load_yaml_config
from moon_rec.encoders.config import DEFAULT_DIMS

ROOT = Path(__file__).resolve().parents[2]
PRESET_DIR = ROOT / "configs" / "studies"
KS: tuple[int, ...] = (1, 10, 100)
DIMS: tuple[int, ...] = DEFAULT_DIMS  # the encoder config's default sizes
STYLE_PROBE_DIM = 64
OTHER_METRICS: tuple[str, ...] = ("text_recall@10", "probe_acc", "image_title_align", "style_r2")
METRICS: tuple[str, ...] = (
    *(f"recall@{k}" for k in KS),
    *(f"recall@{k}_d{d}" for d in DIMS[:-1] for k in KS),
    *OTHER_METRICS,
)
_RECALL = re.compile(r"^recall@(\d+)(?:_d(\d+))?$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MetricInfo(NamedTuple):
    """A candidate metric: its label, whether a real catalog can compute it (no oracle),
    and what it needs."""

    label: str
    real_catalog: bool
    needs: str


def metric_info(name: str) -> MetricInfo:
    """The label and data needs of a candidate metric name (see the module docstring)."""
    m = _RECALL.match(name)
    if m:
        dim = f", {m.group(2)}-d" if m.group(2) else ""
        return MetricInfo(f"image-search recall@{m.group(1)}{dim}", True,
                          "catalog photos + users' photo queries (image_queries)")
    known = {
        "text_recall@10": MetricInfo("text-query recall@10", True,
                                     "held-out behaviours with a query text"),
        "probe_acc": MetricInfo("category probe accuracy", True, "the catalog's categories"),
        "image_title_align": MetricInfo("image-title alignment (cos gap)", True,
                                        "catalog photos and titles"),
        "style_r2": MetricInfo(f"style probe R^2 ({STYLE_PROBE_DIM}-d)", False,
                               "the synthetic world's oracle_style (ground truth)"),
    }
    if name not in known:
        raise ValueError(f"unknown candidate metric {name!r} (known: recall@K, recall@K_dD, "
                         f"{', '.join(known)})")
    return known[name]


class EncoderVariant(BaseModel):
    """A training run besides the recipe that moves the metrics apart: one stage of the
    recipe, started from one of its checkpoints, with some of the stage's settings replaced.

    Args:
        init: the checkpoint it starts from: ``untrained`` or a recipe stage's final encoder.
        stage: the recipe stage whose settings it runs (``stage1``, ``stage2``).
        steps: its optimiser steps (default: the stage's).
        update: ``StageConfig`` fields replaced (e.g. ``{mix: {text_product: 1.0}}``,
            ``{hard_negatives: 0}``, ``{matryoshka_weights: [0, 0, 0, 1]}``).
        group: how the report groups it (colours, axes).
    """

    model_config = ConfigDict(extra="forbid")

    init: Literal["untrained", "pretrain", "stage1", "stage2"] = "pretrain"
    stage: Literal["stage1", "stage2"] = "stage1"
    steps: int | None = Field(default=None, gt=0)
    update: dict[str, Any] = Field(default_factory=dict)
    group: str = "variant"

    @field_validator("update")
    @classmethod
    def _stage_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        from moon_rec.training.config import StageConfig

        unknown = sorted(set(v) - set(StageConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown stage settings {unknown}")
        return v


class EncoderBudget(BaseModel):
    """The encoder versions of the studies.

    The **recipe**: the full encoder recipe (configs/encoder/<preset>.yaml: pretrain,
    stage 1, stage 2) trained once by the loop's encoder step (``moon_rec.loop``) in the
    study's ``shared/`` layout, keeping ``snapshots``; every snapshot and every stage's
    final encoder is a version (``pretrain``, ``stage1`` = "stage 1 only", ``stage2`` = the
    full recipe, ``stage1_s00100``, ...), plus the ``untrained`` encoder of the same
    architecture. The **variants**: ``variants`` and one stage-2 run per ``queue_sizes``
    entry (``queue_qNNNNN``, started from ``stage1``: the negatives axis). **Given**
    encoders: checkpoints from elsewhere (e.g. a look-preserving encoder) by name.

    Args:
        preset: configs/encoder/<preset>.yaml, the recipe.
        overrides: ``key.sub=value`` overrides of that recipe.
        snapshots: stage -> steps kept as versions (stage 1's are the tokens axis).
        variants: name -> ``EncoderVariant``.
        queue_sizes: temporal-queue sizes of the stage-2 negatives runs.
        given: name -> an encoder checkpoint folder (``MoonEncoder.from_pretrained``).
    """

    model_config = ConfigDict(extra="forbid")

    preset: str = "tiny"
    overrides: list[str] = Field(default_factory=list)
    snapshots: dict[str, list[int]] = Field(default_factory=lambda: {"stage1": [10, 25, 50]})
    variants: dict[str, EncoderVariant] = Field(default_factory=dict)
    queue_sizes: list[int] = Field(default_factory=list)
    given: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> EncoderBudget:
        unknown = sorted(set(self.snapshots) - {"pretrain", "stage1", "stage2"})
        if unknown:
            raise ValueError(f"snapshots of unknown stages {unknown} (pretrain, stage1, stage2)")
        if any(s <= 0 for steps in self.snapshots.values() for s in steps):
            raise ValueError("snapshot steps must be > 0")
        if any(q < 0 for q in self.queue_sizes):
            raise ValueError("queue_sizes must be >= 0")
        reserved = {"untrained", "pretrain", "stage1", "stage2"}
        for name in [*self.variants, *self.given]:
            if not _NAME.match(name) or name in reserved or re.match(r"^(stage\d|pretrain)_s\d+$|"
                                                                      r"^queue_q\d+$", name):
                raise ValueError(f"version name {name!r}: lower-case letters, digits, _; "
                                 "not a recipe or queue name")
        both = set(self.variants) & set(self.given)
        if both:
            raise ValueError(f"{sorted(both)} both a variant and a given encoder")
        return self


class RankerBudget(BaseModel):
    """The downstream ranker of every point: one experiment, the same budget and seeds for
    every version.

    Args:
        config / experiment: the ranker YAML (relative to the repository) and its block.
        epochs / batch_size: override the experiment's (None keeps them).
        seeds: ranker seeds of every version (its AUC is their mean, its noise their std).
        max_train_requests / max_test_requests: keep a seeded subset of requests of each
            split (0: all, the full training set); the same subset for every point.
        reference_experiment: an ID-only experiment trained on the same ranker set and
            seeds, the floor the content features lift.
        seq_lens: the behaviour-sequence lengths of the seq_len axis.
        seq_len_version: the encoder version the seq_len axis uses.
    """

    model_config = ConfigDict(extra="forbid")

    config: str = "configs/ranker/experiments.yaml"
    experiment: str = "cube_moon_tiny"
    epochs: int | None = None
    batch_size: int | None = None
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    max_train_requests: int = 0
    max_test_requests: int = 0
    reference_experiment: str | None = None
    seq_lens: list[int] = Field(default_factory=lambda: [1, 2, 5, 10, 20, 50])
    seq_len_version: str = "stage2"

    @model_validator(mode="after")
    def _check(self) -> RankerBudget:
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        if any(s <= 0 for s in self.seq_lens):
            raise ValueError("seq_lens must be > 0")
        return self

    def config_path(self) -> Path:
        p = Path(self.config)
        return p if p.is_absolute() else ROOT / p


class StudyConfig(BaseModel):
    """A study: encoder versions, downstream ranker, candidate metrics, bootstrap.

    Args:
        metrics: the candidate intermediate metrics (``metric_info`` names).
        bootstrap_resamples / confidence: the intervals (``moon_rec.metrics.exchange``).
    """

    model_config = ConfigDict(extra="forbid")

    preset: str = "custom"
    seed: int = 0
    threads: int = 1
    metrics: list[str] = Field(default_factory=lambda: list(METRICS))
    bootstrap_resamples: int = Field(default=1000, ge=100)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    encoder: EncoderBudget = Field(default_factory=EncoderBudget)
    ranker: RankerBudget = Field(default_factory=RankerBudget)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        for m in v:
            metric_info(m)
        return v


def load_study_config(preset: str | None = None, path: str | Path | None = None,
                      overrides: list[str] | None = None) -> StudyConfig:
    """A preset (configs/studies/<preset>.yaml) or a YAML file, plus ``key.sub=value``
    overrides (values parsed as YAML).

    Raises:
        ValueError: unknown preset, unknown key or bad value.
    """
    return load_yaml_config(StudyConfig, PRESET_DIR, preset, path, overrides, what='study config')
