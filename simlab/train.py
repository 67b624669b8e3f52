"""SiM pretraining: set-up, resume, the step loop, metrics and checkpoints.

One training step (DESIGN.md "One training step"; MAE's ``engine_pretrain.py``):
set the step's learning rate, forward (the model EMA-updates its target with
the step's momentum before the target pass), backward, unscale and clip, one
host read to check that the loss terms and the gradient norm are finite, then
the optimizer step. A run lives in a folder: ``config.json``,
``metrics.jsonl``, ``checkpoints/``, and ``COMPLETE`` once finished.

The helpers live beside it, a module per job: schedules (:mod:`simlab.schedules`),
devices and precision (:mod:`simlab.devices`), monitors (:mod:`simlab.monitors`),
run-folder files (:mod:`simlab.runfolder`), signals and faults (:mod:`simlab.signals`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from . import distributed
from .checkpoint import (FORMAT, SCHEMA, CleanFailedStart, check_run_folder, code_version, load_checkpoint,
                         newest_valid, preprocess_of, rng_state, save_step, set_rng_state)
from .config import Config, ConfigError, check_finished_run
from .devices import adamw, autocast_dtype, resolve_device
from .model import SiM
from .monitors import KnnMonitor, collapse_monitors, encoder_monitors
from .pipeline import (augment_on_device, build_pretrain_dataset, device_views, move_batch, pretrain_loader,
                       split_batch)
from .runfolder import BadImageLog, MetricsLog, check_resume, finished_definition
from .schedules import Schedule, run_length
from .signals import StopOnSignal, Terminated, fault_hook


class NonFiniteError(FloatingPointError):
    """A loss term or the gradient norm stopped being finite; the step was not applied."""


def build_model(cfg: Config, in_chans: int = 3) -> torch.nn.Module:
    """The model of the configured objective; each returns ``(loss, outputs)`` from ``forward(batch, momentum)``."""
    if cfg.train.objective == "mae":
        from .baselines import MAE
        return MAE(cfg, in_chans)
    if cfg.train.objective == "id":
        from .baselines import InstanceDiscrimination
        return InstanceDiscrimination(cfg, in_chans)
    return SiM(cfg, in_chans)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """timm's ``param_groups_weight_decay`` rule: no decay on biases and 1-D parameters.

    cls and mask tokens are 3-D, so they *are* decayed, as in SiM (SIM_SPEC.md pitfall 15).
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def pretrain(cfg: Config, run_dir, log: Callable[[str], None] = print,
             on_metrics: Optional[Callable[[dict], None]] = None) -> Path:
    """Train into ``run_dir`` (resuming from its newest valid checkpoint); returns the last checkpoint.

    ``on_metrics`` is called on rank 0 with every record written to ``metrics.jsonl`` (live curves).

    Under ``torchrun`` every rank calls this: the group is joined here, rank 0
    alone writes the run folder, and all ranks resume from the checkpoint rank 0 picked.

    A finished run (``COMPLETE``) rerun with the same definition does nothing; with another one it
    is refused, the differences shown (:func:`simlab.config.check_finished_run`). A run that fails
    before it records anything (a missing dataset, a bad image under ``on_bad_image=fail``) leaves
    nothing behind in ``run_dir`` (:class:`simlab.checkpoint.CleanFailedStart`); one that fails later
    (a non-finite loss, a crash) writes ``FAILED`` with the reason, removed once a rerun finishes.
    """
    run_dir = check_run_folder(run_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    with CleanFailedStart(run_dir, active=main):
        try:
            last = _pretrain(cfg, run_dir, log, on_metrics)
        except (Terminated, KeyboardInterrupt, ConfigError):
            raise  # a stop asked for, or a run refused before it started: not a failure of the run
        except Exception as e:
            if main and run_dir.is_dir():  # the registry reports why (simlab runs); a rerun resumes
                (run_dir / "FAILED").write_text(f"{type(e).__name__}: {e}\n")
            raise
    if main:
        (run_dir / "FAILED").unlink(missing_ok=True)
    return last


@dataclass
class _Run:
    """Everything the step loop needs, built once by :func:`_set_up`."""

    cfg: Config
    run_dir: Path
    device: torch.device
    dinfo: distributed.DistInfo
    dataset: object
    spe: int
    total: int
    start: int
    schedule: Schedule
    model: torch.nn.Module
    net: torch.nn.Module          # the model, wrapped by DDP under torchrun
    step_fn: torch.nn.Module      # net, compiled when asked
    optimizer: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]
    amp: Optional[torch.dtype]
    preprocess: dict

    def save(self, step: int) -> Path:
        ckpt = {"format": FORMAT, "schema": SCHEMA, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None, "step": step,
                "epoch": step / self.spe, "rng": rng_state(), "config": self.cfg.to_json(),
                "code_version": code_version(), "preprocess": self.preprocess}
        return save_step(self.run_dir, step, ckpt, self.cfg.train.keep_checkpoints)


