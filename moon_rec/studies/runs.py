"""The points of the studies: encoder versions, their intermediate metrics and embeddings,
and downstream ranker runs. Each is a :class:`~moon_rec.studies.points.Point` whose
config records everything it depends on.

Study directory layout (``out``)::

    study.json                  the study config, world, ranker set, versions
    shared/                     the loop's layout of the study (moon_rec.loop.Layout):
      training_set.parquet        the full ranker training set (feature tables + Feast)
      encoder/<stage>/            the recipe run (the loop's encoder step), with
      encoder/<stage>/snapshots/step-NNNNNN/   the kept snapshots
      ranker_set.parquet          the ranker set (the training set, or a seeded subset)
    encoders/<version>/         variant runs (moon_rec.training run directories) and the
                                untrained encoder
    embeddings/<version>/       items.parquet + queries.parquet (the ranker's content input)
    rankers/<kind>/<point>/     ranker model directories (weights deleted after evaluation)
    points/<kind>/<name>.json   one finished point each (see points.py)

The recipe is trained once, by the loop's encoder step (``run_steps`` with its key: a
finished recipe is never retrained, a killed one resumes from its last checkpoint); the
versions are its snapshots, its stages' final encoders, short variant runs started from
them, and encoders given from elsewhere. The ranker set is built once: only the item/query
embedding input changes between versions; the ranker's budget (experiment, epochs, seeds)
is fixed by the study config.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moon_rec import runtime
from moon_rec.data.embeddings import embedding_table, prefixes_of, write_embedding_table
from moon_rec.ranking.diagnostics import has_style_truth
from moon_rec.studies.config import STYLE_PROBE_DIM, StudyConfig
from moon_rec.studies.points import Point, PointStore

TS = pa.timestamp("us", tz="UTC")
RECIPE_STAGES: tuple[str, ...] = ("pretrain", "stage1", "stage2")


@dataclass(frozen=True)
class EncoderVersion:
    """One encoder version of the studies.

    Args:
        name: ``untrained``, ``pretrain``, ``stage1``, ``stage2`` (the recipe stages' final
            encoders), ``stage1_s00100`` (a snapshot), ``queue_q01024``, a variant's or a
            given encoder's name.
        source: ``untrained``, ``recipe``, ``variant`` or ``given``.
        stage: the recipe stage it comes from (a variant: the stage it runs).
        step: the snapshot's step (None: a stage's final encoder).
        group: ``baseline``, ``pretrain``, ``stage1`` (the tokens axis), ``stage2``,
            ``negatives``, a variant's group, ``given``.
        pairs_seen: post-training pairs seen (steps x batch of stages 1 and 2; None: unknown).
        negatives: negatives per query of its last post-training stage (in-batch + hard +
            queue; 0 before post-training; None: unknown).
        init: a variant's starting checkpoint.
    """

    name: str
    source: str
    stage: str | None
    step: int | None
    group: str
    pairs_seen: int | None
    negatives: int | None
    init: str | None = None


def recipe_config(config: StudyConfig) -> Any:
    """The recipe's TrainConfig (configs/encoder/<preset>.yaml with the overrides)."""
    from moon_rec.training.config import load_config

    return load_config(config.encoder.preset, None,
                       [f"threads={config.threads}", *config.encoder.overrides])


def _negatives(sc: Any) -> int:
    return int(sc.batch_size - 1 + sc.batch_size * sc.hard_negatives + sc.queue_size)


