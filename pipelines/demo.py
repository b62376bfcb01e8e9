"""The main job: the MOON loop end to end on the embedded default (SQLite online store,
DuckDB/file offline store, synthetic world).

Each step is skipped when its output is up to date, so a second run takes seconds. Steps
land as the issues do; today: generate and validate the world, write its contact sheet.

    python -m pipelines.demo --preset small --seed 0 --artifacts artifacts
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Step:
    """One pipeline step: ``run()`` makes ``output``; skipped when ``output`` exists and the
    step's ``key`` (its config) matches the one recorded when it last ran."""

    name: str
    output: Path
    key: str
    run: Callable[[], None]


def run_steps(steps: list[Step], state_file: Path) -> None:
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    total = time.time()
    for i, step in enumerate(steps, 1):
        head = f"[{i}/{len(steps)}] {step.name}"
        if step.output.exists() and state.get(step.name) == step.key:
            print(f"{head}: up to date ({step.output})", flush=True)
            continue
        print(f"{head} ...", flush=True)
        t0 = time.time()
        step.run()
        state[step.name] = step.key
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(state, indent=2))
        print(f"{head}: done in {time.time() - t0:.1f}s", flush=True)
    print(f"demo: all steps done in {time.time() - total:.1f}s", flush=True)


def build_steps(preset: str, seed: int, art: Path) -> list[Step]:
    from moon_rec.data.world import make_config

    cfg = make_config(preset, seed)
    world = art / "world"
    key = json.dumps(cfg.to_dict(), sort_keys=True)

    def generate() -> None:
        import shutil

        from moon_rec.data.world import generate_world

        if world.exists():
            shutil.rmtree(world)  # the config changed: start a fresh world
        generate_world(cfg, world)

    def validate() -> None:
        from moon_rec.data.validation import validate_world

        report = validate_world(world)
        rows = {name: t.n_rows for name, t in report.tables.items()}
        (art / "world_valid.json").write_text(json.dumps(rows, indent=2))

    def sheet() -> None:
        from moon_rec.data.contact_sheet import contact_sheet

        contact_sheet(world, art / "contact_sheet.png", n=16)

    return [
        Step("generate world", world / "world.json", key, generate),
        Step("validate world", art / "world_valid.json", key, validate),
        Step("contact sheet", art / "contact_sheet.png", key, sheet),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args = parser.parse_args()
    art: Path = args.artifacts
    run_steps(build_steps(args.preset, args.seed, art), art / "demo_state.json")
    meta = json.loads((art / "world" / "world.json").read_text())
    meta.pop("config", None)
    print("\nworld summary:")
    print(json.dumps(meta, indent=2))
    print(f"\nartefacts: world {art / 'world'}, contact sheet {art / 'contact_sheet.png'}")


if __name__ == "__main__":
    main()
