"""The world's strict config: YAML presets equal to the values they replaced, and bad keys
or types rejected with the key named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moon_rec._yaml_config import read_yaml
from moon_rec.data.errors import DataError
from moon_rec.data.world_config import PRESET_DIR, WorldConfig, make_config, world_presets

# The values before the presets became YAML (the old dataclass defaults and PRESETS dict):
# the same config must generate the same world.
OLD_DEFAULTS = {
    "n_items": 10_000, "n_users": 3_000, "n_requests": 60_000, "list_len": 10,
    "n_brands": 200, "days": 60, "train_frac": 0.8, "initial_item_frac": 0.7,
    "image_size": 64, "queries_per_item": 2, "image_query_request_frac": 0.08,
    "style_dim": 8, "title_omit_color": 0.5, "title_omit_pattern": 0.6, "attr_omit": 0.25,
    "title_noise_words": 0.5, "w_style_look": 2.6, "w_style_other": 0.3,
    "w_brand_look": 0.3, "w_brand_other": 1.2, "w_price_look": 0.15, "w_price_other": 0.6,
    "w_cat": 0.5, "w_quality": 0.6, "bias": -2.3, "position_decay": 0.12,
    "taste_drift": 0.35, "cart_rate": 0.3, "buy_rate": 0.4, "chunk_items": 20_000,
    "chunk_requests": 50_000, "workers": 2,
}
OLD_PRESETS = {
    "tiny": {"n_items": 400, "n_users": 150, "n_requests": 3_000, "n_brands": 24, "days": 30,
             "workers": 1},
    "small": {},
    "default": {"n_items": 100_000, "n_users": 30_000, "n_requests": 600_000, "n_brands": 800},
    "large": {"n_items": 1_000_000, "n_users": 200_000, "n_requests": 3_000_000,
              "n_brands": 3_000, "queries_per_item": 1, "days": 90},
}


@pytest.mark.parametrize("preset", sorted(OLD_PRESETS))
def test_presets_equal_the_old_values(preset: str) -> None:
    cfg = make_config(preset, 7)
    expected = {"preset": preset, "seed": 7, **OLD_DEFAULTS, **OLD_PRESETS[preset]}
    # same keys in the same order, same values and types (world.json / demo step keys)
    assert json.dumps(cfg.to_dict()) == json.dumps(expected)
    assert WorldConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_every_preset_file_is_listed() -> None:
    assert world_presets() == sorted(OLD_PRESETS)
    assert {p.stem for p in PRESET_DIR.glob("*.yaml")} == set(OLD_PRESETS)


def test_overrides_and_their_errors_name_the_key() -> None:
    cfg = make_config("tiny", 3, n_requests=500, n_items=None)
    assert cfg.n_requests == 500 and cfg.n_items == 400 and cfg.seed == 3
    with pytest.raises(DataError, match="unknown world setting") as exc:
        make_config("tiny", 0, n_itemz=5)
    assert exc.value.column == "n_itemz"
    for key, value in (("n_items", 400.0), ("n_items", "400"), ("train_frac", "0.8"),
                       ("n_items", True), ("train_frac", 1.5), ("image_size", 8)):
        with pytest.raises(DataError) as exc:
            make_config("tiny", 0, **{key: value})
        assert exc.value.column == key and key in str(exc.value)
    with pytest.raises(DataError, match="seed"):
        make_config("tiny", 1.5)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="preset"):
        make_config("huge", 0)


def test_config_is_frozen_and_strict() -> None:
    cfg = make_config("tiny", 0)
    with pytest.raises(ValueError, match="frozen"):
        cfg.n_items = 5  # type: ignore[misc]
    with pytest.raises(DataError, match="w_catt"):
        WorldConfig.from_dict({**cfg.to_dict(), "w_catt": 1.0})
    with pytest.raises(DataError, match="bias"):
        WorldConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "bias"})


def test_yaml_exponent_floats_read_as_floats(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("taste_drift: 1e-3\nbias: -2.5E+0\nposition_decay: 1.2e-1\nn_items: 1_000\n")
    raw = read_yaml(path)
    assert raw == {"taste_drift": 0.001, "bias": -2.5, "position_decay": 0.12, "n_items": 1000}
    assert isinstance(raw["taste_drift"], float) and isinstance(raw["n_items"], int)
    cfg = WorldConfig.from_dict({**make_config("tiny", 0).to_dict(), **raw})
    assert cfg.taste_drift == 0.001
