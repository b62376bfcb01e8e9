"""The points of the studies: encoder versions, their intermediate metrics and embeddings,
and downstream ranker runs. Each is a :class:`~moon_rec.studies.points.Point` whose
config records everything it depends on.

Study directory layout (``out``)::

    study.json                  the study config, world, ranker set, versions
    shared/ranker_set.parquet   the ranker training set (the seeded request subset), made
                                once: IDs and behaviour sequences do not depend on the encoder
    encoders/<run>/             encoder training runs (moon_rec.training run directories);
                                encoders/main/snapshots/step-NNNNNN/ the kept snapshots
    embeddings/<version>/       items.parquet + queries.parquet (the ranker's content input)
    rankers/<point>/            ranker model directories
    points/<kind>/<name>.json   one finished point each (see points.py)

The cheap path to an AUC per encoder version: the training set is built once, and only the
item/query embedding input changes between versions; the ranker's budget (experiment,
epochs, request subset, seeds) is fixed by the study config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moon_rec import runtime
from moon_rec.data.embeddings import embedding_table, prefixes_of, write_embedding_table
from moon_rec.studies.config import StudyConfig
from moon_rec.studies.points import Point, PointStore

TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class EncoderVersion:
    """One encoder version of the studies.

    Args:
        name: e.g. ``untrained``, ``pretrain``, ``main_s00100``, ``text_only``, ``neg_q0128``.
        run: the training run that makes it (``untrained``, ``pretrain``, ``main``,
            ``text_only``, ``image_only``, ``neg_qNNNN``).
        step: the main run's snapshot step (None: the run's final encoder).
        pairs_seen: post-training pairs seen (steps x batch), 0 before post-training.
        negatives: negatives per query in post-training (in-batch + queue), 0 before.
        group: ``baseline``, ``tokens``, ``modality`` or ``negatives``.
    """

    name: str
    run: str
    step: int | None
    pairs_seen: int
    negatives: int
    group: str


def encoder_versions(config: StudyConfig) -> list[EncoderVersion]:
    """Every encoder version of a study config, weakest-looking first."""
    e = config.encoder
    bs = e.batch_size
    out = [EncoderVersion("untrained", "untrained", None, 0, 0, "baseline"),
           EncoderVersion("pretrain", "pretrain", None, 0, 0, "baseline")]
    out += [EncoderVersion(f"main_s{s:05d}", "main", s, s * bs, bs - 1, "tokens")
            for s in sorted(set(e.snapshots))]
    out += [EncoderVersion("text_only", "text_only", None, e.variant_steps * bs, bs - 1,
                           "modality"),
            EncoderVersion("image_only", "image_only", None, e.variant_steps * bs, bs - 1,
                           "modality")]
    out += [EncoderVersion(f"neg_q{q:04d}", f"neg_q{q:04d}", None, e.variant_steps * bs,
                           bs - 1 + q, "negatives") for q in sorted(set(e.queue_sizes))]
    return out


def version_by_name(config: StudyConfig, name: str) -> EncoderVersion:
    versions = {v.name: v for v in encoder_versions(config)}
    if name == "main":  # the main run's last snapshot
        name = f"main_s{max(config.encoder.snapshots):05d}"
    if name not in versions:
        raise ValueError(f"unknown encoder version {name!r} (known: {', '.join(versions)})")
    return versions[name]


class Study:
    """One study directory: the world, the config, the shared ranker set, the points.

    Args:
        world: the world directory.
        out: the study directory.
        config: the study config.
        training_set: the full ranker training set (``moon features training-set``); the
            study keeps a seeded subset of its requests in ``shared/ranker_set.parquet``.
        progress: show the sweep's progress bar.
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
        """Write ``shared/ranker_set.parquet`` once: the training set restricted to a seeded
        subset of requests per split (``ranker.max_*_requests``; 0 keeps all)."""
        info_path = self.out / "shared" / "ranker_set.json"
        r = self.config.ranker
        want = {"source": str(self.training_set), "max_train_requests": r.max_train_requests,
                "max_test_requests": r.max_test_requests, "seed": self.config.seed}
        if self.ranker_set.is_file() and info_path.is_file():
            import json

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
        import json

        path = self.out / "study.json"
        manifest: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        manifest.update({"world": str(self.world.resolve()), "config": self.config.model_dump(),
                         "versions": [asdict(v) for v in encoder_versions(self.config)]})
        manifest.setdefault("studies", {})[study] = {
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"), **(extra or {})}
        runtime.atomic_write_json(path, manifest, default=str)

    # -- encoder runs -------------------------------------------------------------------

    @property
    def recipe_path(self) -> Path:
        return self.out / "encoder_recipe.yaml"

    def recipe(self) -> dict[str, Any]:
        """The encoder recipe of the study, frozen at its first use: a copy of
        configs/encoder/<preset>.yaml in the study directory, so that edits of the preset
        while a study runs (or between resumes) do not change its versions."""
        import yaml

        from moon_rec.training.config import PRESET_DIR as ENCODER_PRESETS

        if not self.recipe_path.is_file():
            src = ENCODER_PRESETS / f"{self.config.encoder.preset}.yaml"
            if not src.is_file():
                raise ValueError(f"unknown encoder preset {self.config.encoder.preset!r}")
            runtime.atomic_write_text(self.recipe_path, src.read_text())
        raw: dict[str, Any] = yaml.safe_load(self.recipe_path.read_text()) or {}
        return raw

    def run_recipe(self, run: str) -> tuple[list[str], dict[str, Any]]:
        """(``key=value`` overrides of the recipe, stage-1 updates) of a training run."""
        e = self.config.encoder
        ov = [*e.overrides, f"seed={self.config.seed}", f"threads={self.config.threads}",
              f"pretrain.steps={e.pretrain_steps}", f"pretrain.batch_size={e.pretrain_batch_size}",
              f"pretrain.checkpoint_every={max(1, e.pretrain_steps // 2)}"]
        if run != "pretrain":  # the pretraining run's config does not depend on stage 1's
            steps = e.main_steps if run == "main" else e.variant_steps
            ov += [f"stage1.batch_size={e.batch_size}", f"stage1.steps={steps}",
                   f"stage1.checkpoint_every={max(1, steps // 2)}",
                   f"stage1.warmup_steps={max(1, min(steps // 10, 50))}"]
        update: dict[str, Any] = {}
        if run == "text_only":
            update = {"mix": dict(e.text_only_mix)}
        elif run == "image_only":
            update = {"mix": dict(e.image_only_mix)}
        elif run.startswith("neg_q"):
            update = {"queue_size": int(run[5:])}
        return ov, update

    def train_config(self, run: str) -> Any:
        """The moon_rec.training TrainConfig of a training run of this study."""
        from moon_rec.training.config import load_config

        self.recipe()
        ov, update = self.run_recipe(run)
        cfg = load_config(path=self.recipe_path, overrides=ov)
        return cfg.model_copy(update={"stage1": cfg.stage1.model_copy(update=update)})

    def run_dir(self, run: str) -> Path:
        return self.out / "encoders" / run

    def snapshot_dir(self, step: int) -> Path:
        return self.run_dir("main") / "snapshots" / f"step-{step:06d}"

    def _finished(self, run: str, cfg: Any) -> dict[str, Any] | None:
        """The summary of ``run`` when it finished with this recipe. Keys the trainer's
        config gained since (new options at their defaults) do not count as a change."""
        import json

        path = self.run_dir(run) / "summary.json"
        if not (path.is_file() and (self.run_dir(run) / "encoder" / "moon_encoder.json").is_file()):
            return None
        summary: dict[str, Any] = json.loads(path.read_text())
        old = {k: v for k, v in (summary.get("config") or {}).items() if k != "threads"}
        new = {k: v for k, v in cfg.model_dump(mode="json").items() if k != "threads"}
        return summary if old and _contained(old, new) else None

    def _train(self, run: str) -> dict[str, Any]:
        """Train ``run`` (resumes; returns at once when finished) and return its summary."""
        from moon_rec.training.trainer import train_stage

        cfg = self.train_config(run)
        done = self._finished(run, cfg)
        if done is not None and (run != "main" or all(
                (self.snapshot_dir(s) / "moon_encoder.json").is_file()
                for s in self.config.encoder.snapshots)):
            return done
        if run == "pretrain":
            return train_stage(self.data, "pretrain", cfg, self.run_dir(run), progress=False)
        self._train("pretrain")
        on_step = None
        if run == "main":
            snaps = set(self.config.encoder.snapshots)

            def on_step(step: int, encoder: Any) -> None:
                if step in snaps and not (self.snapshot_dir(step) / "moon_encoder.json").is_file():
                    encoder.save_pretrained(self.snapshot_dir(step))  # atomic

        summary = train_stage(self.data, "stage1", cfg, self.run_dir(run),
                              init=self.run_dir("pretrain"), progress=False, on_step=on_step)
        if run == "main" and not all((self.snapshot_dir(s) / "moon_encoder.json").is_file()
                                     for s in self.config.encoder.snapshots):
            # finished before the snapshots were asked for: train again, keeping them
            summary = train_stage(self.data, "stage1", cfg, self.run_dir(run),
                                  init=self.run_dir("pretrain"), progress=False,
                                  on_step=on_step, resume=False)
        return summary

    def _untrained(self) -> Path:
        from moon_rec.training.trainer import build_untrained_encoder

        path = self.run_dir("untrained") / "encoder"
        if not (path / "moon_encoder.json").is_file():
            build_untrained_encoder(self.data, self.train_config("pretrain"), path,
                                    seed=self.config.seed)
        return path

    def encoder_point(self, v: EncoderVersion) -> Point:
        """Train (or find) the encoder of version ``v``."""
        ov, update = self.run_recipe(v.run)
        recipe = {"recipe": self.recipe(), "overrides": ov, "stage1_update": update}

        def run() -> dict[str, Any]:
            from moon_rec.encoders import MoonEncoder

            summary: dict[str, Any] = {}
            if v.run == "untrained":
                path = self._untrained()
            else:
                summary = self._train(v.run)
                path = (self.snapshot_dir(v.step) if v.step is not None
                        else self.run_dir(v.run) / "encoder")
            enc = MoonEncoder.from_pretrained(path)
            log = self.run_dir(v.run) / "train_log.jsonl"
            loss = None
            if v.step is not None and log.is_file():
                import json

                for line in log.read_text().splitlines():
                    row = json.loads(line)
                    if row.get("step", 0) <= v.step:
                        loss = row.get("loss")
            elif summary:
                loss = (summary.get("final") or {}).get("loss")
            return {"checkpoint": str(path.relative_to(self.out)),
                    "model_version": enc.model_version, "train_loss": loss,
                    "run_seconds": summary.get("seconds"),
                    "negatives_per_query": (summary.get("final") or {}).get("negatives_per_query")}

        return Point("encoder", v.name, {"version": asdict(v), "train": recipe,
                                         "world": str(self.world)}, run, seed=self.config.seed)

    # -- intermediate metrics + embeddings ----------------------------------------------

    def embeddings_dir(self, version: str) -> Path:
        return self.out / "embeddings" / version

    def metrics_point(self, v: EncoderVersion) -> Point:
        """Intermediate metrics of version ``v``, and its item + query embeddings."""

        def run() -> dict[str, Any]:
            from moon_rec.encoders import MoonEncoder
            from moon_rec.encoders.inference import embed_products
            from moon_rec.ranking.queries import write_query_embeddings
            from moon_rec.retrieval.recall import evaluate_encoder

            runtime.set_threads(self.config.threads)
            rec = self.store.get("encoder", v.name)
            assert rec is not None, f"encoder point {v.name} missing"
            ckpt = self.out / rec["result"]["checkpoint"]
            enc = MoonEncoder.from_pretrained(ckpt).eval()
            item_emb = embed_products(enc, self.data.product_titles, self.data.images)
            metrics = evaluate_encoder(enc, self.data, seed=self.config.seed, item_emb=item_emb)
            edir = self.embeddings_dir(v.name)
            write_item_embeddings(self.data.item_id, item_emb, enc.dims, enc.model_version,
                                  edir / "items.parquet")
            write_query_embeddings(self.ranker_set, ckpt, edir / "queries.parquet")
            return {**metrics, "embeddings": str(edir.relative_to(self.out))}

        return Point("metrics", v.name, {"version": v.name,
                                         "encoder": self.encoder_point(v).config,
                                         "ranker_set": str(self.ranker_set),
                                         "seed": self.config.seed},
                     run, seed=self.config.seed)

    # -- downstream ranker ----------------------------------------------------------------

    def ranker_base(self, experiment: str | None = None) -> dict[str, Any]:
        """The ranker experiment as resolved at the study's first use, frozen in
        ``ranker_<experiment>.json``: edits of the YAML (or new options of the ranker) do not
        change a running or resumed study."""
        import json

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
            # the weights are not needed again; keep the directory small
            for leftover in ("model.pt", "checkpoint.pt"):
                (model_dir / leftover).unlink(missing_ok=True)
            for fused in model_dir.glob("checkpoint.fused.*"):
                fused.unlink()
            return report

        v = version_by_name(self.config, version)
        return Point(kind, name, {"version": version,
                                  "ranker": self.ranker_settings(seed, max_seq_len),
                                  "metrics": self.metrics_point(v).config,
                                  "ranker_set": str(self.ranker_set), "world": str(self.world)},
                     run, seed=seed)


    def reference_point(self, seed: int) -> Point:
        """The ID-only reference ranker (``ranker.reference_experiment``, no content
        features) on the same ranker set: how much of the AUC the content features add."""
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
            (model_dir / "checkpoint.pt").unlink(missing_ok=True)
            return report

        return Point("reference", name, {"ranker": self.ranker_settings(seed, None, name_exp),
                                         "ranker_set": str(self.ranker_set),
                                         "world": str(self.world)}, run, seed=seed)


def _contained(old: Any, new: Any) -> bool:
    """Every key of ``old`` is in ``new`` with the same value (recursively)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(k in new and _contained(v, new[k]) for k, v in old.items())
    return bool(old == new)


def write_item_embeddings(item_ids: np.ndarray, emb: np.ndarray, dims: tuple[int, ...],
                          model_version: str, path: Path) -> Path:
    """The item-embedding parquet contract (item_id, emb_{d} renormalised prefixes,
    model_version, event_timestamp), written atomically."""
    table = embedding_table(item_ids, prefixes_of(emb, dims), model_version, datetime.now(UTC))
    return write_embedding_table(table, path)
