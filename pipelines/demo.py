"""The main job: the MOON loop end to end on the embedded default (SQLite online store,
DuckDB offline store, synthetic world).

    python -m pipelines.demo --preset small --seed 0 --artifacts artifacts     # make demo

The loop's steps are ``moon_rec.loop.main_steps`` (world, encoder, recall, embed, feature
store, training set, query embeddings, rankers); the demo adds two of its own: it serves
the compared MOON ranker (``demo_serving``) and writes the report (``demo_report``). Each
step names the ``moon`` command it is equivalent to (``--dry-run`` prints them) and is
skipped when its output exists and its key (its parameters, its inputs' keys and the source
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
    CONTACT_SHEET,
    FEATURE_STORE,
    RANKERS,
    RECALL,
    Layout,
    Step,
    StepFailed,
    main_steps,
    ranker_experiments,
    run_steps,
)
from pipelines.demo_report import write_report
from pipelines.demo_serving import exercise_service

SERVE = "serve: rank, add a new item, rank it"
REPORT = "report"


def build_steps(preset: str, seed: int, art: Path) -> list[Step]:
    """The whole demo, in order (see the module docstring)."""
    layout = Layout.at(art)
    experiments = ranker_experiments(preset)
    threads = max(1, min(2, os.cpu_count() or 1))  # the demo owns the machine
    model = layout.rankers / experiments[1]
    serving = layout.file("serving.json")
    return [
        *main_steps(layout, preset, seed, experiments, threads=threads),
        Step(SERVE, serving, lambda: exercise_service(layout, model, serving),
             {"model": experiments[1]}, (RANKERS, FEATURE_STORE),
             code=("pipelines.demo_serving", "serving.cli"),
             command=f"moon serve --model {model} --repo {layout.serving_repo} "
             f"--encoder {layout.checkpoint} --port <free>"),
        Step(REPORT, layout.file("report.md"),
             lambda: print(write_report(layout, preset=preset, seed=seed,
                                        experiments=experiments)),
             {}, (RECALL, SERVE, CONTACT_SHEET), code=("pipelines.demo_report",),
             command=f"python -m pipelines.demo_report --artifacts {art} --preset {preset} "
             f"--seed {seed}"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", help="world preset (tiny for a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--force", action="append", default=[], metavar="STEP",
                        help="re-run this step (by name) even if up to date")
    parser.add_argument("--dry-run", action="store_true", help="print the steps' commands")
    args = parser.parse_args(argv)
    # torchrec / fbgemm deprecation chatter would bury the step lines
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    art: Path = args.artifacts
    steps = build_steps(args.preset, args.seed, art)
    if args.dry_run:
        for i, s in enumerate(steps, 1):
            print(f"[{i:2d}] {s.name}\n     $ {s.command}\n     -> {s.output}")
        return 0
    try:
        run_steps(steps, art / "demo_state.json", force=args.force, label="demo")
    except (StepFailed, ValueError, FileNotFoundError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"\nreport: {(art / 'report.md').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
