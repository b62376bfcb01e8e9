"""The ranker's strict config: real types, unknown keys and wrong types named, YAML
exponent floats read as floats, nested overrides validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from moon_rec._yaml_config import parse_yaml_value, read_yaml
from moon_rec.ranking.config import (
    BEHAVIOUR_KINDS,
    ConfigError,
    RankerConfig,
    load_ranker_config,
)


def _experiments(path: Path) -> list[str]:
    """The experiment ids of a YAML config file (every top-level key but ``Base``)."""
    return [k for k in read_yaml(path, what="ranker config") if k != "Base"]


@pytest.mark.parametrize(
    "data,key",
    [
        ({"embedding_dim": 16.7}, "embedding_dim"),
        ({"embedding_dim": 16.0}, "embedding_dim"),
        ({"embedding_dim": "16"}, "embedding_dim"),
        ({"train": {"dense_lr": "fast"}}, "train.dense_lr"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"behaviour": {"user_content": 1}}, "behaviour.user_content"),
        ({"behaviour": {"attention_hidden": [16.5]}}, "behaviour.attention_hidden.0"),
        ({"over_arch": {"interaction": "cross"}}, "over_arch.interaction"),
        ({"feature_set": "ids+clip"}, "feature_set"),
        ({"train": {"lr": 0.1}}, "train.lr"),
        ({"behaviour": 3}, "behaviour"),
    ],
)
def test_wrong_types_and_unknown_keys_name_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        RankerConfig.from_dict(data)
    assert str(exc.value).split(":")[0].removeprefix("unknown key ").split(" ")[0] == key


def test_yaml_exponent_floats_are_floats(tmp_path: Path) -> None:
    assert parse_yaml_value("1e-3") == 0.001 and isinstance(parse_yaml_value("1e-3"), float)
    assert parse_yaml_value("1.0e5") == 1e5 and parse_yaml_value("-2E2") == -200.0
    assert parse_yaml_value("10") == 10 and isinstance(parse_yaml_value("10"), int)
    assert parse_yaml_value("1e3x") == "1e3x" and parse_yaml_value("ids+moon") == "ids+moon"
    path = tmp_path / "r.yaml"
    path.write_text("Base:\n  train: {dense_lr: 1e-3, sparse_lr: 5e-2}\nfast:\n  train: {epochs: 1}\n")
    cfg = load_ranker_config(path, "fast")
    assert cfg.train.dense_lr == 0.001 and cfg.train.sparse_lr == 0.05 and cfg.train.epochs == 1
    path.write_text("train: {dense_lr: '1e-3'}\n")  # quoted: a string, which a float refuses
    with pytest.raises(ConfigError, match=r"train\.dense_lr"):
        load_ranker_config(path)


def test_experiment_errors_name_the_file_and_block(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("Base: {embedding_dim: 8}\nbad:\n  behaviour: {modul: din}\n")
    with pytest.raises(ConfigError, match=r"\[bad\]: unknown key behaviour\.modul"):
        load_ranker_config(path, "bad")
    with pytest.raises(ConfigError, match="unknown experiment 'good'"):
        load_ranker_config(path, "good")
    path.write_text("Base: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_ranker_config(path)


def test_overrides_merge_nested_and_validate(configs_file: Path) -> None:
    cfg = load_ranker_config(configs_file, "cube_moon_tiny")
    other = cfg.with_overrides({"train": {"seed": 3}, "max_seq_len": 7})
    assert other.train.seed == 3 and other.max_seq_len == 7
    assert other.train.batch_size == cfg.train.batch_size and cfg.train.seed == 0
    with pytest.raises(ConfigError, match="ids\\+moon"):
        cfg.with_overrides({"feature_set": "ids"})  # cube needs content vectors
    assert RankerConfig.from_dict(other.to_dict()) == other
    for name in _experiments(configs_file):
        assert load_ranker_config(configs_file, name).to_dict()["train"]["dense_lr"] > 0


def test_the_base_block_is_the_code_defaults(configs_file: Path) -> None:
    """``Base:`` documents every key with the code's default: it cannot drift from it."""
    base = read_yaml(configs_file, what="ranker config")["Base"]
    assert base == RankerConfig().to_dict()


def test_behaviour_kinds_are_one_registry() -> None:
    """Every declared kind has one module class, and the config rejects any other name,
    naming the kinds."""
    from moon_rec.ranking.behaviours import BEHAVIOUR_MODULES

    assert set(BEHAVIOUR_MODULES) == set(BEHAVIOUR_KINDS)
    assert all(cls.kind == kind for kind, cls in BEHAVIOUR_MODULES.items())
    with pytest.raises(ConfigError, match=r"behaviour\.module: one of din, cube, sim"):
        RankerConfig.from_dict({"behaviour": {"module": "dien"}})
    for kind, spec in BEHAVIOUR_KINDS.items():
        data = {"feature_set": "ids", "behaviour": {"module": kind}}
        if spec.needs_content:
            with pytest.raises(ConfigError, match="needs a feature_set with a moon_embedding feature"):
                RankerConfig.from_dict(data)
        else:
            assert RankerConfig.from_dict(data).behaviour.module == kind
