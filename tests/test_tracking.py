"""Each tracker backend in its offline / local mode mirrors metrics.jsonl, value for value."""

import json
import time

import pytest

from simlab.config import ConfigError, apply_overrides
from simlab.presets import preset
from simlab.train import pretrain


def _train(run, logger):
    cfg = apply_overrides(preset("tiny"), ["steps=4", "log_every=2", f"logger={logger}"]).validate()
    pretrain(cfg, run, log=lambda *_: None)
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_events_hold_the_logged_losses(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    records = _train(tmp_path / "run", "tensorboard")
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("loss")
    assert [e.step for e in events] == [r["step"] for r in records]
    assert [e.value for e in events] == pytest.approx([r["loss"] for r in records], rel=1e-6)


def test_wandb_offline_run_holds_the_last_values(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    records = _train(tmp_path / "run", "wandb")
    files = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1  # one offline run, to be sent later with `wandb sync`
    deadline = time.time() + 30  # W&B's service process may still be writing when finish() returns
    while time.time() < deadline and json.dumps(records[-1]["loss"]).encode() not in files[0].read_bytes():
        time.sleep(0.2)
    data = files[0].read_bytes()  # W&B records each logged value as its JSON text
    for r in records:
        for key in ("loss", "pos", "grad_norm", "target_var_position"):
            assert key.encode() in data and json.dumps(r[key]).encode() in data, (r["step"], key)


def test_mlflow_file_store_holds_every_step(tmp_path, monkeypatch):
    import mlflow
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    records = _train(tmp_path / "run", "mlflow")
    mlflow.set_tracking_uri((tmp_path / "run" / "mlruns").resolve().as_uri())
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1 and runs[0].data.params["model.neg_weight"] == "0.02"
    history = mlflow.tracking.MlflowClient().get_metric_history(runs[0].info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in records]


def test_no_tracker_and_a_missing_package(tmp_path, monkeypatch):
    _train(tmp_path / "quiet", "none")
    assert not (tmp_path / "quiet" / "tensorboard").exists()
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="logger: wandb needs the 'wandb' package"):
        _train(tmp_path / "missing", "wandb")
    assert not (tmp_path / "missing").exists()  # refused before anything was written
