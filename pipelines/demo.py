"""The main job: the MOON loop end to end on the embedded default (SQLite online store,
DuckDB offline store, synthetic world).

    python -m pipelines.demo --preset small --seed 0 --artifacts artifacts     # make demo

One pipeline definition (``build_steps``) drives it. Each step runs a ``moon`` command (the
same one a user would type; ``--dry-run`` prints them) and is skipped when its output
exists and its key — a hash of its own parameters and of its inputs' keys — matches the one
recorded when it last finished, so a second run takes seconds and a changed upstream step
re-runs everything below it. A step killed half way resumes where its command resumes
(encoder training from its last checkpoint, the embedding job from its finished chunks);
a step whose parameters changed starts clean. Per-step durations land in
``ARTIFACTS/demo_state.json`` and in the report (``ARTIFACTS/report.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Step:
    """One pipeline step.

    ``run()`` makes ``output``. ``params`` (JSON-able) and the keys of the ``deps`` steps
    make the step's key. ``clean`` lists what to delete before a fresh (not resumed) run.
    """

    name: str
    output: Path
    run: Callable[[], None]
    params: dict[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    clean: tuple[Path, ...] = ()
    command: str = ""


class StepFailed(RuntimeError):
    """A step's command exited non-zero; the message names the step and the command."""


