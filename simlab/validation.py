"""How a configuration value is refused: :class:`ConfigError` and the checks every section's
``validate`` uses, so each error names its field (simlab.config, simlab.finetune)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


def _check(ok: bool, name: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {msg}")


def _check_prob(value: float, name: str) -> None:
    _check(0.0 <= value <= 1.0, name, f"must be a probability in [0, 1], got {value!r}")


def _check_range(pair: tuple, name: str, lo: float, hi: float) -> None:
    _check(len(pair) == 2, name, f"must be a pair (low, high), got {pair!r}")
    _check(lo <= pair[0] <= pair[1] <= hi, name,
           f"must satisfy {lo} <= low <= high <= {hi}, got {pair!r}")
