"""Whether a command defines the same run as a run folder already holds (DESIGN.md "Checkpoints").

A resumed run must match its checkpoint's run-defining fields; a finished run rerun with the same
definition does nothing, with another is refused. Both compare flat ``defining_dict()`` dicts and
show every difference.
"""

from __future__ import annotations

from .validation import ConfigError


def _differences(old: dict, new: dict) -> dict:
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def check_same_definition(old: dict, new: dict, path) -> None:
    """Refuse to resume from ``path`` when the run-defining fields differ; the error lists each one."""
    diff = _differences(old, new)
    if diff:
        lines = "\n".join(f"  {k}: checkpoint has {a!r}, this command has {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"cannot resume from {path}: the run was defined differently\n{lines}\n"
                          f"use another --out folder, or the same settings")


def check_finished_run(old: dict, new: dict, run_dir, length_keys=("steps", "epochs")) -> None:
    """The rule for a finished run rerun (pretraining's, and fine-tuning's when it adopts it): the same
    definition does nothing; any other is refused, with each difference shown.

    ``old`` and ``new`` are flat run-defining dicts (``defining_dict()``: the finished run's, from its
    ``config.json``, and this command's). A longer run is refused with its own reason: a finished run's
    warmup-cosine learning-rate and EMA schedules were computed for its own length and have run to
    their end, so training on would not be the longer run, nor is there one well-defined way to
    stretch them; a longer run is a new run in a new folder.
    """
    diff = _differences(old, new)
    if not diff:
        return
    if set(diff) <= set(length_keys):
        for key, (was, asked) in diff.items():
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (was, asked))
            if numbers and asked > was:
                unit = key  # "steps" or "epochs"
                raise ConfigError(
                    f"{key}: {run_dir} is a finished run of {was} {unit}; this command asks for {asked}. A "
                    f"finished run is not extended: its learning-rate and EMA schedules (warmup, then cosine) "
                    f"were set for {was} {unit} and have ended, so {asked} {unit} would be a different run. "
                    f"Use a new --out folder for it")
    lines = "\n".join(f"  {k}: the run has {a!r}, this command has {b!r}" for k, (a, b) in diff.items())
    raise ConfigError(f"{run_dir} is a finished run defined differently:\n{lines}\n"
                      f"use a new --out folder for these settings (the run's own settings do nothing)")
