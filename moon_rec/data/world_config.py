"""The synthetic world's configuration: a strict pydantic model, presets as YAML data.

Presets are ``configs/world/<preset>.yaml`` (``tiny``, ``small``, ``default``, ``large``);
each file lists every knob of :class:`WorldConfig` but ``preset`` and ``seed``, which
:func:`make_config` adds. A world is reproducible from its config and seed: ``world.json``
records ``cfg.to_dict()`` and ``WorldConfig.model_validate`` reads it back.

Example::

    cfg = make_config("tiny", seed=0, n_requests=500)
    cfg.n_items          # 400
    cfg.train_end        # 2026-01-25 00:00 UTC (day 24 of 30)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moon_rec._yaml_config import read_yaml
from moon_rec.data.errors import DataError

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "world"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class WorldConfig(BaseModel):
    """Every knob of the generator (:mod:`moon_rec.data.world`); presets set all of them.

    Strict: unknown keys and wrong types (``"0.5"`` or ``1`` for a bool, ``400.0`` for an
    int) are errors naming the key. Frozen, so a config is a value.

    Args:
        preset / seed: the preset's name and the seed of every random draw.
        n_items / n_users / n_brands: catalog, population and brand counts;
            ``initial_item_frac`` of the items launch before the first day, the rest
            continuously over ``days``.
        n_requests / list_len: search requests of ``list_len`` candidates each
            (impressions <= n_requests * list_len).
        days / train_frac: ``days`` of traffic from 2026-01-01; impressions before
            ``train_frac`` of the period are train, after it test.
        image_size: square photo side in pixels (>= 16).
        queries_per_item / image_query_request_frac: user photos per item; the share of
            requests that are image queries.
        style_dim: dimension of the style (look) space.
        title_omit_color / title_omit_pattern / attr_omit / title_noise_words: text noise:
            titles omit colour / pattern at these rates, attribute text omits each attribute
            at ``attr_omit``, a noise word enters a title at ``title_noise_words``.
        w_*, bias, position_decay: weights of the click model
            (:mod:`moon_rec.data.click_model`); ``*_look`` apply in look-driven categories,
            ``*_other`` elsewhere.
        taste_drift: how far a user's taste moves over the whole period.
        cart_rate / buy_rate: a click deepens to a cart at ``cart_rate``, a cart to a buy
            at ``buy_rate``.
        chunk_items / chunk_requests / workers: generation chunk sizes (the output does not
            depend on them) and image-rendering processes.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    preset: str
    seed: int
    n_items: int = Field(ge=1)
    n_users: int = Field(ge=1)
    n_requests: int = Field(ge=1)
    list_len: int = Field(ge=1)
    n_brands: int = Field(ge=1)
    days: int = Field(ge=1)
    train_frac: float = Field(gt=0.0, lt=1.0)
    initial_item_frac: Fraction
    image_size: int = Field(ge=16)
    queries_per_item: int = Field(ge=0)
    image_query_request_frac: Fraction
    style_dim: int = Field(ge=1)
    title_omit_color: Fraction
    title_omit_pattern: Fraction
    attr_omit: Fraction
    title_noise_words: Fraction
    w_style_look: float
    w_style_other: float
    w_brand_look: float
    w_brand_other: float
    w_price_look: float
    w_price_other: float
    w_cat: float
    w_quality: float
    bias: float
    position_decay: float = Field(ge=0.0)
    taste_drift: float = Field(ge=0.0)
    cart_rate: Fraction
    buy_rate: Fraction
    chunk_items: int = Field(ge=1)
    chunk_requests: int = Field(ge=1)
    workers: int = Field(ge=1)

    def to_dict(self) -> dict[str, Any]:
        """Every field, in declaration order (JSON-safe; ``world.json``'s ``config``)."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, file: str | None = None) -> WorldConfig:
        """Validate ``data`` (e.g. ``world.json``'s ``config``).

        Raises:
            DataError: naming the first bad key (and ``file``).
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _data_error(exc, file) from None

    @property
    def train_end(self) -> datetime:
        return EPOCH + timedelta(days=self.days * self.train_frac)

    @property
    def end(self) -> datetime:
        return EPOCH + timedelta(days=self.days)


def _data_error(exc: ValidationError, file: str | None) -> DataError:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or None
    if err["type"] == "extra_forbidden":
        msg = "unknown world setting"
    elif err["type"] == "missing":
        msg = "missing world setting"
    else:
        msg = f"{err['msg']}, got {err['input']!r}"
    more = len(exc.errors()) - 1
    return DataError(msg + (f" (and {more} more)" if more else ""), file=file, column=key)


def world_presets() -> list[str]:
    """The preset names (``configs/world/*.yaml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(preset: str) -> dict[str, Any]:
    """The values of ``configs/world/<preset>.yaml`` (every knob but preset and seed).

    Raises:
        DataError: unknown preset, invalid YAML, or a ``preset`` / ``seed`` key in it.
    """
    path = PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise DataError(
            f"unknown preset {preset!r} (known: {', '.join(world_presets())})", column="preset"
        )
    try:
        values = read_yaml(path, what="world preset")
    except ValueError as exc:
        raise DataError(str(exc), file=str(path)) from None
    for key in ("preset", "seed"):
        if key in values:
            raise DataError("set by make_config, not by the preset", file=str(path), column=key)
    return values


def make_config(preset: str, seed: int, **overrides: Any) -> WorldConfig:
    """Preset ``preset`` with ``seed`` and optional overrides (``None`` values are ignored).

    Raises:
        DataError: unknown preset or setting, or a bad value (the key is named).
    """
    values = load_preset(preset)
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in WorldConfig.model_fields or key in ("preset", "seed"):
            raise DataError("unknown world setting", column=key)
        values[key] = value
    try:
        return WorldConfig.model_validate({"preset": preset, "seed": seed, **values})
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        first = str(loc[0]) if loc else ""
        from_preset = bool(first) and first not in ("preset", "seed") and overrides.get(first) is None
        raise _data_error(exc, str(PRESET_DIR / f"{preset}.yaml") if from_preset else None) from None