def _key(step: Step, keys: dict[str, str]) -> str:
    blob = json.dumps({"params": step.params, "deps": [keys[d] for d in step.deps]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def run_steps(steps: Sequence[Step], state_file: Path, *, force: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``steps`` in order, skipping the up-to-date ones. Returns the state record:
    ``{step name: {"key", "started_key", "seconds", "skipped"}}``."""
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.is_file() else {}
    keys: dict[str, str] = {}
    total = time.perf_counter()
    ran = 0.0

    def save() -> None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(state_file)

    # the record in step order (the report's timing table reads it in this order)
    state = {s.name: state.get(s.name, {}) for s in steps}
    for i, step in enumerate(steps, 1):
        key = keys[step.name] = _key(step, keys)
        rec = state[step.name]
        head = f"[{i:2d}/{len(steps)}] {step.name}"
        if step.output.exists() and rec.get("key") == key and step.name not in force:
            rec["skipped"] = True
            print(f"{head}: up to date ({step.output})", flush=True)
            continue
        resuming = rec.get("started_key") == key and rec.get("key") != key
        if not resuming:
            for path in step.clean:
                _remove(path)
        rec.update(started_key=key, key=None, skipped=False)
        save()
        print(f"{head} ...{' (resuming)' if resuming else ''}  $ {step.command}", flush=True)
        t0 = time.perf_counter()
        step.run()
        seconds = time.perf_counter() - t0
        ran += seconds
        rec.update(key=key, seconds=round(seconds, 1), finished_at=time.time())
        save()
        print(f"{head}: done in {_fmt_s(seconds)}", flush=True)
    save()  # records which steps this run reused
    print(f"demo: all {len(steps)} steps done in {_fmt_s(time.perf_counter() - total)} "
          f"({_fmt_s(ran)} of work this run)", flush=True)
    return state


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 120 else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def moon(argv: list[str], *, capture: Path | None = None) -> None:
    """Run one ``moon`` command in this process; with ``capture`` its stdout (JSON) is also
    written to that file. Raises :class:`StepFailed` on a non-zero status."""
    from moon_rec.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf) if capture is not None else contextlib.nullcontext():
        status = main(argv)
    if capture is not None:
        capture.parent.mkdir(parents=True, exist_ok=True)
        tmp = capture.with_suffix(capture.suffix + ".tmp")
        tmp.write_text(buf.getvalue())
        tmp.replace(capture)
    if status:
        raise StepFailed(f"`moon {' '.join(argv)}` exited with status {status}")


def encoder_preset(preset: str) -> str:
    """The encoder recipe for a world preset: configs/encoder/<preset>.yaml, else small."""
    return preset if (REPO_ROOT / "configs" / "encoder" / f"{preset}.yaml").is_file() else "small"


def ranker_experiments(preset: str) -> list[str]:
    """The ID-only baseline first, then the MOON rankers; tiny (smoke runs, tests) skips SIM,
    which only pays off on long sequences."""
    if preset == "tiny":
        return ["din_ids_tiny", "cube_moon_tiny"]
    return ["din_ids", "cube_moon", "sim_moon"]


def build_steps(preset: str, seed: int, art: Path) -> list[Step]:
    """The whole loop, in order (see the module docstring)."""
    from moon_rec.data.world import make_config

    art = art.resolve()
    world = art / "world"
    enc = art / "encoder"
    checkpoint = enc / "stage2"
    emb = art / "embeddings"
    fdata = art / "feature_data"
    fstate = art / "feature_repo"
    tset = art / "training_set.parquet"
    qemb = art / "query_embeddings.parquet"
    rankers = art / "rankers"
    cfg = make_config(preset, seed)
    epreset = encoder_preset(preset)
    experiments = ranker_experiments(preset)
    store = ["--state", str(fstate)]
    threads = max(1, min(2, os.cpu_count() or 1))  # the demo owns the machine

    def step(name: str, output: Path, argv: list[str], *, deps: Sequence[str] = (),
             params: dict[str, Any] | None = None, clean: Sequence[Path] = (),
             capture: Path | None = None, after: Callable[[], None] | None = None) -> Step:
        def run() -> None:
            moon(argv, capture=capture)
            if after is not None:
                after()
        return Step(name, output, run, {"argv": argv, **(params or {})}, tuple(deps),
                    tuple(clean), "moon " + " ".join(argv))

    def features_online() -> None:
        moon(["features", "init", "--data", str(fdata), "--embeddings", str(emb), *store])
        moon(["features", "apply", *store])
        moon(["features", "materialize", *store], capture=fstate / "materialized.json")

    def serve() -> None:
        from pipelines.demo_serving import exercise_service

        exercise_service(art, rankers / experiments[1], fstate, art / "serving.json")

    def report() -> None:
        from pipelines.demo_report import write_report

        write_report(art, preset=preset, seed=seed, experiments=experiments)

    steps = [
        step("generate world", world / "world.json",
             ["world", "generate", "--preset", preset, "--seed", str(seed), "--out", str(world)],
             params={"world": cfg.to_dict()}, clean=[world]),
        step("validate world", art / "world_valid.json",
             ["world", "validate", str(world), "--json"], deps=["generate world"],
             capture=art / "world_valid.json"),
        step("contact sheet", art / "contact_sheet.png",
             ["world", "show", str(world), "--out", str(art / "contact_sheet.png")],
             deps=["generate world"]),
        step("train encoder (pretrain, stage 1, stage 2)", checkpoint / "summary.json",
             ["encoder", "train", "--world", str(world), "--out", str(enc), "--preset", epreset,
              "--threads", str(threads)],
             deps=["generate world"], clean=[enc],
             params={"recipe": (REPO_ROOT / "configs/encoder" / f"{epreset}.yaml").read_text()}),
        step("image-search recall per Matryoshka dim", art / "recall.json",
             ["eval", "recall", "--world", str(world), "--checkpoint", str(checkpoint),
              "--out", str(art / "recall_stages" / "stage2.json"), "--threads", "2"],
             deps=["train encoder (pretrain, stage 1, stage 2)"],
             capture=art / "recall.txt", after=lambda: _stage_recalls(world, enc, art)),
        step("embed the catalog", emb / "manifest.json",
             ["embed", "--world", str(world), "--checkpoint", str(checkpoint), "--out", str(emb),
              "--no-progress"],
             deps=["train encoder (pretrain, stage 1, stage 2)"], clean=[emb],
             capture=art / "embed.json"),
        step("feature tables (behaviour sequences, item stats)", fdata / "summary.json",
             ["features", "build", "--world", str(world), "--out", str(fdata)],
             deps=["generate world"], clean=[fdata], capture=fdata / "summary.json"),
        Step("feast apply + materialize (SQLite online store)", fstate / "materialized.json",
             features_online, {"store": "embedded"},
             ("embed the catalog", "feature tables (behaviour sequences, item stats)"),
             clean=(fstate,),
             command=f"moon features init --data {fdata} --embeddings {emb} --state {fstate} "
             "&& moon features apply && moon features materialize"),
        step("point-in-time training set", tset,
             ["features", "training-set", "--world", str(world), "--out", str(tset),
              "--data", str(fdata)],
             deps=["feature tables (behaviour sequences, item stats)"], clean=[tset],
             capture=art / "training_set.json"),
        step("query-text embeddings", qemb,
             ["ranker", "embed-queries", "--training-set", str(tset), "--checkpoint",
              str(checkpoint), "--out", str(qemb)],
             deps=["point-in-time training set", "train encoder (pretrain, stage 1, stage 2)"],
             clean=[qemb]),
        step("train + compare rankers (ID-only DIN vs MOON CUBE / SIM)", rankers / "compare.json",
             ["ranker", "compare", "--training-set", str(tset), "--embeddings", str(emb),
              "--query-embeddings", str(qemb), "--world", str(world), "--out", str(rankers),
              "--experiments", *experiments, "--seed", str(seed)],
             deps=["point-in-time training set", "query-text embeddings", "embed the catalog"],
             clean=[rankers], capture=art / "compare.txt",
             params={"config": (REPO_ROOT / "configs/ranker/experiments.yaml").read_text()}),
        Step("serve: rank, add a new item, rank it", art / "serving.json", serve,
             {"model": experiments[1]},
             ("train + compare rankers (ID-only DIN vs MOON CUBE / SIM)",
              "feast apply + materialize (SQLite online store)"),
             command=f"moon serve --model {rankers / experiments[1]} --port <free>"),
        Step("report", art / "report.md", report, {"v": 1},
             ("image-search recall per Matryoshka dim",
              "serve: rank, add a new item, rank it", "contact sheet"),
             command="python -m pipelines.demo_report"),
    ]
    return steps


def _stage_recalls(world: Path, enc: Path, art: Path) -> None:
    """Recall of the earlier stages too (the report's per-stage table), then recall.json."""
    out = art / "recall_stages"
    for stage in ("pretrain", "stage1"):
        moon(["eval", "recall", "--world", str(world), "--checkpoint", str(enc / stage),
              "--out", str(out / f"{stage}.json"), "--no-baselines", "--threads", "2"],
             capture=out / f"{stage}.txt")
    shutil.copyfile(out / "stage2.json", art / "recall.json")


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
        run_steps(steps, art / "demo_state.json", force=args.force)
    except StepFailed as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"\nreport: {(art / 'report.md').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
