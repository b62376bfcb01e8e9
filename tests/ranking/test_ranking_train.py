"""Training, resume, evaluation and the CLI on the synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moon_rec.cli import main
from moon_rec.data.errors import DataError
from moon_rec.metrics.ranking import logloss
from moon_rec.ranking.config import load_ranker_config
from moon_rec.ranking.data import load_training_set
from moon_rec.ranking.evaluate import evaluate_ranker
from moon_rec.ranking.model_dir import CHECKPOINT, WEIGHTS
from moon_rec.ranking.synthetic import SyntheticPaths
from moon_rec.ranking.train import train_ranker

CONFIGS_FILE = Path(__file__).resolve().parents[2] / "configs" / "ranker" / "experiments.yaml"

EVAL_KEYS = {
    "auc",
    "gauc",
    "logloss",
    "oracle_auc",
    "auc_cold",
    "auc_warm",
    "auc_look_driven",
    "auc_other",
    "model_version",
    "n_test",
}


@pytest.fixture(scope="module")
def cube_model(
    ranker_data: SyntheticPaths, configs_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("cube")
    cfg = load_ranker_config(configs_file, "cube_moon_tiny")
    train_ranker(
        ranker_data.training_set, cfg, out, embeddings=ranker_data.embeddings, progress=False
    )
    return out


def test_training_beats_constant_predictor(cube_model: Path, ranker_data: SyntheticPaths) -> None:
    report = evaluate_ranker(cube_model, world=ranker_data.world)
    assert set(report) >= EVAL_KEYS
    data = load_training_set(ranker_data.training_set, 20, 256)
    train_ctr = data.clicked[~data.is_test].mean()
    test_labels = data.clicked[data.is_test]
    constant = logloss(test_labels, np.full(len(test_labels), train_ctr))
    assert report["auc"] > 0.56
    assert report["logloss"] < constant
    assert report["oracle_auc"] > report["auc"]
    assert report["model_version"] == ranker_data.model_version
    assert report["n_test"] == int(data.is_test.sum())


def test_resume_continues_to_the_same_weights(
    ranker_data: SyntheticPaths, configs_file: Path, tmp_path: Path
) -> None:
    cfg = load_ranker_config(configs_file, "din_ids_tiny")
    cfg = cfg.with_overrides({"train": {"epochs": 2, "checkpoint_every": 5}})
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train_ranker(ranker_data.training_set, cfg, whole, progress=False)
    first = train_ranker(ranker_data.training_set, cfg, parts, progress=False, max_steps=37)
    assert first["steps"] == 37 and not first["done"]
    assert (parts / CHECKPOINT).is_file() and not (parts / WEIGHTS).exists()
    second = train_ranker(ranker_data.training_set, cfg, parts, progress=False)
    assert second["done"]
    a = torch.load(whole / WEIGHTS, weights_only=True)
    b = torch.load(parts / WEIGHTS, weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_resume_refuses_another_config(
    ranker_data: SyntheticPaths, configs_file: Path, tmp_path: Path
) -> None:
    cfg = load_ranker_config(configs_file, "din_ids_tiny")
    train_ranker(ranker_data.training_set, cfg, tmp_path, progress=False, max_steps=2)
    other = cfg.with_overrides({"embedding_dim": 8})
    with pytest.raises(ValueError, match="another config"):
        train_ranker(ranker_data.training_set, other, tmp_path, progress=False)


def test_cli_train_and_eval_json(
    ranker_data: SyntheticPaths,
    configs_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "m"
    status = main(
        [
            "ranker",
            "train",
            "--training-set",
            str(ranker_data.training_set),
            "--config",
            str(configs_file),
            "--experiment",
            "din_ids_tiny",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert status == 0
    capsys.readouterr()
    assert (
        main(["ranker", "eval", "--model", str(out), "--json", "--world", str(ranker_data.world)])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= EVAL_KEYS
    assert report["model_version"] is None  # trained without embeddings: ids only


def test_cli_bad_input_is_an_error_not_a_traceback(
    ranker_data: SyntheticPaths,
    configs_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(
        [
            "ranker",
            "train",
            "--training-set",
            str(ranker_data.training_set),
            "--config",
            str(configs_file),
            "--experiment",
            "cube_moon_tiny",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert status == 2
    assert "needs --embeddings" in capsys.readouterr().err
    assert main(["ranker", "eval", "--model", str(tmp_path / "nothing"), "--json"]) == 2


def test_eval_rejects_other_encoder_version(
    cube_model: Path, ranker_data: SyntheticPaths, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name in ("items", "queries"):
        t = pq.read_table(ranker_data.embeddings / f"{name}.parquet")
        t = t.set_column(
            t.column_names.index("model_version"), "model_version", pa.array(["v2"] * t.num_rows)
        )
        pq.write_table(t, tmp_path / f"{name}.parquet")
    with pytest.raises(DataError, match="model_version"):
        evaluate_ranker(cube_model, embeddings=tmp_path)


def test_model_pt_keeps_ids_not_vectors(cube_model: Path, ranker_data: SyntheticPaths,
                                        tmp_path: Path) -> None:
    """The snapshot is the truth: model.pt keeps the item ids of the frozen content table,
    not its vectors; loading reads them back from the snapshot the meta records, and a
    snapshot without an item the ranker was trained with is refused by name."""
    import pyarrow.parquet as pq

    from moon_rec.data.embeddings import load_moon_embeddings
    from moon_rec.ranking.evaluate import load_ranker
    from moon_rec.ranking.model_dir import CONTENT_ROWS, CONTENT_VECTORS, RankerDir

    state = RankerDir(cube_model).load_weights()
    assert CONTENT_ROWS in state and CONTENT_VECTORS not in state
    again = RankerDir(tmp_path / "again")
    again.path.mkdir()
    again.save_weights(state)  # other bytes (torch.save's per-save id), same weights
    assert again.weights_version() == RankerDir(cube_model).weights_version()
    model, meta = load_ranker(cube_model)
    emb = load_moon_embeddings(ranker_data.embeddings, meta["moon_dim"])
    ids = state[CONTENT_ROWS].numpy()
    weight = model.state_dict()[CONTENT_VECTORS]
    np.testing.assert_array_equal(weight[:-1].numpy(), emb.item_vectors[emb.item_rows(ids)])
    t = pq.read_table(ranker_data.embeddings / "items.parquet")
    pq.write_table(t.slice(1), tmp_path / "items.parquet")  # one trained item gone
    with pytest.raises(DataError, match="not in the snapshot"):
        load_ranker(cube_model, embeddings=tmp_path)


def test_unseen_id_rows_start_at_zero_and_init_scale(ranker_data: SyntheticPaths) -> None:
    from moon_rec.data.embeddings import load_moon_embeddings
    from moon_rec.ranking.train import build_model, table_sizes

    cfg = load_ranker_config(CONFIGS_FILE, "din_ids_tiny")
    cfg = cfg.with_overrides({"embedding_init_scale": 0.3})
    data = load_training_set(ranker_data.training_set, cfg.max_seq_len, cfg.query_token_buckets)
    tables = table_sizes(data, cfg)
    model = build_model(cfg, tables, None, 0, data)
    items = model.sparse_arch.embedding_collection.embeddings["item"].weight
    train = ~data.is_test
    hist = data.item_sequence[train]
    seen = set(data.item_id[train].tolist()) | set(hist[hist >= 0].tolist())
    unseen = [i for i in range(tables.rows["item"]) if i not in seen]
    assert unseen and bool((items[unseen] == 0).all())
    assert bool((items[sorted(seen)].abs().sum(1) > 0).all())
    assert float(items.abs().max()) <= 0.3 and float(items.abs().max()) > 0.2
    users = model.sparse_arch.embedding_bag_collection.embedding_bags["user"].weight
    assert bool((users[-1] == 0).all())  # the OOV row is never trained
    assert load_moon_embeddings(ranker_data.embeddings, 32).dim == 32


def test_dot_to_logit_starts_as_the_plain_model(ranker_data: SyntheticPaths) -> None:
    from moon_rec.ranking.config import ConfigError, RankerConfig
    from moon_rec.ranking.train import build_model, table_sizes

    cfg = load_ranker_config(CONFIGS_FILE, "din_ids_tiny")
    data = load_training_set(ranker_data.training_set, cfg.max_seq_len, cfg.query_token_buckets)
    tables = table_sizes(data, cfg)
    wide_cfg = cfg.with_overrides({"over_arch": {"dot_to_logit": True}})
    plain, wide = build_model(cfg, tables, None, 0), build_model(wide_cfg, tables, None, 0)
    assert wide.dot_logit is not None and plain.dot_logit is None
    batch = data.batch(np.arange(64), None)
    with torch.no_grad():
        torch.testing.assert_close(plain(batch), wide(batch))
    with pytest.raises(ValueError, match="embedding_init_scale"):  # pydantic's, at construction
        RankerConfig(embedding_init_scale=-1.0)
    with pytest.raises(ConfigError, match="embedding_init_scale"):
        RankerConfig.from_dict({"embedding_init_scale": -1.0})
