"""One FuxiCTR experiment, run inside FuxiCTR's own virtual environment.

``benchmarks/peer_fuxictr.py`` starts it with that environment's python; it imports
FuxiCTR 2.3.10 (and nothing of moon_rec), and follows FuxiCTR's ``run_expid.py`` of the
LongCTR model zoo: ``load_config`` -> ``FeatureProcessor`` + ``build_dataset`` (the data
is pre-encoded, ``rebuild_dataset: false``: this only writes the feature map) ->
``FeatureMap`` -> ``DIN`` -> ``RankDataLoader`` with ``LongCTRDataLoader`` -> ``fit`` with
its early stopping -> ``predict`` on the test split.

    python benchmarks/fuxictr_runner.py --config DIR --expid ID --out DIR --threads N

Writes ``OUT/result.json`` and ``OUT/pred_test.npy`` ([n_test] float64 probabilities in
``test.parquet`` row order).

Timing: ``fit_seconds`` is the wall time of ``model.fit``; ``eval_seconds`` the part of it
spent in FuxiCTR's per-epoch validation pass and best-checkpoint save (its ``eval_step``);
``train_seconds`` = fit - eval: the epochs' batches (its collation of each batch from
item_info / user_info, forward, backward, Adam step). Building the data loaders (reading
the parquet files) is ``load_seconds``, outside.

Numeric features (a feature spec's, ``benchmarks/fuxictr_format.py``): FuxiCTR's
``ParquetDataset`` stacks every column into one array, float64 once a column is float, and
its ``BatchCollator`` then indexes ``user_info`` / ``item_info`` with the float
``user_index`` / ``item_index`` values, which numpy and pandas refuse. ``IntIndexCollator``
is the same collation with those two columns cast to int64 (exact: they are small whole
numbers); the features reach the model as before (FuxiCTR casts categoricals with
``.long()`` and numerics with ``.float()``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--config", required=True, help="folder with model_config.yaml + dataset_config.yaml"
    )
    parser.add_argument("--expid", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import fuxictr
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import FeatureProcessor, build_dataset
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything
    from fuxictr.utils import load_config, set_logger
    from model_zoo.LongCTR import longctr_dataloader
    from model_zoo.LongCTR.DIN import DIN
    from model_zoo.LongCTR.longctr_dataloader import LongCTRDataLoader

    class IntIndexCollator(longctr_dataloader.BatchCollator):
        """FuxiCTR's ``BatchCollator.__call__`` with user_index / item_index as int64."""

        def __call__(self, batch: Any) -> Any:
            from torch.utils.data.dataloader import default_collate

            batch_tensor = default_collate(batch)
            all_cols = set(list(self.feature_map.features.keys()) + self.feature_map.labels)
            batch_dict = {col: batch_tensor[:, idx] for col, idx in self.column_index.items()
                          if col in all_cols}
            user_index = batch_dict["user_index"].numpy().astype(np.int64)
            user_seqs = self.user_info[user_index]
            seq_lens = batch_dict["seq_len"].int().numpy()
            batch_seqs = self.padding_seqs(user_seqs, seq_lens)
            mask = (torch.from_numpy(batch_seqs) > 0).float()
            item_index = batch_dict["item_index"].numpy().astype(np.int64).reshape(-1, 1)
            batch_items = np.hstack([batch_seqs, item_index]).flatten().astype(np.int64)
            item_info = self.item_info.iloc[batch_items]
            item_dict = {col: torch.from_numpy(np.array(item_info[col].to_list()))
                         for col in item_info.columns if col in all_cols}
            return batch_dict, item_dict, mask

    longctr_dataloader.BatchCollator = IntIndexCollator  # read when a loader is made

    class TimedDIN(DIN):
        """FuxiCTR's DIN, with the time of its per-epoch validation + checkpoint counted."""

        eval_seconds = 0.0
        evaluations = 0

        def eval_step(self) -> None:
            t = time.perf_counter()
            super().eval_step()
            self.eval_seconds += time.perf_counter() - t
            self.evaluations += 1

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = load_config(args.config, args.expid)
    params["gpu"] = -1
    set_logger(params)  # FuxiCTR's: logs to <model_root>/<dataset_id>/<expid>.log (and makes it)
    seed_everything(seed=params["seed"])
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    feature_encoder = FeatureProcessor(**params)
    params["train_data"], params["valid_data"], params["test_data"] = build_dataset(
        feature_encoder, **params
    )
    feature_map = FeatureMap(params["dataset_id"], data_dir)
    feature_map.load(os.path.join(data_dir, "feature_map.json"), params)
    model = TimedDIN(feature_map, **params)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params["data_loader"] = LongCTRDataLoader

    t = time.perf_counter()
    train_gen, valid_gen = RankDataLoader(feature_map, stage="train", **params)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    model.fit(train_gen, validation_data=valid_gen, **params)
    fit_s = time.perf_counter() - t
    valid = model.evaluate(valid_gen)
    test_gen = RankDataLoader(feature_map, stage="test", **params)
    pred = model.predict(test_gen)
    np.save(out / "pred_test.npy", np.asarray(pred, np.float64))

    epochs = model._epoch_index + 1  # FuxiCTR's own counter; it stops after an epoch's eval
    n_train = int(train_gen.num_samples)
    train_s = fit_s - model.eval_seconds
    result = {
        "expid": args.expid,
        "model": "model_zoo.LongCTR.DIN",
        "epochs": epochs,
        "early_stopped": bool(model._stop_training),
        "evaluations": model.evaluations,
        "train_rows": n_train,
        "examples": n_train * epochs,
        "load_seconds": round(load_s, 3),
        "fit_seconds": round(fit_s, 3),
        "eval_seconds": round(model.eval_seconds, 3),
        "train_seconds": round(train_s, 3),
        "examples_per_s": n_train * epochs / train_s if train_s > 0 else None,
        "valid": {k: float(v) for k, v in valid.items()},
        "trainable_parameters": int(n_params),
        "n_test": len(pred),
        "versions": {
            "fuxictr": fuxictr.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "threads": torch.get_num_threads(),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