def _pretrain(cfg: Config, run_dir: Path, log: Callable[[str], None],
              on_metrics: Optional[Callable[[dict], None]]) -> Path:
    cfg.validate()
    t = cfg.train
    device = resolve_device(t.device)
    if distributed.launched_by_torchrun() and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    dinfo = distributed.init_from_env(device, t.dist_timeout)
    if not dinfo.main:
        log = lambda *_: None  # noqa: E731 - rank 0 speaks for the run
    if t.batch_size % (dinfo.world * t.accum_steps):
        raise ConfigError(f"batch_size: {t.batch_size} does not split into {dinfo.world} rank(s) x "
                          f"{t.accum_steps} micro-batch(es) (accum_steps)")
    if dinfo.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    if (run_dir / "COMPLETE").exists():
        finished = finished_definition(run_dir)
        if finished is not None:
            check_finished_run(finished, cfg.defining_dict(), run_dir)
        log(f"{run_dir} is complete; nothing to do")
        found = newest_valid(run_dir, log)
        return found[0] if found else run_dir
    if dinfo.main:
        from .tracking import check_available
        check_available(t.logger)  # a missing tracker package is refused before the data is built
    run = _set_up(cfg, run_dir, device, dinfo, log)
    metrics = MetricsLog(run_dir, run.start if run.start else None, t.logger, cfg) if dinfo.main else None
    try:
        last_path = _loop(run, metrics, log, on_metrics)
    finally:
        if metrics is not None:
            metrics.close()
    if not dinfo.main:
        return run_dir
    if last_path is None:  # nothing left to train: the newest checkpoint is the final one
        last_path = newest_valid(run_dir, log)[0]
    (run_dir / "COMPLETE").write_text(f"{last_path.name}\n")
    log(f"finished: {last_path}")
    return last_path


