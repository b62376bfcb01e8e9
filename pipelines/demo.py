"""The main job: the MOON loop end to end on the embedded default (SQLite online store,
DuckDB offline store), on a synthetic world or on MovieLens-100k.

    python -m pipelines.demo --preset small --seed 0 --artifacts artifacts     # make demo
    python -m pipelines.demo --world movielens --movielens-path P --text-tower T \
        --artifacts artifacts/movielens                          # make demo WORLD=movielens
    python -m pipelines.demo --world-dir W --text-tower T \
        --artifacts artifacts/imported                           # make demo WORLD_DIR=W

On MovieLens (``scripts/fetch_movielens.sh P``; the text tower all-MiniLM-L6-v2 from
``scripts/fetch_minilm.sh T``) the world is imported instead of generated, the encoder is
post-trained from the pretrained text tower (``configs/encoder/movielens.yaml``, no
pretraining), and the rankers are the ``*_movielens`` experiments; a real world has no
oracle, so the report gives AUC overall and on cold movies instead of the gap closed.
``--world-dir W`` runs the same steps on any world imported before (``moon data import
logs | recbole | hm``): it is validated and copied in, then treated as MovieLens is (the
text-tower encoder recipe, the ``*_movielens`` rankers); what needs ground truth reads
"n/a" in the report.

The loop's steps are ``moon_rec.loop.main_steps`` (world, encoder, recall, embed, feature
store, training set, query embeddings, rankers); the demo adds two of its own: it serves
the compared MOON ranker (``demo_serving``) and writes the report (``demo_report``). Each
loop step is the ``moon`` commands it runs (``--dry-run`` prints them; run by hand they
write the same files) and is skipped when its output exists and its key (its parameters, its inputs' keys and the source
of the code it runs) is unchanged, so a second run takes seconds, and after a code change
exactly the steps whose code or inputs changed run again. A killed step resumes where its
job resumes (encoder training from its last checkpoint, the embed job from its finished
chunks). Per-step durations land in ``ARTIFACTS/demo_state.json`` and in the report
(``ARTIFACTS/report.md``).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from moon_rec.loop import (
    CONFIGS,
    CONTACT_SHEET,
    FEATURE_STORE,
    RANKERS,
    RECALL,
    Layout,
    Step,
    StepFailed,
    imported_main_steps,
    main_steps,
    ranker_experiments,
    run_steps,
)
from pipelines.demo_report import write_report
from pipelines.demo_serving import exercise_service

SERVE = "serve: rank, add a new item, rank it"
REPORT = "report"
WORLDS = ("synthetic", "movielens")
DOWNLOADS = Path("artifacts") / "downloads"
MOVIELENS_PATH = DOWNLOADS / "movielens"
TEXT_TOWER = DOWNLOADS / "all-MiniLM-L6-v2"


def build_steps(preset: str, seed: int, art: Path, *, world: str = "synthetic",
                movielens_path: Path = MOVIELENS_PATH, text_tower: Path = TEXT_TOWER,
                world_dir: Path | None = None,
                experiments: list[str] | None = None,
                encoder_overrides: tuple[str, ...] = (),
                image_tower: Path | None = None) -> list[Step]:
    """The whole demo, in order (see the module docstring).

    Args:
        preset: the synthetic world's preset (ignored for ``movielens``).
        world: ``synthetic`` (generated) or ``movielens`` (imported from ``movielens_path``,
            the encoder post-trained from ``text_tower``).
        world_dir: a world imported before (``moon data import logs | recbole | hm``),
            run as MovieLens is (``world`` is then ignored).
        experiments: the rankers (default ``ranker_experiments``: the baseline first, the
            served MOON ranker second).
        encoder_overrides: ``key=value`` overrides of the MovieLens encoder recipe.
        image_tower: a synthetic world's encoder starts from this pretrained image tower
            (a CNN state-dict file or a vision model folder) with the ``<preset>_pretrained``
            recipe when there is one (small: EfficientNet-Lite0, frozen), else the preset's
            own; None: the from-scratch tower.
    """
    if world not in WORLDS:
        raise ValueError(f"--world {world!r}: one of {', '.join(WORLDS)}")
    layout = Layout.at(art)
    if world_dir is not None:
        world = "movielens"  # the same recipe: text tower, real-world rankers, no oracle
    name = "movielens" if world == "movielens" else preset
    experiments = experiments or ranker_experiments(
        "imported" if world_dir is not None else name)
    threads = max(1, min(2, os.cpu_count() or 1))  # the demo owns the machine
    model = layout.rankers / experiments[1]
    serving = layout.file("serving.json")
    if world == "movielens":
        source, path = ("world", world_dir) if world_dir is not None else (
            "movielens", movielens_path)
        steps = imported_main_steps(layout, source, path, text_tower, experiments,
                                    seed=seed, threads=threads,
                                    encoder_overrides=encoder_overrides)
        report_deps: tuple[str, ...] = (RECALL, SERVE)  # no photos: no contact sheet
    else:
        recipe = None
        if image_tower is not None and (CONFIGS / "encoder" / f"{preset}_pretrained.yaml").is_file():
            recipe = f"{preset}_pretrained"
        steps = main_steps(layout, preset, seed, experiments, threads=threads,
                           encoder_recipe=recipe, image_tower=image_tower)
        report_deps = (RECALL, SERVE, CONTACT_SHEET)
    return [
        *steps,
        Step(SERVE, serving, lambda: exercise_service(layout, model, serving),
             {"model": experiments[1]}, (RANKERS, FEATURE_STORE),
             code=("pipelines.demo_serving", "serving.cli"),
             command=f"moon serve --model {model} --repo {layout.serving_repo} "
             f"--encoder {layout.checkpoint} --port <free>"),
        Step(REPORT, layout.file("report.md"),
             lambda: print(write_report(layout, preset=name, seed=seed,
                                        experiments=experiments)),
             {}, report_deps, code=("pipelines.demo_report",),
             command=f"python -m pipelines.demo_report --artifacts {art} --preset {name} "
             f"--seed {seed}"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=WORLDS, default="synthetic",
                        help="a generated synthetic world, or MovieLens-100k imported")
    parser.add_argument("--preset", default="small",
                        help="synthetic world preset (tiny for a smoke run)")
    parser.add_argument("--movielens-path", type=Path, default=MOVIELENS_PATH,
                        help="the MovieLens-100k files (scripts/fetch_movielens.sh DIR)")
    parser.add_argument("--world-dir", type=Path, default=None,
                        help="run on a world imported before (moon data import logs | recbole "
                        "| hm) instead")
    parser.add_argument("--text-tower", type=Path, default=TEXT_TOWER,
                        help="the pretrained text model folder of the MovieLens encoder "
                        "(scripts/fetch_minilm.sh DIR)")
    parser.add_argument("--image-tower", type=Path, default=None,
                        help="a synthetic world's encoder starts from this pretrained image "
                        "tower (scripts/fetch_efficientnet_lite.sh DIR: EfficientNet-Lite0) "
                        "with the <preset>_pretrained recipe; left out: the from-scratch "
                        "tower")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="where everything goes (default: artifacts, or "
                        "artifacts/movielens for --world movielens)")
    parser.add_argument("--force", action="append", default=[], metavar="STEP",
                        help="re-run this step (by name) even if up to date")
    parser.add_argument("--dry-run", action="store_true", help="print the steps' commands")
    args = parser.parse_args(argv)
    # torchrec / fbgemm deprecation chatter would bury the step lines
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    art: Path = args.artifacts or (
        Path("artifacts") / "imported" if args.world_dir is not None else
        Path("artifacts") / "movielens" if args.world == "movielens" else Path("artifacts"))
    steps = build_steps(args.preset, args.seed, art, world=args.world,
                        movielens_path=args.movielens_path, text_tower=args.text_tower,
                        world_dir=args.world_dir, image_tower=args.image_tower)
    if args.dry_run:
        for i, s in enumerate(steps, 1):
            print(f"[{i:2d}] {s.name}\n     $ {s.command}\n     -> {s.output}")
        return 0
    if args.image_tower is not None and not args.image_tower.exists():
        print(f"demo: error: --image-tower {args.image_tower}: no such file or folder (fetch "
              f"EfficientNet-Lite0 with scripts/fetch_efficientnet_lite.sh "
              f"{args.image_tower.parent} 0)", file=sys.stderr)
        return 2
    if args.world == "movielens" or args.world_dir is not None:
        needed = [(args.text_tower, "fetch_minilm.sh")]
        if args.world_dir is None:
            needed.insert(0, (args.movielens_path, "fetch_movielens.sh"))
        for folder, script in needed:
            if not folder.is_dir():
                print(f"demo: error: {folder}: no such folder (fetch it with "
                      f"scripts/{script} {folder})", file=sys.stderr)
                return 2
    try:
        run_steps(steps, art / "demo_state.json", force=args.force, label="demo")
    except (StepFailed, ValueError, FileNotFoundError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"\nreport: {(art / 'report.md').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
