"""One way to read config YAML: :func:`read_yaml` (files) and :func:`parse_yaml_value`
(``key=value`` overrides), plus :func:`load_yaml_config` for a pydantic model from a preset
or file with overrides. Used by the encoder training, study, ranker and world configs.

PyYAML implements YAML 1.1, where a float needs a dot and a signed exponent: ``1e-3`` and
``1.0e5`` load as *strings*, which a strict config would then reject. The loader here also
resolves YAML 1.2 floats (``1e-3``, ``2E5``, ``1.5e3``), so a number written either way is
a number.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads exponent floats without a dot or exponent sign."""


# Added after SafeLoader's own resolvers (add_implicit_resolver copies them onto the
# subclass first, SafeLoader is untouched), so ints and 1.1 floats resolve as before and
# only what used to fall through to str is caught here.
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml_value(text: str) -> Any:
    """One YAML scalar or flow value (``1e-3`` -> 0.001, ``[1, 2]``, ``true``, ``din``)."""
    return yaml.load(text, Loader=ConfigLoader)  # a SafeLoader subclass: safe


def read_yaml(path: str | Path, *, what: str = "config") -> dict[str, Any]:
    """The mapping at the top of YAML file ``path`` (an empty file is ``{}``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid YAML or not a mapping (the file is named).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no {what} file {p}")
    try:
        data = yaml.load(p.read_text(), Loader=ConfigLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: invalid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping at the top, got {type(data).__name__}")
    return data


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    """``d["a"]["b"] = value`` for ``dotted == "a.b"`` (missing levels are created)."""
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def load_yaml_config(
    model: type[M], preset_dir: Path, preset: str | None, path: str | Path | None,
    overrides: list[str] | None, *, what: str = "config", default: str = "tiny",
) -> M:
    """``model`` validated from ``path`` (or ``preset_dir/<preset>.yaml``) with ``overrides``
    (values parsed as YAML).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown preset, malformed override, unknown key or bad value (pydantic
            names the field).
    """
    if path is not None:
        p = Path(path)
    else:
        name = preset or default
        p = preset_dir / f"{name}.yaml"
        if not p.is_file():
            known = sorted(x.stem for x in preset_dir.glob("*.yaml"))
            raise ValueError(f"unknown preset {name!r} (known: {', '.join(known)})")
    raw = read_yaml(p, what=what)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        k, v = item.split("=", 1)
        set_dotted(raw, k.strip(), parse_yaml_value(v))
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{p}: {exc}") from None
