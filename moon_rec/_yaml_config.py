"""One way to load a pydantic config from a YAML preset or file plus ``key.sub=value``
overrides; used by the encoder training config and the study config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


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
        if not p.is_file():
            raise FileNotFoundError(f"no {what} file {p}")
    else:
        name = preset or default
        p = preset_dir / f"{name}.yaml"
        if not p.is_file():
            known = sorted(x.stem for x in preset_dir.glob("*.yaml"))
            raise ValueError(f"unknown preset {name!r} (known: {', '.join(known)})")
    raw = yaml.safe_load(p.read_text()) or {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        k, v = item.split("=", 1)
        set_dotted(raw, k.strip(), yaml.safe_load(v))
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{p}: {exc}") from None
