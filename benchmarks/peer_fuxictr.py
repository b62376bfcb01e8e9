"""Peer side by side (issue 17): FuxiCTR 2.3.10's DIN against our rankers, on our exact
split, in the same run.

    python benchmarks/peer_fuxictr.py --training-set T --embeddings E --world W --out DIR \
        [--tiny] [--threads N] [--seeds 0 1 2] [--query-embeddings Q] \
        [--experiments DIN CUBE] [--features SPEC] [--din-only]

1. FuxiCTR goes into its own virtual environment, ``.peer/fuxictr-venv`` (python3.11
   -m venv; ``torch==2.13.0`` first, the CPU wheel, then the pins of
   ``benchmarks/peer_fuxictr_requirements.txt``); a stamp holding those pins makes a
   later run reuse it. The shared project venv is never touched.
2. Our training set is exported to FuxiCTR's format (``benchmarks/fuxictr_format.py``:
   the LongCTR parquet layout its packaged DIN reads) with its dataset / model YAML
   configs, into ``DIR/fuxictr``. Splits: train = ``split == train`` less a validation
   slice, the last ``--valid-fraction`` (default 0.1) of the train rows by ``ts``, which
   FuxiCTR's early stopping monitors (AUC, ``--patience``); test = ``split == test``. Our
   rankers train on the same fit rows (the training set less the slice, written to
   ``DIR/ours/training_set.parquet``), for their configured epochs.
3. FuxiCTR (in its venv, ``benchmarks/fuxictr_runner.py``) trains (a) ``din_ids``: its DIN
   on IDs, (b) ``din_moon``: the same with our MOON vectors (``emb_{C}``, C = the CUBE
   experiment's ``moon_dim``) as frozen ``pretrained_emb`` of item_id (``pretrain_usage``
   ``sum`` by default: frozen vector projected + ID embedding). Its DIN takes the shapes of
   our DIN experiment (embedding dim, attention and MLP sizes, batch size, sequence
   length) and FuxiCTR's own defaults otherwise (Adam 1e-3, Dice attention activation).
   Its features are our DIN's inputs: user_id, brand_id, position, our hashed query tokens
   (a mean-pooled sequence feature), and item_id + category_id of the target and of each
   behaviour (DIN's target attention), plus the extra features of the DIN experiment's
   feature spec (``feature_set``; ``--features SPEC`` names another): categorical ones
   (ids, string tokens, bucketised numbers) as FuxiCTR ``categorical``, numeric ones as
   FuxiCTR ``numeric``, exported as our ranker's own fitted-transform output (fitted on
   the fit rows; FuxiCTR's normalizer unused), see ``benchmarks/fuxictr_format.py``. With
   ``--experiments din_full_movielens cube_moon_full_movielens`` both libraries read the
   ``movielens_full`` spec's features. The JSON keeps the role names ``din_ids`` /
   ``din_moon`` / ``cube_moon`` whatever the spec (``feature_spec`` names it).
4. Ours: ``din_ids`` / ``cube_moon`` (``*_tiny`` with ``--tiny``) of
   configs/ranker/experiments.yaml through ``moon_rec.ranking.compare.compare_rankers``.
5. Both libraries' test predictions are scored by the same code
   (``moon_rec.ranking.evaluate.ranking_report``): AUC overall and on cold items, logloss.
   Every seed of ``--seeds`` trains all four models; the JSON has each seed and the mean
   (and std) over seeds.

Training examples per second = train rows x epochs run / training seconds. Included: the
epochs' batches (each library's batch assembly from its in-memory data, forward, backward,
optimizer step; ours also writes its epoch-end checkpoint). Excluded: reading files and
building the data (both), FuxiCTR's per-epoch validation pass and best-model save (timed
and reported apart as ``eval_seconds``), model construction. Ours counts the examples of
its full batches (it drops a last partial batch). Both libraries run with ``--threads``
torch threads, FuxiCTR's loader with ``num_workers: 0`` (no extra processes).

``--din-only`` trains just the two DINs (FuxiCTR's ``din_ids`` and our DIN experiment):
the like-for-like pair, at half the cost.

Prints one JSON object (also written to ``DIR/peer_fuxictr.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # fuxictr_format, when imported from elsewhere (tests)

from fuxictr_format import FuxiExport, export_training_set, write_without_valid  # noqa: E402

REQUIREMENTS = HERE / "peer_fuxictr_requirements.txt"
TORCH_PIN = "torch==2.13.0"  # first, alone: pip takes the CPU wheel from the local disk
DEFAULT_VENV = ROOT / ".peer" / "fuxictr-venv"
EXPERIMENTS_FILE = ROOT / "configs" / "ranker" / "experiments.yaml"


# the ranking-report keys both libraries' rows print
REPORT_KEYS: tuple[str, ...] = ("auc", "auc_cold", "auc_warm", "gauc", "logloss", "n_test",
                                "n_cold", "oracle_auc", "oracle_auc_cold")


# --------------------------------------------------------------------------- environment
def venv_stamp() -> str:
    """What the venv was built from: the python minor version and the pins."""
    pins = REQUIREMENTS.read_text()
    return hashlib.sha256(f"py3.11\n{TORCH_PIN}\n{pins}".encode()).hexdigest()


def ensure_venv(venv: Path, python: str = "python3.11") -> Path:
    """FuxiCTR's virtual environment at ``venv`` (created and filled unless its stamp
    matches); returns its python."""
    py = venv / "bin" / "python"
    stamp = venv / ".moon_rec_stamp"
    if py.exists() and stamp.exists() and stamp.read_text().strip() == venv_stamp():
        return py
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [python, "-m", "venv", str(venv)],
        [str(py), "-m", "pip", "install", "-q", TORCH_PIN],
        [str(py), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
    ]
    for cmd in steps:
        print("peer_fuxictr: $", " ".join(cmd), file=sys.stderr)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-3000:]
            raise SystemExit(f"peer_fuxictr: installing FuxiCTR failed: {' '.join(cmd)}\n{tail}")
    stamp.write_text(venv_stamp() + "\n")
    return py


# --------------------------------------------------------------------------- FuxiCTR configs
def dataset_config(
    export: FuxiExport, root: Path, moon: bool, pretrain_usage: str
) -> dict[str, Any]:
    """One FuxiCTR dataset block (LongCTR layout, pre-encoded: ``rebuild_dataset: false``)."""
    v = export.vocab_sizes
    data = export.data_dir.resolve()
    item_id: dict[str, Any] = {
        "name": "item_id",
        "active": True,
        "dtype": "int",
        "type": "categorical",
        "source": "item",
        "vocab_size": v["item_id"],
    }
    if moon:
        item_id.update(
            vocab_size=export.moon_vocab_size,
            pretrained_emb=str(data / "moon_item_id.npz"),
            pretrain_dim=export.moon_dim,
            freeze_emb=True,
            pretrain_usage=pretrain_usage,
        )
    extras: list[dict[str, Any]] = [{"active": True, **e} for e in export.extras]
    cols: list[dict[str, Any]] = [
        {"name": "user_index", "active": True, "dtype": "int", "type": "meta"},
        {"name": "item_index", "active": True, "dtype": "int", "type": "meta"},
        {"name": "seq_len", "active": True, "dtype": "int", "type": "meta"},
        {
            "name": "user_id",
            "active": True,
            "dtype": "int",
            "type": "categorical",
            "vocab_size": v["user_id"],
        },
        {
            "name": "brand_id",
            "active": True,
            "dtype": "int",
            "type": "categorical",
            "vocab_size": v["brand_id"],
        },
        {
            "name": "position",
            "active": True,
            "dtype": "int",
            "type": "categorical",
            "vocab_size": v["position"],
        },
        {
            "name": "query_tokens",
            "active": True,
            "dtype": "int",
            "type": "sequence",
            "max_len": 8,
            "vocab_size": v["query_tokens"],
        },
        *extras,
        item_id,
        {
            "name": "category_id",
            "active": True,
            "dtype": "int",
            "type": "categorical",
            "source": "item",
            "vocab_size": v["category_id"],
        },
    ]
    return {
        "data_root": str(root / "datasets") + "/",
        "data_format": "parquet",
        "train_data": str(data / "train.parquet"),
        "valid_data": str(data / "valid.parquet"),
        "test_data": str(data / "test.parquet"),
        "user_info": str(data / "user_info.parquet"),
        "item_info": str(data / ("item_info_moon.parquet" if moon else "item_info.parquet")),
        "rebuild_dataset": False,
        "feature_cols": cols,
        "label_col": {"name": "clicked", "dtype": "float"},
    }


def model_block(din: Any, dataset_id: str, seed: int, max_epochs: int) -> dict[str, Any]:
    """FuxiCTR's DIN experiment with the shapes of our DIN config ``din``."""
    return {
        "model": "DIN",
        "dataset_id": dataset_id,
        "loss": "binary_crossentropy",
        "metrics": ["AUC", "logloss"],
        "task": "binary_classification",
        "optimizer": "adam",
        "learning_rate": 1.0e-3,
        "embedding_regularizer": 0,
        "net_regularizer": 0,
        "batch_size": din.train.batch_size,
        "embedding_dim": din.embedding_dim,
        "dnn_hidden_units": list(din.over_arch.layer_sizes),
        "dnn_activations": "relu",
        "attention_hidden_units": list(din.behaviour.attention_hidden),
        "attention_hidden_activations": "Dice",
        "attention_output_activation": None,
        "attention_dropout": 0,
        "din_use_softmax": False,
        "net_dropout": 0,
        "batch_norm": False,
        "epochs": max_epochs,
        "shuffle": True,
        "seed": seed,
        "monitor": "AUC",
        "monitor_mode": "max",
        "max_len": din.max_seq_len,
        "accumulation_steps": 1,
    }