def variant_stage_config(config: StudyConfig, name: str, recipe: Any | None = None) -> Any:
    """A variant's StageConfig: the recipe stage with the variant's steps and settings."""
    recipe = recipe or recipe_config(config)
    e = config.encoder
    if name.startswith("queue_q"):
        stage, steps, update = "stage2", None, {"queue_size": int(name[7:])}
    else:
        v = e.variants[name]
        stage, steps, update = v.stage, v.steps, dict(v.update)
    sc = recipe.stage(stage)
    if steps is not None:
        update.update(steps=steps, checkpoint_every=max(1, steps // 2))
    return sc.model_copy(update=update), stage


def encoder_versions(config: StudyConfig) -> list[EncoderVersion]:
    """Every encoder version of a study config: the untrained encoder, the recipe's
    snapshots and stages, the variants, the given encoders."""
    recipe = recipe_config(config)
    e = config.encoder
    pre = {"pretrain": 0, "stage1": 0,
           "stage2": recipe.stage1.steps * recipe.stage1.batch_size}
    negs = {"pretrain": 0, "stage1": _negatives(recipe.stage1),
            "stage2": _negatives(recipe.stage2)}
    out = [EncoderVersion("untrained", "untrained", None, None, "baseline", 0, 0)]
    for stage in RECIPE_STAGES:
        sc = recipe.stage(stage)
        per_step = 0 if stage == "pretrain" else sc.batch_size
        for s in sorted(set(e.snapshots.get(stage, ()))):
            if s < sc.steps:  # the last step is the stage's final encoder
                out.append(EncoderVersion(f"{stage}_s{s:05d}", "recipe", stage, s, stage,
                                          pre[stage] + s * per_step, negs[stage]))
        out.append(EncoderVersion(stage, "recipe", stage, None, stage,
                                  pre[stage] + sc.steps * per_step, negs[stage]))
    named = [(n, v.group, v.init) for n, v in e.variants.items()]
    named += [(f"queue_q{q:05d}", "negatives", "stage1") for q in sorted(set(e.queue_sizes))]
    for name, group, init in named:
        sc, stage = variant_stage_config(config, name, recipe)
        before = {"untrained": 0, "pretrain": 0, "stage1": pre["stage2"],
                  "stage2": pre["stage2"] + recipe.stage2.steps * recipe.stage2.batch_size}[init]
        out.append(EncoderVersion(name, "variant", stage, None, group,
                                  before + sc.steps * sc.batch_size, _negatives(sc), init))
    out += [EncoderVersion(n, "given", None, None, "given", None, None) for n in e.given]
    return out


def version_by_name(config: StudyConfig, name: str) -> EncoderVersion:
    versions = {v.name: v for v in encoder_versions(config)}
    if name not in versions:
        raise ValueError(f"unknown encoder version {name!r} (known: {', '.join(versions)})")
    return versions[name]


class Study:
    """One study directory: the world, the config, the recipe, the ranker set, the points.

    Args:
        world: the world directory.
        out: the study directory.
        config: the study config.
        training_set: the full ranker training set (``moon features training-set``); the
            study keeps it, or a seeded subset of its requests, in ``shared/ranker_set``.
        progress: progress bars (sweep and encoder training).
    """

    def __init__(self, world: str | Path, out: str | Path, config: StudyConfig,
                 training_set: str | Path | None = None, progress: bool = True) -> None:
        self.world = Path(world)
        self.out = Path(out)
        self.config = config
        self.training_set = Path(training_set) if training_set is not None else None
        self.progress = progress
        self.store = PointStore(self.out)
        self._data: Any = None
        self._recipe_done = False
        self.out.mkdir(parents=True, exist_ok=True)

    # -- shared inputs ------------------------------------------------------------------

    @property
    def data(self) -> Any:
        """The world loaded once (moon_rec.training.data.WorldData)."""
        if self._data is None:
            from moon_rec.training.data import load_world

            self._data = load_world(self.world)
        return self._data

    @property
    def ranker_set(self) -> Path:
        return self.out / "shared" / "ranker_set.parquet"

    def prepare_ranker_set(self) -> dict[str, Any]:
        """Write ``shared/ranker_set.parquet`` once: the training set, or a seeded subset
        of requests per split (``ranker.max_*_requests``; 0 keeps all)."""
        info_path = self.out / "shared" / "ranker_set.json"
        r = self.config.ranker
        want = {"source": str(self.training_set), "max_train_requests": r.max_train_requests,
                "max_test_requests": r.max_test_requests, "seed": self.config.seed}
        if self.ranker_set.is_file() and info_path.is_file():
            info: dict[str, Any] = json.loads(info_path.read_text())
            if info.get("selection") == want:
                return info
        if self.training_set is None:
            raise ValueError("the study needs a training set to build its ranker set")
        table = pq.read_table(self.training_set)
        req = table.column("request_id").to_numpy()
        split = table.column("split").to_numpy(zero_copy_only=False)
        keep = np.zeros(len(req), dtype=bool)
        rng = np.random.default_rng([self.config.seed, 11])
        for name, cap in (("train", r.max_train_requests), ("test", r.max_test_requests)):
            in_split = split == name
            reqs = np.unique(req[in_split])
            if cap and len(reqs) > cap:
                reqs = np.sort(rng.choice(reqs, cap, replace=False))
            keep |= in_split & np.isin(req, reqs)
        sub = table.filter(pa.array(keep))
        self.ranker_set.parent.mkdir(parents=True, exist_ok=True)
        with runtime.atomic_path(self.ranker_set) as tmp:
            pq.write_table(sub, tmp)
        s = sub.column("split").to_numpy(zero_copy_only=False)
        info = {"selection": want, "rows": sub.num_rows, "train_rows": int((s == "train").sum()),
                "test_rows": int((s == "test").sum()), "source_rows": table.num_rows}
        runtime.atomic_write_json(info_path, info, default=str)
        return info

    def write_manifest(self, study: str, extra: dict[str, Any] | None = None) -> None:
        path = self.out / "study.json"
        manifest: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        manifest.update({"world": str(self.world.resolve()), "config": self.config.model_dump(),
                         "versions": [asdict(v) for v in encoder_versions(self.config)]})
        manifest.setdefault("studies", {})[study] = {
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"), **(extra or {})}
        runtime.atomic_write_json(path, manifest, default=str)

    # -- the recipe (the loop's encoder step) -------------------------------------------

    @property
    def layout(self) -> Any:
        """The loop layout of the study's shared artefacts (``shared/``)."""
        from moon_rec.loop import Layout

        return Layout.at(self.out / "shared", world=self.world)

    def recipe_step(self) -> Any:
        """The loop's encoder step for the study's recipe, keeping the snapshots."""
        from moon_rec.loop import encoder_step

        e = self.config.encoder
        return encoder_step(self.layout, e.preset, threads=self.config.threads, deps=(),
                            overrides=e.overrides, snapshots=dict(e.snapshots),
                            progress=self.progress)

    @functools.cached_property
    def recipe_key(self) -> str:
        """The recipe step's key (its recipe, snapshots, threads and trainer code): part of
        every recipe-derived point's config, so a retrained recipe recomputes them."""
        from moon_rec.loop import step_key

        return step_key(self.recipe_step(), {})

    @functools.cached_property
    def recipe(self) -> Any:
        """The recipe's TrainConfig (``recipe_config``)."""
        return recipe_config(self.config)

    @functools.cached_property
    def versions(self) -> dict[str, EncoderVersion]:
        """name -> version, in ``encoder_versions`` order."""
        return {v.name: v for v in encoder_versions(self.config)}

    def version(self, name: str) -> EncoderVersion:
        if name not in self.versions:
            raise ValueError(f"unknown encoder version {name!r} "
                             f"(known: {', '.join(self.versions)})")
        return self.versions[name]

    def _rel(self, path: Path) -> str:
        """``path`` relative to the study directory when inside it (a study folder can move)."""
        try:
            return str(path.resolve().relative_to(self.out.resolve()))
        except ValueError:
            return str(path)

    def train_recipe(self) -> dict[str, Any]:
        """Run (or find, or resume) the recipe; returns the loop's state record."""
        from moon_rec.loop import run_steps

        state = run_steps([self.recipe_step()], self.out / "shared" / "encoder_state.json",
                          label="study recipe")
        self._recipe_done = True
        return state

    def stage_dir(self, stage: str) -> Path:
        return self.layout.encoder / stage

    def checkpoint(self, v: EncoderVersion) -> Path:
        """Where version ``v``'s encoder is (once its point ran)."""
        from moon_rec.training.commands import snapshot_dir

        if v.source == "untrained":
            return self.out / "encoders" / "untrained" / "encoder"
        if v.source == "recipe":
            assert v.stage is not None
            d = self.stage_dir(v.stage)
            return snapshot_dir(d, v.step) if v.step is not None else d / "encoder"
        if v.source == "variant":
            return self.out / "encoders" / v.name / "encoder"
        return Path(self.config.encoder.given[v.name]).resolve()

    def _init_dir(self, init: str) -> Path:
        if init == "untrained":
            return self._untrained()
        if not self._recipe_done:
            self.train_recipe()
        return self.stage_dir(init) / "encoder"

    def _untrained(self) -> Path:
        from moon_rec.training.trainer import build_untrained_encoder

        path = self.out / "encoders" / "untrained" / "encoder"
        if not (path / "moon_encoder.json").is_file():
            build_untrained_encoder(self.data, self.recipe, path,
                                    seed=self.config.seed)
        return path

    def _train_variant(self, v: EncoderVersion) -> dict[str, Any]:
        from moon_rec.training.trainer import train_stage

        assert v.init is not None and v.stage is not None
        sc, stage = variant_stage_config(self.config, v.name, self.recipe)
        cfg = self.recipe.model_copy(update={stage: sc})
        init = self._init_dir(v.init)
        return train_stage(self.data, stage, cfg, self.out / "encoders" / v.name, init=init,
                           progress=self.progress)

    def encoder_config(self, v: EncoderVersion) -> dict[str, Any]:
        """What version ``v``'s encoder depends on."""
        cfg: dict[str, Any] = {"version": asdict(v), "world": str(self.world)}
        if v.source == "untrained":
            cfg["recipe"] = self.recipe.model_dump(mode="json")
            cfg["seed"] = self.config.seed
        elif v.source == "given":
            from moon_rec.loop import folder_digest

            path = self.checkpoint(v)
            cfg.update(path=str(path), digest=folder_digest(path) if path.is_dir() else None)
        else:
            cfg["recipe_key"] = self.recipe_key
            if v.source == "variant":
                sc, _stage = variant_stage_config(self.config, v.name, self.recipe)
                cfg["stage_config"] = sc.model_dump(mode="json")
        return cfg

    def encoder_point(self, v: EncoderVersion) -> Point:
        """Train (or find) the encoder of version ``v``."""

        def run() -> dict[str, Any]:
            from moon_rec.encoders import MoonEncoder

            summary: dict[str, Any] = {}
            if v.source == "untrained":
                self._untrained()
            elif v.source == "recipe":
                if not self._recipe_done:
                    self.train_recipe()
                assert v.stage is not None
                summary = json.loads((self.stage_dir(v.stage) / "summary.json").read_text())
            elif v.source == "variant":
                summary = self._train_variant(v)
            path = self.checkpoint(v)
            if not (path / "moon_encoder.json").is_file():
                raise FileNotFoundError(f"no encoder checkpoint for version {v.name} at {path}")
            enc = MoonEncoder.from_pretrained(path)
            loss, negatives = (summary.get("final") or {}).get("loss"), v.negatives
            if v.step is not None:  # a snapshot: the logged loss up to its step
                assert v.stage is not None
                log = self.stage_dir(v.stage) / "train_log.jsonl"
                rows = [json.loads(line) for line in log.read_text().splitlines()] \
                    if log.is_file() else []
                loss = next((r.get("loss") for r in reversed(rows) if r["step"] <= v.step), None)
            elif summary and v.stage != "pretrain":  # measured by the trainer
                negatives = (summary.get("final") or {}).get("negatives_per_query", negatives)
            return {"checkpoint": self._rel(path), "model_version": enc.model_version,
                    "train_loss": loss, "negatives_per_query": negatives,
                    "pairs_seen": v.pairs_seen,
                    "run_seconds": summary.get("seconds") if v.source == "variant" else None}

        return Point("encoder", v.name, self.encoder_config(v), run, seed=self.config.seed)

    # -- intermediate metrics + embeddings ----------------------------------------------

    def embeddings_dir(self, version: str) -> Path:
        return self.out / "embeddings" / version

    def metrics_point(self, v: EncoderVersion) -> Point:
        """Intermediate metrics of version ``v`` (image-search recall@1/10/100 per
        Matryoshka size, text-query recall, category probe, image-title alignment, style
        probe), and its item + query embeddings."""
        encoder_cfg = self.encoder_config(v)

        def run() -> dict[str, Any]:
            from moon_rec.encoders import MoonEncoder
            from moon_rec.encoders.inference import embed_products
            from moon_rec.ranking.diagnostics import style_probe
            from moon_rec.ranking.queries import write_query_embeddings
            from moon_rec.retrieval.recall import evaluate_encoder

            runtime.set_threads(self.config.threads)
            rec = self.store.get("encoder", v.name)
            assert rec is not None, f"encoder point {v.name} missing"
            ckpt = self.out / rec["result"]["checkpoint"]
            enc = MoonEncoder.from_pretrained(ckpt).eval()
            item_emb = embed_products(enc, self.data.product_titles, self.data.images)
            metrics = evaluate_encoder(enc, self.data, seed=self.config.seed, item_emb=item_emb)
            for d, vals in (metrics.get("by_dim") or {}).items():
                if int(d) != enc.dims[-1]:
                    metrics.update({f"{k}_d{d}": val for k, val in vals.items()})
            edir = self.embeddings_dir(v.name)
            write_item_embeddings(self.data.item_id, item_emb, enc.dims, enc.model_version,
                                  edir / "items.parquet")
            write_query_embeddings(self.ranker_set, ckpt, edir / "queries.parquet")
            style: dict[str, Any] | None = None
            if has_style_truth(self.world) and STYLE_PROBE_DIM in enc.dims:
                style = style_probe(self.world, edir / "items.parquet", dim=STYLE_PROBE_DIM,
                                    seed=self.config.seed)
            metrics["style_r2"] = style["linear_r2"] if style else None
            metrics["style_probe"] = style
            return {**metrics, "embeddings": str(edir.relative_to(self.out))}

        return Point("metrics", v.name, {"version": v.name, "encoder": encoder_cfg,
                                         "ranker_set": str(self.ranker_set),
                                         "seed": self.config.seed, "style_dim": STYLE_PROBE_DIM},
                     run, seed=self.config.seed)

    # -- downstream ranker ----------------------------------------------------------------

    def ranker_base(self, experiment: str | None = None) -> dict[str, Any]:
        """The ranker experiment as resolved at the study's first use, frozen in
        ``ranker_<experiment>.json``: edits of the YAML (or new options of the ranker) do not
        change a running or resumed study."""
        from moon_rec.ranking.config import load_ranker_config

        name = experiment or self.config.ranker.experiment
        path = self.out / f"ranker_{name}.json"
        if not path.is_file():
            cfg = load_ranker_config(self.config.ranker.config_path(), name)
            runtime.atomic_write_json(path, cfg.to_dict(), default=str)
        base: dict[str, Any] = json.loads(path.read_text())
        return base

    def ranker_settings(self, seed: int, max_seq_len: int | None = None,
                        experiment: str | None = None) -> dict[str, Any]:
        """What a ranker point depends on: the frozen experiment and the study's budget."""
        r = self.config.ranker
        return {"experiment": experiment or r.experiment, "base": self.ranker_base(experiment),
                "seed": seed, "epochs": r.epochs, "batch_size": r.batch_size,
                "max_seq_len": max_seq_len}

    def ranker_config(self, seed: int, max_seq_len: int | None = None,
                      experiment: str | None = None) -> Any:
        from moon_rec.ranking.config import RankerConfig

        r = self.config.ranker
        train: dict[str, Any] = {"seed": seed, "checkpoint_every": 0}
        if r.epochs is not None:
            train["epochs"] = r.epochs
        if r.batch_size is not None:
            train["batch_size"] = r.batch_size
        overrides: dict[str, Any] = {"train": train}
        if max_seq_len is not None:
            overrides["max_seq_len"] = max_seq_len
        return RankerConfig.from_dict(self.ranker_base(experiment)).with_overrides(overrides)

    def ranker_point(self, version: str, seed: int, *, kind: str = "ranker",
                     max_seq_len: int | None = None) -> Point:
        """Train + evaluate the study's ranker on ``version``'s embeddings, seed ``seed``."""
        name = f"{version}--seed{seed}" if max_seq_len is None else \
            f"L{max_seq_len:03d}--{version}--seed{seed}"
        cfg = self.ranker_config(seed, max_seq_len)

        def run() -> dict[str, Any]:
            from moon_rec.ranking.evaluate import evaluate_ranker
            from moon_rec.ranking.train import train_ranker

            runtime.set_threads(self.config.threads)
            rec = self.store.get("metrics", version)
            assert rec is not None, f"metrics point {version} missing"
            edir = self.out / rec["result"]["embeddings"]
            model_dir = self.out / "rankers" / kind / name
            meta = train_ranker(self.ranker_set, cfg, model_dir, embeddings=edir / "items.parquet",
                                query_embeddings=edir / "queries.parquet", resume=True,
                                progress=False)
            # no oracle join per point (it re-reads every impression of the world): the
            # studies compare versions with each other, not with the oracle
            report = evaluate_ranker(model_dir)
            report["train_loss"] = meta.get("train_loss")
            report["train_steps"] = meta.get("steps")
            _drop_weights(model_dir)
            return report

        v = self.version(version)
        return Point(kind, name, {"version": version,
                                  "ranker": self.ranker_settings(seed, max_seq_len),
                                  "metrics": self.metrics_point(v).config,
                                  "ranker_set": str(self.ranker_set), "world": str(self.world)},
                     run, seed=seed)

    def reference_point(self, seed: int) -> Point:
        """The ID-only reference ranker (``ranker.reference_experiment``, no content
        features) on the same ranker set and seed: the floor the content features lift."""
        name_exp = self.config.ranker.reference_experiment
        assert name_exp is not None
        cfg = self.ranker_config(seed, experiment=name_exp)
        name = f"{name_exp}--seed{seed}"

        def run() -> dict[str, Any]:
            from moon_rec.ranking.evaluate import evaluate_ranker
            from moon_rec.ranking.train import train_ranker

            runtime.set_threads(self.config.threads)
            model_dir = self.out / "rankers" / "reference" / name
            train_ranker(self.ranker_set, cfg, model_dir, resume=True, progress=False)
            report = evaluate_ranker(model_dir)
            _drop_weights(model_dir)
            return report

        return Point("reference", name, {"ranker": self.ranker_settings(seed, None, name_exp),
                                         "ranker_set": str(self.ranker_set),
                                         "world": str(self.world)}, run, seed=seed)


def _drop_weights(model_dir: Path) -> None:
    """The weights are not needed again once evaluated; keep the study directory small."""
    from moon_rec.ranking.model_dir import RankerDir

    RankerDir(model_dir).remove_weights()


def write_item_embeddings(item_ids: np.ndarray, emb: np.ndarray, dims: tuple[int, ...],
                          model_version: str, path: Path) -> Path:
    """The item-embedding parquet contract (item_id, emb_{d} renormalised prefixes,
    model_version, event_timestamp), written atomically."""
    table = embedding_table(item_ids, prefixes_of(emb, dims), model_version, datetime.now(UTC))
    return write_embedding_table(table, path)
