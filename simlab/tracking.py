"""Experiment trackers behind one small interface: TensorBoard, Weights & Biases, MLflow, or none.

``metrics.jsonl`` in the run folder is always written and is the record of truth; a tracker
mirrors each record for the tools GPU users already watch. Chosen by the config field ``logger``
(an execution field: a run may resume under another tracker):

- ``tensorboard`` (the default): event files in ``RUN/tensorboard``;
- ``wandb``: a W&B run named after the run folder, its files in ``RUN/wandb``, resumed with the same
  id after an interruption; ``WANDB_MODE=offline`` keeps everything local (``wandb sync`` later);
  the project is ``$WANDB_PROJECT`` or ``simlab``;
- ``mlflow``: an MLflow run (params = the flattened config) in ``$MLFLOW_TRACKING_URI``, by default
  a file store in ``RUN/mlruns``;
- ``none``.

A tracker whose package is missing is refused before training starts, naming the package.
Each is imported only when chosen.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Optional

from .config import Config, ConfigError

TRACKERS = ("tensorboard", "wandb", "mlflow", "none")
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def check_available(name: str) -> None:
    """Refuse a tracker whose package is not installed, before any work is done."""
    if name not in TRACKERS:
        raise ConfigError(f"logger: must be one of {', '.join(TRACKERS)}, got {name!r}")
    package = _PACKAGES.get(name)
    if package and importlib.util.find_spec(package) is None:
        hint = "mlflow-skinny" if name == "mlflow" else package
        raise ConfigError(f"logger: {name} needs the '{package}' package (pip install {hint}), "
                          f"or choose another logger (--set logger=none)")


def _scalars(record: dict) -> dict:
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker:
    """Mirrors metrics records; ``log(record)`` takes a dict with a ``step``."""

    def log(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, record: dict) -> None:
        for k, v in _scalars(record).items():
            self.writer.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, run_dir: Path, cfg: Optional[Config]):
        import wandb
        # a stable id per run folder: a resumed run continues the same W&B run
        run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "simlab"), name=run_dir.name, id=run_id,
                              dir=str(run_dir), resume="allow", config=cfg.to_dict() if cfg else None,
                              reinit="finish_previous")

    def log(self, record: dict) -> None:
        self.run.log(_scalars(record), step=int(record["step"]))

    def close(self) -> None:
        self.run.finish()


class MLflowTracker(Tracker):
    def __init__(self, run_dir: Path, cfg: Optional[Config]):
        import mlflow
        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a file store in the run folder: no server, no database package needed
            uri = (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x asks for this opt-in
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "simlab"))
        found = mlflow.search_runs(filter_string=f"tags.simlab_run_dir = '{run_dir.resolve()}'",
                                   output_format="list")
        self.run = mlflow.start_run(run_id=found[0].info.run_id if found else None, run_name=run_dir.name,
                                    tags={"simlab_run_dir": str(run_dir.resolve())})
        if cfg is not None and not found:
            flat = {f"{section}.{k}": v for section, values in cfg.to_dict().items()
                    for k, v in (values.items() if isinstance(values, dict) else [(section, values)])}
            mlflow.log_params({k: str(v)[:250] for k, v in flat.items()})

    def log(self, record: dict) -> None:
        self.mlflow.log_metrics(_scalars(record), step=int(record["step"]))

    def close(self) -> None:
        self.mlflow.end_run()


def make_tracker(name: str, run_dir, cfg: Optional[Config] = None) -> Tracker:
    """The tracker ``name`` for ``run_dir`` (see the module's docstring)."""
    check_available(name)
    run_dir = Path(run_dir)
    if name == "tensorboard":
        return TensorBoardTracker(run_dir)
    if name == "wandb":
        return WandbTracker(run_dir, cfg)
    if name == "mlflow":
        return MLflowTracker(run_dir, cfg)
    return Tracker()