def write_fuxictr_configs(
    export: FuxiExport,
    root: Path,
    din: Any,
    seeds: list[int],
    *,
    patience: int,
    max_epochs: int,
    pretrain_usage: str,
) -> Path:
    """``root/config/{dataset,model}_config.yaml``; experiment ids ``{din_ids,din_moon}_s{seed}``."""
    import yaml

    cfg = root / "config"
    cfg.mkdir(parents=True, exist_ok=True)
    datasets = {
        "peer_ids": dataset_config(export, root, False, pretrain_usage),
        "peer_moon": dataset_config(export, root, True, pretrain_usage),
    }
    models: dict[str, Any] = {
        "Base": {
            "model_root": str(root / "checkpoints") + "/",
            "num_workers": 0,
            "verbose": 0,
            "early_stop_patience": patience,
            "pickle_feature_encoder": True,
            "save_best_only": True,
            "eval_steps": None,
            "debug_mode": False,
            "group_id": None,
            "use_features": None,
            "feature_specs": None,
            "feature_config": None,
        }
    }
    for s in seeds:
        models[f"din_ids_s{s}"] = model_block(din, "peer_ids", s, max_epochs)
        models[f"din_moon_s{s}"] = model_block(din, "peer_moon", s, max_epochs)
    (cfg / "dataset_config.yaml").write_text(yaml.safe_dump(datasets, sort_keys=False))
    (cfg / "model_config.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
    return cfg


def run_fuxictr(py: Path, cfg: Path, expid: str, out: Path, threads: int) -> dict[str, Any]:
    """Run one experiment in FuxiCTR's venv; its result.json plus the test predictions."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONHASHSEED="0")
    cmd = [
        str(py),
        str(HERE / "fuxictr_runner.py"),
        "--config",
        str(cfg),
        "--expid",
        expid,
        "--out",
        str(out),
        "--threads",
        str(threads),
    ]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "stdout.log", "w") as log:
        done = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(cfg.parent)
        )
    if done.returncode != 0:
        tail = (out / "stdout.log").read_text()[-4000:]
        raise SystemExit(
            f"peer_fuxictr: FuxiCTR run {expid} failed (log {out / 'stdout.log'}):\n{tail}"
        )
    result: dict[str, Any] = json.loads((out / "result.json").read_text())
    result["pred_test"] = np.load(out / "pred_test.npy")
    return result


# --------------------------------------------------------------------------- scoring
def test_rows_info(training_set: Path, world: Path | None, test_rows: np.ndarray) -> dict[str, Any]:
    """Labels, users, flags (and oracle probabilities) of the test rows, for ranking_report."""
    from moon_rec.data.training_set import read_training_set
    from moon_rec.ranking.evaluate import oracle_probabilities

    t = read_training_set(training_set)
    n = t.num_rows

    def col(name: str, default: Any) -> np.ndarray:
        if name not in t.column_names:
            return np.full(n, default)
        return t.column(name).fill_null(default).to_numpy(zero_copy_only=False)

    info = {
        "labels": col("clicked", 0).astype(np.float64)[test_rows],
        "users": col("user_id", 0).astype(np.int64)[test_rows],
        "is_cold": col("is_cold", False).astype(bool)[test_rows],
        "look_driven": col("look_driven", False).astype(bool)[test_rows],
        "oracle": None,
    }
    if world is not None:
        info["oracle"] = oracle_probabilities(
            world,
            col("request_id", 0).astype(np.int64)[test_rows],
            col("item_id", 0).astype(np.int64)[test_rows],
        )
    return info


def score(info: dict[str, Any], pred: np.ndarray) -> dict[str, Any]:
    from moon_rec.ranking.evaluate import ranking_report

    rep = ranking_report(
        info["labels"], pred, info["users"], info["is_cold"], info["look_driven"], info["oracle"]
    )
    return {k: rep.get(k) for k in REPORT_KEYS}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and std over seeds, where they differ) of every numeric key, plus the per-seed
    runs."""
    out: dict[str, Any] = {}
    for k in runs[0]:
        if k in ("seed", "threads"):
            continue
        vals = [r[k] for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[k] = float(np.mean(vals))
            if len(vals) > 1 and len(set(vals)) > 1:
                out[f"{k}_std"] = float(np.std(vals, ddof=1))
    out["seeds"] = runs
    return out


# --------------------------------------------------------------------------- ours
def covering_spec(specs: list[str]) -> Any:
    """The first of the feature specs ``specs`` whose training-set columns cover every
    one's (what our rankers' training set without the validation slice keeps)."""
    from moon_rec.data.feature_spec import load_feature_spec

    loaded = [load_feature_spec(s) for s in specs]
    cols = [{(e.column, e.source) for e in sp.table_columns()} for sp in loaded]
    need = set().union(*cols)
    for sp, have in zip(loaded, cols, strict=True):
        if need <= have:
            return sp
    raise SystemExit(f"peer_fuxictr: no one spec of {specs} holds every column the "
                     "experiments read")


def run_ours(
    training_set: Path,
    embeddings: Path,
    out: Path,
    experiments: tuple[str, ...],
    world: Path | None,
    query_embeddings: Path | None,
    seed: int,
) -> dict[str, dict[str, Any]]:
    from moon_rec.ranking.compare import compare_rankers

    res = compare_rankers(
        training_set,
        embeddings,
        EXPERIMENTS_FILE,
        out,
        experiments=experiments,
        world=world,
        query_embeddings=query_embeddings,
        seed=seed,
        progress=False,
    )
    rows: dict[str, dict[str, Any]] = {}
    for name in experiments:
        meta = json.loads((out / name / "meta.json").read_text())
        cfg = meta["config"]
        batch = int(cfg["train"]["batch_size"])
        examples = int(meta["steps"]) * batch
        eps = meta.get("examples_per_s")
        rows[name] = {
            "report": res["rows"][name],
            "epochs": int(cfg["train"]["epochs"]),
            "examples": examples,
            "train_seconds": examples / eps if eps else None,
            "examples_per_s": eps,
            "wall_seconds_with_loading": meta.get("train_seconds"),
        }
    return rows


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--training-set", required=True, type=Path)
    parser.add_argument("--embeddings", required=True, type=Path)
    parser.add_argument("--world", type=Path, default=None, help="for the oracle AUC")
    parser.add_argument("--query-embeddings", type=Path, default=None, help="ours: s_q of CUBE")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tiny", action="store_true", help="the *_tiny experiments")
    parser.add_argument(
        "--experiments",
        nargs=2,
        metavar=("DIN", "CUBE"),
        default=None,
        help="our DIN and CUBE experiment ids (default din_ids cube_moon, *_tiny with --tiny;"
        " MovieLens: din_ids_movielens cube_moon_movielens); FuxiCTR's DIN takes the shapes"
        " of the first",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--valid-fraction", type=float, default=0.1)
    parser.add_argument("--patience", type=int, default=2, help="FuxiCTR early_stop_patience")
    parser.add_argument("--max-epochs", type=int, default=20, help="FuxiCTR epochs (upper bound)")
    parser.add_argument("--pretrain-usage", choices=("sum", "init", "concat"), default="sum")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--din-only", action="store_true",
                        help="train only the DINs (FuxiCTR's din_ids, our DIN experiment): no "
                        "MOON / CUBE models")
    parser.add_argument("--features", default=None, metavar="SPEC",
                        help="FuxiCTR's extra features: this feature spec's (default: the "
                        "DIN experiment's feature_set)")
    args = parser.parse_args()

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from moon_rec.data.embeddings import load_moon_embeddings
    from moon_rec.ranking.config import load_ranker_config

    load_start = os.getloadavg()
    started = time.perf_counter()
    suffix = "_tiny" if args.tiny else ""
    experiments: tuple[str, str] = (
        (args.experiments[0], args.experiments[1])
        if args.experiments
        else (f"din_ids{suffix}", f"cube_moon{suffix}")
    )
    din = load_ranker_config(EXPERIMENTS_FILE, experiments[0])
    cube = load_ranker_config(EXPERIMENTS_FILE, experiments[1])
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    fx_root = out / "fuxictr"

    from moon_rec.data.feature_spec import load_feature_spec

    spec = load_feature_spec(args.features or din.feature_set)
    fx_models = ("din_ids",) if args.din_only else ("din_ids", "din_moon")
    py = ensure_venv(args.venv)
    moon = load_moon_embeddings(args.embeddings, cube.moon_dim)
    export = export_training_set(
        args.training_set,
        fx_root / "data",
        max_len=din.max_seq_len,
        query_token_buckets=din.query_token_buckets,
        valid_fraction=args.valid_fraction,
        embeddings=moon,
        spec=spec,
    )
    cfg = write_fuxictr_configs(
        export,
        fx_root,
        din,
        args.seeds,
        patience=args.patience,
        max_epochs=args.max_epochs,
        pretrain_usage=args.pretrain_usage,
    )
    ours_set = write_without_valid(
        args.training_set, export.rows["valid"], out / "ours" / "training_set.parquet",
        covering_spec([din.feature_set, cube.feature_set]),
    )
    info = test_rows_info(args.training_set, args.world, export.rows["test"])

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {"fuxictr": {}, "ours": {}}
    fx_versions: dict[str, Any] = {}
    for seed in args.seeds:
        for model in fx_models:
            r = run_fuxictr(
                py, cfg, f"{model}_s{seed}", fx_root / "runs" / f"{model}_s{seed}", args.threads
            )
            fx_versions = r["versions"]
            runs["fuxictr"].setdefault(model, []).append(
                {
                    "seed": seed,
                    **score(info, r["pred_test"]),
                    "valid_auc": r["valid"].get("AUC"),
                    "epochs": r["epochs"],
                    "early_stopped": r["early_stopped"],
                    "examples": r["examples"],
                    "train_seconds": r["train_seconds"],
                    "eval_seconds": r["eval_seconds"],
                    "examples_per_s": r["examples_per_s"],
                    "threads": r["threads"],
                }
            )
        ours = run_ours(
            ours_set,
            args.embeddings,
            out / "ours" / f"s{seed}",
            experiments[:1] if args.din_only else experiments,
            args.world,
            args.query_embeddings,
            seed,
        )
        for name, r in ours.items():
            rep = r["report"]
            role = "din_ids" if name == experiments[0] else "cube_moon"
            runs["ours"].setdefault(role, []).append(
                {
                    "seed": seed,
                    **{
                        k: rep.get(k)
                        for k in REPORT_KEYS
                    },
                    "epochs": r["epochs"],
                    "examples": r["examples"],
                    "train_seconds": r["train_seconds"],
                    "examples_per_s": r["examples_per_s"],
                    "wall_seconds_with_loading": r["wall_seconds_with_loading"],
                }
            )

    results = {lib: {m: summarize(rs) for m, rs in models.items()} for lib, models in runs.items()}
    ours_eps = results["ours"]["din_ids"].get("examples_per_s")
    fx_eps = results["fuxictr"]["din_ids"].get("examples_per_s")
    import torchrec

    report = {
        "benchmark": "peer_fuxictr",
        "tiny": args.tiny,
        "training_set": str(args.training_set),
        "embeddings": str(args.embeddings),
        "query_embeddings": str(args.query_embeddings) if args.query_embeddings else None,
        "experiments": {"ours": list(experiments[:1] if args.din_only else experiments),
                        "fuxictr": list(fx_models)},
        "split": {
            **export.summary(),
            "test_cold_rows": int(info["is_cold"].sum()),
            "ours_trains_on": "the fit rows (train less the validation slice), configured epochs",
            "fuxictr_trains_on": "the fit rows; early stopping on AUC of the validation slice",
        },
        "fuxictr_setup": {
            "model": "model_zoo.LongCTR.DIN (the DIN packaged in fuxictr 2.3.10)",
            "optimizer": "adam 1e-3 (FuxiCTR default)",
            "patience": args.patience,
            "max_epochs": args.max_epochs,
            "pretrain_usage": args.pretrain_usage,
            "moon_dim": export.moon_dim,
            "features": "user_id, brand_id, position, query_tokens (mean-pooled); target + "
            "behaviours: item_id, category_id (DIN attention)"
            + (f"; feature spec {spec.name}: " + ", ".join(
                f"{e['name']} ({e['type']})" for e in export.extras) if export.extras else ""),
            "feature_spec": spec.name,
            "extras_encoding": "our fitted transforms (fit rows): categorical = our table row "
            "+ 1, numeric = our transformed float (FuxiCTR normalizer unused)",
        },
        "results": results,
        "ratio_ours_over_fuxictr_examples_per_s_din_ids": (
            ours_eps / fx_eps if ours_eps and fx_eps else None
        ),
        "environment": {
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "load_avg_start": [round(x, 2) for x in load_start],
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            "machine": platform.machine(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "ours": {
                "torch": torch.__version__,
                "torchrec": torchrec.__version__,
                "numpy": np.__version__,
                "device": "cuda" if torch.cuda.is_available() else "cpu",
            },
            "fuxictr_venv": {**fx_versions, "path": str(args.venv)},
        },
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(report, indent=2, default=_json_default)
    (out / "peer_fuxictr.json").write_text(text + "\n")
    print(text)


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)


if __name__ == "__main__":
    main()
