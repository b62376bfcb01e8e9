"""The world's ``moon`` commands as requests (:mod:`moon_rec.command`): ``moon world
generate | validate | show`` and ``moon data import movielens``, run by the CLI and by the
loop's world steps alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

from moon_rec.command import MoonCommand, write_json
from moon_rec.data.errors import DataError


def world_summary(meta: dict[str, Any]) -> dict[str, Any]:
    """world.json without its config block (what ``moon world generate | summary`` print)."""
    return {k: v for k, v in meta.items() if k != "config"}


class WorldGenerate(MoonCommand):
    """``moon world generate``: a seeded synthetic world (same preset, seed and overrides,
    same content; a killed run resumes from its finished parts). An existing world is kept
    when it is the same one, an error otherwise unless ``overwrite``."""

    words = ("world", "generate")
    code = ("moon_rec.data.world",)

    preset: str = "small"
    seed: int = 0
    out: Path
    n_items: int | None = None
    n_users: int | None = None
    n_requests: int | None = None
    n_brands: int | None = None
    days: int | None = None
    image_size: int | None = None
    workers: int | None = None
    overwrite: bool = False
    quiet: bool = False

    def run(self) -> int:
        from moon_rec.data.world import generate_world, make_config

        cfg = make_config(self.preset, self.seed, n_items=self.n_items, n_users=self.n_users,
                          n_requests=self.n_requests, n_brands=self.n_brands, days=self.days,
                          image_size=self.image_size, workers=self.workers)
        out = self.out
        if (out / "world.json").exists():
            if not self.overwrite:
                from moon_rec.data.io import read_world_meta

                try:
                    existing = read_world_meta(out)
                except DataError as exc:
                    raise DataError(f"{exc.reason}; pass --overwrite to replace this world",
                                    file=exc.file, column=exc.column) from exc
                if existing.get("config") == cfg.to_dict():
                    print(f"world {out} is up to date (preset {cfg.preset}, seed {cfg.seed})")
                    return 0
                raise DataError("a different world exists here; pass --overwrite", file=str(out))
            shutil.rmtree(out)
        elif out.exists() and self.overwrite:
            shutil.rmtree(out)
        meta = generate_world(cfg, out, progress=not self.quiet)
        print(json.dumps(world_summary(meta), indent=2))
        return 0


class WorldValidate(MoonCommand):
    """``moon world validate WORLD``: every table and world.json against the data contracts;
    a problem is an error naming file, column and row. ``out``: also write the report (JSON)
    there."""

    words = ("world", "validate")
    positional = ("world",)
    flags: ClassVar[dict[str, str]] = {"as_json": "--json"}
    code = ("moon_rec.data.validation",)

    world: Path
    fast: bool = False
    as_json: bool = False
    out: Path | None = None

    def run(self) -> int:
        from moon_rec.data.validation import validate_world

        report = validate_world(self.world, full_images=not self.fast)
        tables = {name: {"rows": t.n_rows, "files": [str(f) for f in t.files]}
                  for name, t in report.tables.items()}
        record = {"world": str(self.world), "valid": True, "tables": tables}
        if self.out is not None:
            write_json(self.out, record)
        if self.as_json:
            print(json.dumps(record, indent=2))
        else:
            for name, t in tables.items():
                print(f"{name:14s} {t['rows']:>10,d} rows  ok")
            print(f"{self.world}: valid")
        return 0


class WorldCopy(MoonCommand):
    """``moon world copy WORLD --out DIR``: validate a world (an import's output) and copy
    its tables, id maps and world.json into ``DIR``, replacing what is there."""

    words = ("world", "copy")
    positional = ("world",)
    code = ("moon_rec.data.io",)

    world: Path
    out: Path

    def run(self) -> int:
        from moon_rec.data.io import copy_world

        print(f"copied {self.world} -> {copy_world(self.world, self.out)}")
        return 0


class WorldShow(MoonCommand):
    """``moon world show WORLD``: a contact sheet, catalog photos beside image queries."""

    words = ("world", "show")
    positional = ("world",)
    code = ("moon_rec.data.contact_sheet",)

    world: Path
    n: int = 16
    out: Path = Path("sheet.png")

    def run(self) -> int:
        from moon_rec.data.contact_sheet import contact_sheet

        print(f"wrote {contact_sheet(self.world, self.out, n=self.n)}")
        return 0


class MovieLensImport(MoonCommand):
    """``moon data import movielens``: MovieLens-100k -> a text-only world (prints
    world.json)."""

    words = ("data", "import", "movielens")
    code = ("moon_rec.data.movielens", "moon_rec.data.logs")

    path: Path
    out: Path
    split_quantile: float = 0.8
    overwrite: bool = False

    def run(self) -> int:
        from moon_rec.data.movielens import import_movielens

        meta = import_movielens(self.path, self.out, split_quantile=self.split_quantile,
                                overwrite=self.overwrite)
        print(json.dumps(meta, indent=2))
        return 0
