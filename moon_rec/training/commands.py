"""The encoder's ``moon`` commands as requests (:mod:`moon_rec.command`): ``moon encoder
train`` (stages in a row, optionally keeping snapshots along the way) and ``moon encoder
init``, run by the CLI and by the loop's encoder steps alike; and :func:`encoder_config`,
the one way a command line's recipe becomes a TrainConfig."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from moon_rec.command import MoonCommand

if TYPE_CHECKING:
    from moon_rec.training.config import TrainConfig

STAGE_NAMES = ("pretrain", "stage1", "stage2")


def encoder_config(preset: str | None, config: Path | None, overrides: Sequence[str],
                   threads: int | None = None, *, text_tower: Path | None = None,
                   image_tower: Path | None = None, pretrained: Path | None = None,
                   init: Path | None = None) -> TrainConfig:
    """The recipe ``configs/encoder/<preset>.yaml`` (or the YAML ``config``) with
    ``key=value`` ``overrides`` (then ``threads``), and the pretrained parts of a fresh
    encoder (not with ``init``), each a local path: ``text_tower`` (a text model folder
    with its tokenizer), ``image_tower`` (a vision model folder or a CNN state-dict file),
    ``pretrained`` (a full dual encoder or an MLLM checkpoint)."""
    from moon_rec.training.config import load_config

    sets = list(overrides)
    if threads is not None:
        sets.append(f"threads={threads}")
    given = {key: path for key, path in (("text_tower", text_tower),
                                         ("image_tower", image_tower),
                                         ("pretrained", pretrained)) if path is not None}
    if given and init is not None:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{flags} build a fresh encoder and --init continues a "
                         "checkpoint (which carries its own pretrained parts): pass one")
    for key, path in given.items():
        if not path.exists():
            raise FileNotFoundError(f"--{key.replace('_', '-')} {path}: no such file or folder")
        # a JSON string is YAML: any path, validated with the rest of the recipe
        sets.append(f"encoder.{key}={json.dumps(str(path.resolve()))}")
    return load_config(preset, config, sets)


def snapshot_dir(stage_dir: Path, step: int) -> Path:
    """Where ``moon encoder train --snapshot STAGE:STEP`` keeps the encoder of ``step`` of a
    stage."""
    return stage_dir / "snapshots" / f"step-{step:06d}"


def parse_snapshots(specs: Sequence[str]) -> dict[str, list[int]]:
    """``["stage1:6", "stage1:3"]`` -> ``{"stage1": [3, 6]}`` (sorted, unique)."""
    keep: dict[str, set[int]] = {}
    for spec in specs:
        stage, _, step = spec.partition(":")
        if stage not in STAGE_NAMES or not step.isdigit():
            raise ValueError(f"--snapshot {spec!r}: STAGE:STEP with STAGE one of "
                             f"{', '.join(STAGE_NAMES)}")
        keep.setdefault(stage, set()).add(int(step))
    return {s: sorted(v) for s, v in keep.items()}


class EncoderTrain(MoonCommand):
    """``moon encoder train``: the ``stages`` in a row (``OUT/<stage>``), each from the
    previous one (the first from scratch, or from the pretrained ``text_tower``).
    ``snapshot``: ``STAGE:STEP`` encoders kept in ``OUT/<stage>/snapshots/step-NNNNNN``
    (versions along training, for the studies)."""

    words = ("encoder", "train")
    flags: ClassVar[dict[str, str]] = {"overrides": "--set"}
    repeated: ClassVar[frozenset[str]] = frozenset({"overrides", "snapshot"})
    code = ("moon_rec.training.trainer",)

    world: Path
    out: Path
    preset: str | None = None
    config: Path | None = None
    overrides: list[str] = Field(default_factory=list)
    threads: int | None = None
    text_tower: Path | None = None
    image_tower: Path | None = None
    pretrained: Path | None = None
    stages: list[str] = Field(default_factory=lambda: list(STAGE_NAMES))
    snapshot: list[str] = Field(default_factory=list)
    no_resume: bool = False
    quiet: bool = False

    def run(self) -> int:
        from moon_rec.training.trainer import train_all

        unknown = [s for s in self.stages if s not in STAGE_NAMES]
        if unknown:
            raise ValueError(f"--stages: unknown {unknown} (of {', '.join(STAGE_NAMES)})")
        keep = parse_snapshots(self.snapshot)

        def on_step(stage: str, step: int, encoder: Any) -> None:
            snap = snapshot_dir(self.out / stage, step)
            if step in keep.get(stage, ()) and not (snap / "moon_encoder.json").is_file():
                encoder.save_pretrained(snap)  # atomic

        config = encoder_config(self.preset, self.config, self.overrides, self.threads,
                                text_tower=self.text_tower, image_tower=self.image_tower,
                                pretrained=self.pretrained)
        result = train_all(self.world, config, self.out, stages=tuple(self.stages),
                           progress=not self.quiet, on_step=on_step if keep else None)
        print(json.dumps({s: {k: v for k, v in r.items() if k != "config"}
                          for s, r in result.items()}, indent=2))
        return 0


class EncoderInit(MoonCommand):
    """``moon encoder init``: an untrained, seeded encoder of the recipe's config with its
    tokenizer trained on the world's train-period text (``out`` is the checkpoint)."""

    words = ("encoder", "init")
    code = ("moon_rec.training.trainer",)

    world: Path
    out: Path
    preset: str | None = None
    config: Path | None = None
    seed: int | None = None
    text_tower: Path | None = None
    image_tower: Path | None = None
    pretrained: Path | None = None

    def run(self) -> int:
        from moon_rec.training.trainer import build_untrained_encoder

        config = encoder_config(self.preset, self.config, (), text_tower=self.text_tower,
                                image_tower=self.image_tower, pretrained=self.pretrained)
        out = build_untrained_encoder(self.world, config, self.out, seed=self.seed)
        print(json.dumps({"out": str(out)}))
        return 0
