"""``key=value`` overrides: a raw value (a command-line string or a JSON/Python value) set on a config
field, parsed by the field's declared type.

Every leaf field name is unique across a config's sections, so a key may name a field plainly
(``crop_scale=0.2,1``) or with its section (``aug.crop_scale=...``); an unknown key gets the closest
names as a hint (difflib), not the whole list.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import TYPE_CHECKING, Any

from .validation import ConfigError

if TYPE_CHECKING:  # the type only: simlab.config imports this module to build Config.from_dict
    from .config import Config


def _sections(cfg: Config) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]


def _locate(cfg: Config, key: str) -> tuple[Any, dataclasses.Field]:
    """The dataclass holding ``key`` (``name`` or ``section.name``) and its field."""
    if "." in key:
        section, name = key.split(".", 1)
        owners = [getattr(cfg, section)] if section in _sections(cfg) else []
    else:
        name = key
        owners = [cfg] + [getattr(cfg, s) for s in _sections(cfg)]
    for owner in owners:
        for f in dataclasses.fields(owner):
            if f.name == name and not dataclasses.is_dataclass(getattr(owner, name)):
                return owner, f
    raise ConfigError(f"{key}: unknown setting; {_suggest(cfg, key)}")


def _suggest(cfg: Config, key: str) -> str:
    """A short hint for an unknown key: the closest field names (difflib), not the whole list."""
    name = key.split(".")[-1]
    sections = _sections(cfg)
    owners = [s for s in sections if name in [f.name for f in dataclasses.fields(getattr(cfg, s))]]
    if owners and "." in key:  # a real field under the wrong section
        return f"did you mean '{owners[0]}.{name}'?"
    close = difflib.get_close_matches(name, sorted(set(all_field_names(cfg))), n=3, cutoff=0.75)
    if close:
        return f"did you mean {' or '.join(repr(c) for c in close)}?"
    return (f"settings are the fields of the {', '.join(sections)} sections of simlab.config.Config "
            f"(simlab/config.py), e.g. neg_weight, crop_scale, lr, batch_size")


def all_field_names(cfg: Config) -> list[str]:
    names = [f.name for f in dataclasses.fields(cfg) if f.name not in _sections(cfg)]
    for s in _sections(cfg):
        names += [f.name for f in dataclasses.fields(getattr(cfg, s))]
    return names


def _parse(tp: Any, raw: Any, name: str) -> Any:
    """Convert ``raw`` (a string from the command line, or a JSON/Python value) to type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _parse(inner[0], raw, name)
    if origin is tuple:
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        inner = args[0]
        return tuple(_parse(inner, x.strip() if isinstance(x, str) else x, name) for x in items)
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(raw, str) and raw.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {raw!r}")
    if tp is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}")
        try:
            return int(raw) if not isinstance(raw, str) else int(raw.replace("_", ""))
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if tp is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{name}: expected a number, got {raw!r}")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name}: must be a finite number, got {raw!r}")
        return value
    if tp is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{name}: expected a string, got {raw!r}")
        return raw
    raise ConfigError(f"{name}: cannot parse values of type {tp}")


def set_field(cfg: Config, key: str, raw: Any) -> None:
    """Set one field from a raw value, parsed by the field's type."""
    owner, f = _locate(cfg, key)
    hints = typing.get_type_hints(type(owner))
    setattr(owner, f.name, _parse(hints[f.name], raw, f.name))


def apply_overrides(cfg: Config, overrides: list[str] | dict[str, Any]) -> Config:
    """Apply ``key=value`` strings (or a mapping) to ``cfg`` in place and return it."""
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    for key, value in items:
        set_field(cfg, key.strip(), value)
    return cfg


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"{item}: an override must look like key=value")
    key, value = item.split("=", 1)
    return key, value
