"""A run folder's files as the training loop writes them: metrics, skipped images, the definition.

``metrics.jsonl`` (cut back to the resumed step, mirrored to a tracker), ``bad_images.txt``, and
the checks that a resumed or finished run is the run this command defines (DESIGN.md "Checkpoints").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

from .checkpoint import config_of, newest_valid
from .config import Config, check_same_definition


class MetricsLog:
    """metrics.jsonl, cut back to a step on resume, mirrored to the configured tracker
    (:mod:`simlab.tracking`: TensorBoard by default)."""

    def __init__(self, run_dir: Path, resume_step: Optional[int], logger: str = "tensorboard",
                 cfg: Optional[Config] = None):
        from .tracking import make_tracker
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= resume_step:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError):  # a line cut by a kill mid-write
                    continue
            self.path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None:
            self.path.write_text("")
        self.tracker = make_tracker(logger, run_dir, cfg)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.tracker.log(record)

    def close(self) -> None:
        self.tracker.close()


class BadImageLog:
    """``bad_images.txt`` in the run folder: one ``path<TAB>reason`` line per image file skipped.

    Every rank appends the files its own share of a batch skipped (short
    appends do not interleave); a file already listed, by this run or before a
    resume, is not listed again.
    """

    NAME = "bad_images.txt"

    def __init__(self, run_dir: Path, log: Callable[[str], None]):
        self.path, self.log = run_dir / self.NAME, log
        self.seen = set(self.read(run_dir))

    @classmethod
    def read(cls, run_dir) -> list[str]:
        path = Path(run_dir) / cls.NAME
        return [line.split("\t")[0] for line in path.read_text().splitlines() if line] if path.exists() else []

    def add(self, skipped) -> None:
        for path, reason in skipped:
            if path in self.seen:
                continue
            self.seen.add(path)
            with open(self.path, "a") as f:
                f.write(f"{path}\t{reason}\n")
            self.log(f"skipped a bad image: {path} ({reason}); listed in {self.path}")


def check_resume(cfg: Config, ckpt: dict, path: Path) -> None:
    check_same_definition(config_of(ckpt).defining_dict(), cfg.defining_dict(), path)


def finished_definition(run_dir: Path) -> Optional[dict]:
    """The run-defining fields of a finished run: its config.json, else its newest checkpoint's config."""
    path = run_dir / "config.json"
    if path.exists():
        return Config.from_dict(json.loads(path.read_text())).defining_dict()
    found = newest_valid(run_dir, lambda *_: None)
    return config_of(found[1]).defining_dict() if found else None
