"""The run-folder rules of starting a run (pretraining's and fine-tuning's): ``--out`` must name a
folder, and a start that fails before it records anything leaves nothing behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .checkpoint_io import CheckpointError, list_checkpoints

def check_run_folder(run_dir) -> Path:
    """``run_dir`` as a Path, refused with a clear error when something other than a folder has its name."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: exists and is not a folder; --out takes a run folder")
    return run_dir


class CleanFailedStart:
    """A run that fails before it records anything leaves nothing behind.

    Used as ``with CleanFailedStart(run_dir):`` around a whole run. On an
    exception (a missing dataset, a bad image under ``on_bad_image=fail``,
    Ctrl-C during set-up), if the folder holds no checkpoint, no ``COMPLETE``
    and no metrics line, it removes what this command added: the entries that
    were not there before, and the folder itself if this command created it.
    A folder that held anything before keeps it. ``active=False`` (ranks other
    than 0, which write nothing) makes it a no-op.
    """

    def __init__(self, run_dir, active: bool = True):
        self.run_dir, self.active = Path(run_dir), active
        self.existed = self.run_dir.is_dir()
        self.before = set(self.run_dir.iterdir()) if self.existed else set()

    def __enter__(self) -> "CleanFailedStart":
        return self

    def recorded(self) -> bool:
        """Whether the run folder holds anything a run made: a checkpoint, COMPLETE or a metrics line."""
        metrics = self.run_dir / "metrics.jsonl"
        return bool(list_checkpoints(self.run_dir) or (self.run_dir / "COMPLETE").exists()
                    or (metrics.exists() and metrics.read_text().strip()))

    def __exit__(self, etype, exc, tb) -> bool:
        if etype is None or not self.active or not self.run_dir.is_dir() or self.recorded():
            return False
        for entry in set(self.run_dir.iterdir()) - self.before:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if not self.existed:
            try:
                self.run_dir.rmdir()
            except OSError:  # something else wrote there meanwhile: keep it
                pass
        return False