def _set_up(cfg: Config, run_dir: Path, device: torch.device, dinfo, log) -> _Run:
    """Data, schedule, model, optimizer and scaler, resumed from rank 0's newest valid checkpoint."""
    t = cfg.train
    dataset = build_pretrain_dataset(cfg)
    spe, total = run_length(cfg, len(dataset))
    torch.manual_seed(cfg.seed)  # the initial weights are a function of the seed (the same on every rank)
    model = build_model(cfg, dataset.in_chans).to(device)
    amp = autocast_dtype(t.precision, device)
    optimizer = adamw(param_groups(model, t.weight_decay), t.peak_lr(), (t.beta1, t.beta2))
    scaler = torch.amp.GradScaler(device.type, growth_interval=2000) if amp == torch.float16 else None
    start = 0
    found = newest_valid(run_dir, log) if dinfo.main else None
    resume_path = distributed.broadcast_object(str(found[0]) if found else None)
    if resume_path is not None:
        path = Path(resume_path)
        ckpt = found[1] if found else load_checkpoint(path)
        check_resume(cfg, ckpt, path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        start = int(ckpt["step"])
        log(f"resuming {run_dir} from step {start} ({path.name})")
        del ckpt
    elif dinfo.main:
        (run_dir / "config.json").write_text(cfg.to_json() + "\n")
    net = distributed.wrap_ddp(model, device)
    # what the encoder expects, recorded in every checkpoint: the views' normalisation (configured or the dataset's)
    preprocess = preprocess_of(cfg, dataset.in_chans, dataset.mean if cfg.aug.mean is None else cfg.aug.mean,
                               dataset.std if cfg.aug.std is None else cfg.aug.std)
    return _Run(cfg, run_dir, device, dinfo, dataset, spe, total, start, Schedule.build(cfg, spe, total), model,
                net, torch.compile(net) if t.compile else net, optimizer, scaler, amp, preprocess)


def _step(run: _Run, batch: dict, step: int, fault: Optional[str]) -> tuple[list, dict, dict]:
    """One optimizer step over ``accum_steps`` micro-batches; returns the global (loss, pos, neg,
    grad_norm), the last micro-batch's outputs and the micro-batch itself. Raises NonFiniteError
    (the step not applied) when a term or the gradient norm is not finite."""
    t, params = run.cfg.train, [p for g in run.optimizer.param_groups for p in g["params"]]
    for group in run.optimizer.param_groups:
        group["lr"] = float(run.schedule.lr[step])
    terms = torch.zeros(3, device=run.device)
    micro_batches = split_batch(batch, t.accum_steps)
    for i, micro in enumerate(micro_batches):
        # DDP all-reduces gradients on the last micro-batch only; the target's EMA
        # update happens once per optimizer step, before the first target pass
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last or run.net is run.model else run.net.no_sync():
            with torch.autocast(run.device.type, dtype=run.amp or torch.float32, enabled=run.amp is not None):
                loss, out = run.step_fn(micro, momentum=float(run.schedule.momentum[step]) if i == 0 else None)
            if fault in ("nan", "inf"):
                loss = loss * float(fault)
            loss = loss / len(micro_batches)
            (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
        terms += torch.stack([loss.detach().float() * len(micro_batches), out["pos"].float(),
                              out["neg"].float()]) / len(micro_batches)
    if fault == "grad_nan":
        next(p for p in params if p.grad is not None).grad.view(-1)[0] = float("nan")
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, t.clip_grad if t.clip_grad else float("inf"))
    # one collective and one host read: every rank sees the same (global) values and decides alike
    values = torch.cat([distributed.mean_across_ranks(terms), grad_norm.float().reshape(1)]).tolist()
    if not all(math.isfinite(v) for v in values[:3]) or (run.scaler is None and not math.isfinite(values[3])):
        names = [n for n, v in zip(("loss", "pos", "neg", "grad_norm"), values) if not math.isfinite(v)]
        run.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteError(f"step {step}: non-finite {', '.join(names)} (loss={values[0]}, pos={values[1]}, "
                             f"neg={values[2]}, grad_norm={values[3]}); the optimizer step was not applied")
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return values, out, micro


def _loop(run: _Run, metrics: Optional[MetricsLog], log, on_metrics) -> Optional[Path]:
    """Steps from ``run.start`` to the end: logs every ``log_every`` steps, saves every
    ``checkpoint_every`` and at the end, stops cleanly on SIGTERM / Ctrl-C. Returns the last save."""
    t, main = run.cfg.train, run.dinfo.main
    on_device = augment_on_device(run.cfg, run.device)
    loader = pretrain_loader(run.dataset, run.cfg, run.total, run.start, pin_memory=run.device.type == "cuda",
                             rank=run.dinfo.rank, world=run.dinfo.world, augment=not on_device)
    knn_steps = max(1, round(t.knn_every * run.spe)) if t.knn_every > 0 else 0
    monitor = KnnMonitor(run.cfg) if knn_steps and main else None
    if monitor is not None:
        run.model.encoder.preprocess = run.preprocess
    bar = None
    if t.progress and main:
        from tqdm.auto import tqdm
        bar = tqdm(total=run.total, initial=run.start, desc="pretrain", unit="step", dynamic_ncols=True)
    run.model.train()
    last_path, window_start, window_images = None, time.perf_counter(), 0
    bad_images = BadImageLog(run.run_dir, log)
    try:
        with StopOnSignal() as stop:
            for batch in loader:
                step = batch["step"]
                fault = fault_hook(step, run.dinfo.rank)
                bad_images.add(batch.pop("skipped", ()))
                if on_device:  # the loader sent uint8 images and boxes: make the views here
                    batch = device_views(batch, loader.dataset.transform, run.device)
                batch = move_batch(batch, run.device)
                values, out, micro = _step(run, batch, step, fault)
                done = step + 1
                window_images += batch["view1"].shape[0] * run.dinfo.world
                knn_due = monitor is not None and (done % knn_steps == 0 or done == run.total)
                if main and (done % t.log_every == 0 or done == run.total or knn_due):
                    ips = window_images / max(time.perf_counter() - window_start, 1e-9)
                    record = {"step": done, "epoch": done / run.spe, "loss": values[0], "pos": values[1],
                              "neg": values[2], "lr": float(run.schedule.lr[step]),
                              "momentum": float(run.schedule.momentum[step]), "grad_norm": values[3],
                              "images_per_s": ips, **collapse_monitors(out),
                              **encoder_monitors(run.model.encoder, micro["view1"])}
                    if knn_due:
                        record["knn"] = monitor(run.model.encoder)  # the encoder goes back to train mode
                    metrics.write(record)
                    if on_metrics is not None:
                        on_metrics(record)
                    window_start, window_images = time.perf_counter(), 0
                    if bar is not None:
                        knn = {"knn": f"{record['knn']:.3f}"} if "knn" in record else {}
                        bar.set_postfix(loss=f"{values[0]:.4f}", img_s=f"{ips:.0f}", **knn)
                if bar is not None:
                    bar.update(1)
                if main and stop.checkpoint_due(done, run.total, t.checkpoint_every):
                    last_path = run.save(done)
                stop.stop_if_requested(done, log)
    finally:
        if bar is not None:
            bar.close()
    return last_path
