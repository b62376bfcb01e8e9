"""`moon encoder pretrain | posttrain --stage 1|2 | train`: MOON encoder training.

All three accept ``--preset`` (configs/encoder/<preset>.yaml) or ``--config FILE`` plus
``--set key.sub=value`` overrides, and the pretrained parts of a fresh encoder, each from a
local path: ``--text-tower DIR`` (a text model with its tokenizer, e.g. all-MiniLM-L6-v2:
``encoder.text_tower``), ``--image-tower PATH`` (a Hugging Face vision model folder with its
image processor, or a CNN state-dict file such as EfficientNet-Lite's ``.pth``:
``encoder.image_tower``), ``--pretrained DIR`` (a full dual encoder such as CLIP / SigLIP,
or with ``--set encoder.backbone=mllm`` a Qwen2-VL-family checkpoint:
``encoder.pretrained``); they resume from
``OUT/state`` after a kill unless ``--no-resume``. Run under ``torchrun --nproc_per_node N -m moon_rec.cli encoder ...`` for
DDP (gloo on CPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from moon_rec.command import handled_by
from moon_rec.training.commands import STAGE_NAMES, EncoderInit, EncoderTrain, encoder_config


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--world", required=True, type=Path, help="world directory")
    p.add_argument("--out", required=True, type=Path, help="run directory (OUT/encoder is the checkpoint)")
    p.add_argument("--preset", default=None, help="configs/encoder/<preset>.yaml (default tiny)")
    p.add_argument("--config", type=Path, default=None, help="a training YAML instead of a preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set stage1.steps=200 (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: config)")
    p.add_argument("--text-tower", type=Path, default=None, metavar="DIR",
                   help="a local pretrained transformers text model folder with its tokenizer "
                   "(e.g. all-MiniLM-L6-v2) as the text tower of a fresh encoder "
                   "(sets encoder.text_tower)")
    _pretrained_args(p)
    p.add_argument("--no-resume", action="store_true", help="ignore OUT/state, start over")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _pretrained_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-tower", type=Path, default=None, metavar="PATH",
                   help="a local pretrained image backbone for a fresh encoder: a transformers "
                   "vision model folder (ViT, DINOv2, ConvNeXt, SigLIP vision) with its "
                   "preprocessor_config.json, or a CNN state-dict file "
                   "(efficientnet-lite0/1/2 .pth; sets encoder.image_tower)")
    p.add_argument("--pretrained", type=Path, default=None, metavar="DIR",
                   help="a local pretrained backbone folder with its tokenizer and image "
                   "processor: a full dual encoder (CLIP, SigLIP), or a Qwen2-VL-family "
                   "checkpoint with encoder.backbone=mllm (sets encoder.pretrained)")


def register(sub: argparse._SubParsersAction) -> None:
    enc = sub.add_parser("encoder", help="train the MOON encoder (pretrain, post-train)")
    esub = enc.add_subparsers(dest="encoder_command", metavar="COMMAND")
    esub.required = True

    pre = esub.add_parser(
        "pretrain", help="image-title contrastive pretraining on the catalog",
        description="Train the tokenizer on the catalog text, build the encoder from its "
        "config and pretrain it (image-title InfoNCE; the MLLM adds title generation).")
    _common(pre)
    pre.add_argument("--init", type=Path, default=None, help="start from a checkpoint instead")
    pre.set_defaults(func=_pretrain)

    post = esub.add_parser(
        "posttrain", help="behaviour-based contrastive post-training, stage 1 or 2",
        description="Stage 1: InfoNCE over the behaviour pairs' modality mix. Stage 2: "
        "purchase pairs, hardest-pair dedup, SPU merging, category resampling, hard and "
        "spatial-temporal negatives, optional circle loss.")
    _common(post)
    post.add_argument("--stage", type=int, choices=(1, 2), required=True)
    post.add_argument("--init", type=Path, default=None,
                      help="the previous stage's run directory or encoder checkpoint "
                      "(required unless the encoder has a pretrained text tower: then "
                      "pretraining may be skipped)")
    post.set_defaults(func=_posttrain)

    allp = esub.add_parser("train", help="pretrain, stage 1 and stage 2 in a row (OUT/<stage>)")
    _common(allp)
    allp.add_argument("--stages", nargs="+", default=list(STAGE_NAMES), metavar="STAGE",
                      help="the stages to run in a row, each from the previous one (default: "
                      "all three; e.g. stage1 stage2 with --text-tower skips pretraining)")
    allp.add_argument("--snapshot", action="append", default=[], metavar="STAGE:STEP",
                      help="also keep the encoder of this step in OUT/<stage>/snapshots/"
                      "step-NNNNNN (repeatable)")
    allp.set_defaults(**handled_by(EncoderTrain))

    init = esub.add_parser(
        "init", help="save an untrained encoder (a baseline; plumbing and latency tests)",
        description="Build the encoder of the preset's config with its tokenizer trained on "
        "the world's train-period text, seeded, untrained; OUT is the checkpoint.")
    init.add_argument("--world", required=True, type=Path, help="world directory")
    init.add_argument("--out", required=True, type=Path, help="checkpoint directory")
    init.add_argument("--preset", default=None, help="configs/encoder/<preset>.yaml (default tiny)")
    init.add_argument("--config", type=Path, default=None, help="a training YAML instead")
    init.add_argument("--seed", type=int, default=None, help="weight init seed (default: config)")
    init.add_argument("--text-tower", type=Path, default=None, metavar="DIR",
                      help="a pretrained text model folder with its tokenizer")
    _pretrained_args(init)
    init.set_defaults(**handled_by(EncoderInit))


def _config(args: argparse.Namespace) -> Any:
    return encoder_config(args.preset, args.config, args.overrides, args.threads,
                          text_tower=args.text_tower, image_tower=args.image_tower,
                          pretrained=args.pretrained, init=getattr(args, "init", None))


def _run(args: argparse.Namespace, stage: str, init: Path | None, config: Any = None) -> int:
    from moon_rec.training.trainer import train_stage

    config = _config(args) if config is None else config
    summary = train_stage(args.world, stage, config, args.out, init=init,
                          resume=not args.no_resume, progress=not args.quiet)
    summary.pop("config", None)
    print(json.dumps(summary, indent=2))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    return _run(args, "pretrain", args.init)


def _posttrain(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.init is None and config.encoder.text_tower is None and not config.encoder.sources:
        raise ValueError("posttrain needs --init (the previous stage) or a pretrained part "
                         "(--text-tower, --image-tower, --pretrained) to start from")
    return _run(args, f"stage{args.stage}", args.init, config)
