"""Training configuration: YAML with presets (configs/encoder/<preset>.yaml), strict keys.

A run is reproducible from its config and seed. Structure::

    seed: 0
    threads: 1
    encoder: {EncoderConfig}
    pretrain: {StageConfig}
    stage1:   {StageConfig}
    stage2:   {StageConfig}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from moon_rec._yaml_config import load_yaml_config
from moon_rec.encoders.config import EncoderConfig
from moon_rec.training.pairs import KINDS

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "encoder"
STAGES: tuple[str, ...] = ("pretrain", "stage1", "stage2")


class StageConfig(BaseModel):
    """One training stage.

    Args:
        steps: optimiser steps (per rank).
        batch_size: pairs per step per rank.
        lr / weight_decay / warmup_steps / grad_clip: AdamW with linear warm-up and cosine
            decay.
        temperature: InfoNCE tau (the initial tau under ``learn_temperature``).
        kind_temperature: pair kind -> its own InfoNCE tau (the others use ``temperature``):
            soft pairs such as ``co_engaged`` (two items one user liked, alike but not the
            same) want a tau well above instance retrieval's.
        co_engaged_window: ``co_engaged`` pairs are at most this many behaviours apart in
            one user's history.
        learn_temperature: learn tau as a logit scale (CLIP), clamped to [0.01, 1].
        loss: ``infonce`` or ``circle`` (circle_margin, circle_gamma).
        symmetric: also contrast targets against queries (in-batch).
        matryoshka_weights: one weight per Matryoshka dim (default 1 each).
        mix: pair kind -> mixing ratio (see moon_rec.training.pairs.KINDS).
        actions: behaviours that make pairs (stage 2: ``[buy]``).
        items_bought_only: catalog/photo pairs only for bought items (stage 2).
        min_query_tokens: drop text queries with fewer words (stage 2).
        dedup_hardest: keep per (kind, item) this many hardest pairs under the previous
            model (0: no dedup).
        resample_categories: draw this many pairs matching the online category exposure
            (0: off).
        hard_negatives: hard negatives per positive (encoded with gradient).
        hard_negative_source: ``category`` (random other items of the positive's category),
            ``mined`` (among the positive's ``hard_negative_pool`` nearest catalog items
            under the stage's initial model: look-alikes, SPU variants included) or
            ``attribute`` (other products of the positive's category that share its
            ``hard_negative_attribute`` value, e.g. its colour: they differ in the rest of
            the look -- pattern, shape -- so the encoder must keep it).
        hard_negative_attribute: the catalog attribute (``attributes`` key, e.g. ``color``)
            that ``attribute`` hard negatives share with the positive.
        batch_categories: draw each batch from this many target categories only, so the
            in-batch negatives are look-alikes (0: the whole catalog).
        queue_size: temporal negatives, a FIFO of past target embeddings (0: off).
        all_gather: spatial negatives, the other ranks' targets (under torchrun).
        merge_spu: which queries treat variants of the positive's SPU as non-negatives:
            ``text`` (text/title queries), ``all`` or ``none``.
        caption_weight: MLLM only, weight of the title-generation objective.
        text_tower_lr: learning rate of a pretrained text tower (``encoder.text_tower``;
            None: ``lr``; 0: frozen). Fine-tuning a pretrained transformer wants a rate far
            below the fresh heads' (1e-5 .. 5e-5 against 1e-3), or it forgets what it knew.
        image_tower_lr: learning rate of a pretrained image side (``encoder.image_tower``,
            or the vision half of ``encoder.pretrained``; None: ``lr``; 0: frozen).
        frozen_image_blocks: freeze the first k stages of a pretrained image trunk (the
            stem / embeddings count as one, then its blocks / layers in input order), so
            only the top blocks train.
        freeze: parameter-name patterns (``fnmatch``, e.g. ``image_tower.model._blocks.1*``,
            ``text_tower.*``) frozen in this stage.
        augment_views: 0: a fresh random user-photo augmentation of the catalog photo at
            every draw (``aug_*`` pairs); k: one of k fixed augmentations per photo
            (seeded by the run's seed, the row and the view), so a frozen image trunk's
            features of the augmented photos are cached as well.
        cache_frozen_image: cache what a frozen pretrained image trunk computes per photo
            (the whole trunk with ``image_tower_lr`` 0, or a CNN's stem and first blocks
            with ``frozen_image_blocks``) for the stage (``FrozenTrunkCache``): the same
            training, without running the frozen part again on a photo it has seen.
        cache_frozen_text: cache a frozen pretrained text tower's pooled output per text
            for the stage (a tower the stage freezes whole, by ``text_tower_lr`` 0 or
            ``freeze`` patterns, runs in eval mode with the cache on or off: a fixed feature
            extractor): a title or query runs through it once while the cache has room.
            The separate ``text_tower`` only, not a dual encoder's text side.
        checkpoint_every / log_every: in steps.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 10
    grad_clip: float = 1.0
    temperature: float = 0.05
    kind_temperature: dict[str, float] = Field(default_factory=dict)
    co_engaged_window: int = Field(default=5, ge=1)
    learn_temperature: bool = False
    loss: Literal["infonce", "circle"] = "infonce"
    circle_margin: float = 0.25
    circle_gamma: float = 32.0
    symmetric: bool = True
    matryoshka_weights: list[float] | None = None
    mix: dict[str, float] = Field(default_factory=lambda: {"title_image": 1.0})
    actions: list[Literal["click", "cart", "buy"]] | None = None
    items_bought_only: bool = False
    min_query_tokens: int = 0
    dedup_hardest: int = 0
    resample_categories: int = 0
    hard_negatives: int = 0
    hard_negative_source: Literal["category", "mined", "attribute"] = "category"
    hard_negative_attribute: str = "color"
    hard_negative_pool: int = 20
    batch_categories: int = 0
    queue_size: int = 0
    all_gather: bool = True
    merge_spu: Literal["text", "all", "none"] = "text"
    caption_weight: float = 0.0
    text_tower_lr: float | None = Field(default=None, ge=0.0)
    image_tower_lr: float | None = Field(default=None, ge=0.0)
    frozen_image_blocks: int = Field(default=0, ge=0)
    freeze: list[str] = Field(default_factory=list)
    augment_views: int = Field(default=0, ge=0)
    cache_frozen_image: bool = True
    cache_frozen_text: bool = True
    checkpoint_every: int = 50
    log_every: int = 10

    @field_validator("mix")
    @classmethod
    def _known_kinds(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown pair kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        if not any(r > 0 for r in v.values()):
            raise ValueError("mix needs at least one positive ratio")
        return v

    @field_validator("kind_temperature")
    @classmethod
    def _known_tau_kinds(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(KINDS)
        if unknown:
            raise ValueError(f"kind_temperature: unknown pair kinds {sorted(unknown)}; "
                             f"known: {', '.join(KINDS)}")
        bad = {k: t for k, t in v.items() if not t > 0}
        if bad:
            raise ValueError(f"kind_temperature: tau must be > 0 (got {bad})")
        return v


class TrainConfig(BaseModel):
    """A full encoder training recipe: architecture plus the three stages."""

    model_config = ConfigDict(extra="forbid")

    preset: str = "custom"
    seed: int = 0
    threads: int = 1
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    pretrain: StageConfig = Field(default_factory=StageConfig)
    stage1: StageConfig = Field(default_factory=StageConfig)
    stage2: StageConfig = Field(default_factory=StageConfig)

    def stage(self, name: str) -> StageConfig:
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r} ({', '.join(STAGES)})")
        stage: StageConfig = getattr(self, name)
        return stage



def load_config(
    preset: str | None = None, path: str | Path | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """A preset (configs/encoder/<preset>.yaml) or a YAML file, plus ``key.sub=value``
    overrides (values parsed as YAML).

    Raises:
        ValueError: unknown preset, unknown key or bad value (pydantic names the field).
    """
    return load_yaml_config(TrainConfig, PRESET_DIR, preset, path, overrides, what='config')
