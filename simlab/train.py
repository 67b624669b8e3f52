"""SiM pretraining: schedules, mixed precision, EMA, finite checks, metrics, checkpoints, resume.

One training step (DESIGN.md "One training step"; MAE's ``engine_pretrain.py``):
set the step's learning rate, forward (the model EMA-updates its target with
the step's momentum before the target pass), backward, unscale and clip, one
host read to check that the loss terms and the gradient norm are finite, then
the optimizer step. Schedules are arrays computed once (DINO's
``cosine_scheduler``). A run lives in a folder: ``config.json``,
``metrics.jsonl``, ``checkpoints/``, and ``COMPLETE`` once finished.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from . import distributed
from .checkpoint import (FORMAT, SCHEMA, CleanFailedStart, check_run_folder, code_version, config_of,
                         load_checkpoint, newest_valid, preprocess_of, rng_state, save_step, set_rng_state)
from .config import Config, ConfigError, check_finished_run, check_same_definition
from .model import SiM
from .monitors import KnnMonitor, collapse_monitors, encoder_monitors  # noqa: F401 (KnnMonitor: public here)
from .pipeline import (augment_on_device, build_pretrain_dataset, device_views, move_batch, pretrain_loader,
                       split_batch)


class NonFiniteError(FloatingPointError):
    """A loss term or the gradient norm stopped being finite; the step was not applied."""


# ---------------------------------------------------------------------------- schedules
def warmup_cosine(step, warmup: float, total: int, peak: float, min_lr: float):
    """MAE's per-iteration lr at ``step`` (a number or an array): linear warmup over ``warmup``
    steps (at most ``total - 1``), then half a cosine from ``peak`` down to ``min_lr``."""
    s = np.asarray(step, dtype=np.float64)
    warmup = min(warmup, total - 1)
    progress = np.clip((s - warmup) / max(total - warmup, 1), 0, 1)
    cosine = min_lr + (peak - min_lr) * 0.5 * (1 + np.cos(np.pi * progress))
    return np.where(s < warmup, peak * s / max(warmup, 1e-12), cosine)


@dataclass
class Schedule:
    """Per-step learning rate and target momentum for ``total`` steps."""

    lr: np.ndarray
    momentum: np.ndarray

    @classmethod
    def build(cls, cfg: Config, steps_per_epoch: int, total: int) -> "Schedule":
        t = cfg.train
        s = np.arange(total, dtype=np.float64)
        if t.warmup_epochs is not None:
            warmup = t.warmup_epochs * steps_per_epoch
        else:
            warmup = t.warmup_frac * total
        lr = warmup_cosine(s, warmup, total, t.peak_lr(), t.min_lr)
        # SiM's EMA: cosine from ema_start to ema_end over training
        momentum = t.ema_end - (t.ema_end - t.ema_start) * 0.5 * (1 + np.cos(np.pi * s / total))
        return cls(lr, momentum)


def run_length(cfg: Config, num_samples: int) -> tuple[int, int]:
    """(steps per epoch, total steps)."""
    spe = num_samples // cfg.train.batch_size
    if spe < 1:
        raise ConfigError(f"batch_size: {cfg.train.batch_size} exceeds the {num_samples} training samples")
    total = cfg.train.steps if cfg.train.steps is not None else max(1, int(round(cfg.train.epochs * spe)))
    return spe, total


def build_model(cfg: Config, in_chans: int = 3) -> torch.nn.Module:
    """The model of the configured objective; each returns ``(loss, outputs)`` from ``forward(batch, momentum)``."""
    if cfg.train.objective == "mae":
        from .baselines import MAE
        return MAE(cfg, in_chans)
    if cfg.train.objective == "id":
        from .baselines import InstanceDiscrimination
        return InstanceDiscrimination(cfg, in_chans)
    return SiM(cfg, in_chans)


# ---------------------------------------------------------------------------- devices and precision
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} asked for, but no CUDA device is available")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether a CUDA device computes bf16 in hardware (compute capability 8.0, Ampere, or newer).

    ``torch.cuda.is_bf16_supported()`` is not this test: it also answers True where bf16 is only
    emulated (Volta, Turing), which runs several times slower than fp16 with a GradScaler there.
    """
    if device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device) >= (8, 0)


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """None means fp32. 'auto': bf16 on GPUs with native bf16 (capability >= 8.0), fp16 (which the
    callers pair with a GradScaler) on older GPUs, fp32 on CPUs. Explicit values are taken as given."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


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


# ---------------------------------------------------------------------------- the run
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


def _check_resume(cfg: Config, ckpt: dict, path: Path) -> None:
    check_same_definition(config_of(ckpt).defining_dict(), cfg.defining_dict(), path)


class Terminated(SystemExit):
    """SIGTERM (or, as :class:`Interrupted`, SIGINT) arrived; the last finished step was saved (by
    rank 0) and the run stopped. The exit code is the shell's for that signal: 143, or 130 for SIGINT."""

    def __init__(self, step: int, signum: int = signal.SIGTERM):
        super().__init__(128 + int(signum))
        self.step, self.signum = step, signum


class Interrupted(Terminated):
    """Ctrl-C (SIGINT): the last finished step was saved and the run stopped with exit code 130."""

    def __init__(self, step: int):
        super().__init__(step, signal.SIGINT)


_FAULT_KINDS = ("raise", "nan", "inf", "grad_nan", "kill", "term", "int")


def _fault_hook(step: int, rank: int) -> Optional[str]:
    """Test hook: ``SIMLAB_FAULT=RANK:STEP:KIND`` injects a fault on one rank at one step (first attempt
    only, so a run restarted by ``torchrun --max-restarts`` finishes). KIND: raise | nan | inf (in the loss)
    | grad_nan (in one gradient, after backward) | kill (SIGKILL) | term (SIGTERM: the step finishes, is
    saved, and the run stops) | int (SIGINT, as Ctrl-C sends it: to the whole process group, data-loader
    workers included, when this process leads its group; else to this process alone)."""
    spec = os.environ.get("SIMLAB_FAULT")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return None
    r, s, kind = spec.split(":")
    if int(r) != rank or int(s) != step:
        return None
    if kind not in _FAULT_KINDS:
        raise ValueError(f"SIMLAB_FAULT kind must be one of {_FAULT_KINDS}, got {kind!r}")
    if kind == "raise":
        raise RuntimeError(f"injected fault on rank {rank} at step {step}")
    if kind in ("kill", "term"):
        os.kill(os.getpid(), signal.SIGKILL if kind == "kill" else signal.SIGTERM)
    if kind == "int":
        # a terminal's Ctrl-C reaches the foreground process group; a test that starts the run in a
        # session of its own gets the same, and never signals its own (pytest's) group
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGINT)
    return kind


class _StopOnSigterm:
    """Turns SIGTERM and a first SIGINT (Ctrl-C) into a request honoured at the next step boundary
    (main thread only); a second SIGINT stops at once with KeyboardInterrupt.

    The handler itself only sets a flag: no collectives, no I/O, so it is safe
    wherever the signal lands. The loop then saves the state of the last
    *finished* (hence finite) step on rank 0 and stops: exit code 143 for
    SIGTERM, 130 for SIGINT (the shell's codes for them). A second Ctrl-C is for
    a user who does not want to wait for that step; a checkpoint write it cuts
    short leaves only a temporary file, which the next save replaces. A SIGINT
    that was ignored when the run started (a background job) stays ignored.
    """

    def __init__(self):
        self.requested = False
        self.signum: int = signal.SIGTERM
        self._previous: dict[int, object] = {}
        self._saved: Optional[tuple[int, bool]] = None  # (step, whether checkpoint_due had it saved)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                if signum == signal.SIGINT and signal.getsignal(signum) is signal.SIG_IGN:
                    continue
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:  # the second Ctrl-C: stop now, save nothing more
            self._restore()
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum

    def checkpoint_due(self, done: int, total: int, every: int) -> bool:
        """Save after this step: every ``every`` steps, at the end, and when a stop was asked for."""
        due = done % every == 0 or done == total or self.requested
        self._saved = (done, due)
        return due

    def stop_if_requested(self, done: int, log: Callable[[str], None]) -> None:
        """After the save: stop with exit code 143 (SIGTERM) or 130 (SIGINT) if one arrived.

        On the rank that saves, only once this step was saved: a signal that lands between the save
        decision and here, when none was due, stops after the next step (which is then saved), so
        "saved step N" is always true. Ranks that do not save stop as soon as it arrived."""
        if not self.requested:
            return
        if self._saved is not None and self._saved[0] == done and not self._saved[1]:
            return
        if self.signum == signal.SIGINT:
            log(f"interrupted: saved step {done}; run the same command to resume")
            raise Interrupted(done)
        log(f"SIGTERM: saved step {done} and stopped; run the same command to resume")
        raise Terminated(done)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            # None: a handler installed outside Python, which cannot be put back; the default is closest
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous = {}

    def __exit__(self, *exc):
        self._restore()
        return False


def pretrain(cfg: Config, run_dir, log: Callable[[str], None] = print,
             on_metrics: Optional[Callable[[dict], None]] = None) -> Path:
    """Train into ``run_dir`` (resuming from its newest valid checkpoint); returns the last checkpoint.

    ``on_metrics`` is called on rank 0 with every record written to ``metrics.jsonl`` (live curves).

    Under ``torchrun`` every rank calls this: the group is joined here, rank 0
    alone writes the run folder, and all ranks resume from the checkpoint rank 0 picked.

    A run that fails after it started (a non-finite loss, a crash) writes ``FAILED`` with the reason,
    removed once a rerun finishes. A finished run (``COMPLETE``) rerun with the same definition does nothing; with another one it is
    refused, the differences shown (:func:`simlab.config.check_finished_run`). A run that fails before
    it records anything (a missing dataset, a bad image under ``on_bad_image=fail``) leaves nothing
    behind in ``run_dir`` (:class:`simlab.checkpoint.CleanFailedStart`).
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


def _finished_definition(run_dir: Path) -> Optional[dict]:
    """The run-defining fields of a finished run: its config.json, else its newest checkpoint's config."""
    path = run_dir / "config.json"
    if path.exists():
        return Config.from_dict(json.loads(path.read_text())).defining_dict()
    found = newest_valid(run_dir, lambda *_: None)
    return config_of(found[1]).defining_dict() if found else None


def _pretrain(cfg: Config, run_dir: Path, log: Callable[[str], None],
              on_metrics: Optional[Callable[[dict], None]]) -> Path:
    cfg.validate()
    t = cfg.train
    device = resolve_device(t.device)
    if distributed.launched_by_torchrun() and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    dinfo = distributed.init_from_env(device, t.dist_timeout)
    main = dinfo.main
    if not main:
        log = lambda *_: None  # noqa: E731 - rank 0 speaks for the run
    if t.batch_size % (dinfo.world * t.accum_steps):
        raise ConfigError(f"batch_size: {t.batch_size} does not split into {dinfo.world} rank(s) x "
                          f"{t.accum_steps} micro-batch(es) (accum_steps)")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    if (run_dir / "COMPLETE").exists():
        finished = _finished_definition(run_dir)
        if finished is not None:
            check_finished_run(finished, cfg.defining_dict(), run_dir)
        log(f"{run_dir} is complete; nothing to do")
        found = newest_valid(run_dir, log)
        return found[0] if found else run_dir
    if main:
        from .tracking import check_available
        check_available(t.logger)  # a missing tracker package is refused before the data is built
    dataset = build_pretrain_dataset(cfg)
    spe, total = run_length(cfg, len(dataset))
    schedule = Schedule.build(cfg, spe, total)

    torch.manual_seed(cfg.seed)  # the initial weights are a function of the seed (the same on every rank)
    model = build_model(cfg, dataset.in_chans).to(device)
    amp = autocast_dtype(t.precision, device)
    optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.peak_lr(), betas=(t.beta1, t.beta2),
                                  **({"fused": True} if device.type == "cuda" else {}))
    scaler = torch.amp.GradScaler(device.type, growth_interval=2000) if amp == torch.float16 else None

    start = 0
    found = newest_valid(run_dir, log) if main else None
    resume_path = distributed.broadcast_object(str(found[0]) if found else None)
    if resume_path is not None:
        path = Path(resume_path)
        ckpt = found[1] if found else load_checkpoint(path)
        _check_resume(cfg, ckpt, path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        start = int(ckpt["step"])
        log(f"resuming {run_dir} from step {start} ({path.name})")
        del ckpt
    elif main:
        (run_dir / "config.json").write_text(cfg.to_json() + "\n")
    metrics = MetricsLog(run_dir, start if resume_path is not None else None, t.logger, cfg) if main else None
    net = model
    if distributed.active():
        # buffers (BatchNorm running stats, EMA F) are computed from global statistics already, so
        # DDP need not broadcast them (newer torch renames the flag and warns; the old name works on 2.11+)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    step_fn = torch.compile(net) if t.compile else net

    # what the encoder expects, recorded in every checkpoint: the views' normalisation (configured or the dataset's)
    preprocess = preprocess_of(cfg, dataset.in_chans, dataset.mean if cfg.aug.mean is None else cfg.aug.mean,
                               dataset.std if cfg.aug.std is None else cfg.aug.std)

    def save(step: int) -> Path:
        ckpt = {"format": FORMAT, "schema": SCHEMA, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "step": step, "epoch": step / spe,
                "rng": rng_state(), "config": cfg.to_json(), "code_version": code_version(),
                "preprocess": preprocess}
        return save_step(run_dir, step, ckpt, t.keep_checkpoints)

    on_device = augment_on_device(cfg, device)
    loader = pretrain_loader(dataset, cfg, total, start, pin_memory=device.type == "cuda",
                             rank=dinfo.rank, world=dinfo.world, augment=not on_device)
    knn_steps = max(1, round(t.knn_every * spe)) if t.knn_every > 0 else 0
    monitor = KnnMonitor(cfg) if knn_steps and main else None
    if monitor is not None:
        model.encoder.preprocess = preprocess
    bar = None
    if t.progress and main:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=start, desc="pretrain", unit="step", dynamic_ncols=True)
    model.train()
    last_path, window_start, window_images = None, time.perf_counter(), 0
    params = [p for g in optimizer.param_groups for p in g["params"]]
    bad_images = BadImageLog(run_dir, log)
    try:
        with _StopOnSigterm() as sigterm:
            for batch in loader:
                step = batch["step"]
                fault = _fault_hook(step, dinfo.rank)
                bad_images.add(batch.pop("skipped", ()))
                if on_device:  # the loader sent uint8 images and boxes: make the views here
                    batch = device_views(batch, loader.dataset.transform, device)
                batch = move_batch(batch, device)
                for group in optimizer.param_groups:
                    group["lr"] = float(schedule.lr[step])
                terms = torch.zeros(3, device=device)
                micro_batches = split_batch(batch, t.accum_steps)
                for i, micro in enumerate(micro_batches):
                    last = i == len(micro_batches) - 1
                    # DDP all-reduces gradients on the last micro-batch only; the target's EMA
                    # update happens once per optimizer step, before the first target pass
                    sync = contextlib.nullcontext() if last or net is model else net.no_sync()
                    with sync:
                        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                            loss, out = step_fn(micro, momentum=float(schedule.momentum[step]) if i == 0 else None)
                        if fault in ("nan", "inf"):
                            loss = loss * float(fault)
                        loss = loss / len(micro_batches)
                        (scaler.scale(loss) if scaler is not None else loss).backward()
                    terms += torch.stack([loss.detach().float() * len(micro_batches), out["pos"].float(),
                                          out["neg"].float()]) / len(micro_batches)
                if fault == "grad_nan":
                    next(p for p in params if p.grad is not None).grad.view(-1)[0] = float("nan")
                if scaler is not None:
                    scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, t.clip_grad if t.clip_grad else float("inf"))
                # one collective and one host read: every rank sees the same (global) values and decides alike
                values = torch.cat([distributed.mean_across_ranks(terms), grad_norm.float().reshape(1)]).tolist()
                if not all(math.isfinite(v) for v in values[:3]) or (scaler is None and not math.isfinite(values[3])):
                    names = [n for n, v in zip(("loss", "pos", "neg", "grad_norm"), values) if not math.isfinite(v)]
                    optimizer.zero_grad(set_to_none=True)
                    raise NonFiniteError(f"step {step}: non-finite {', '.join(names)} "
                                         f"(loss={values[0]}, pos={values[1]}, neg={values[2]}, "
                                         f"grad_norm={values[3]}); the optimizer step was not applied")
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                done = step + 1
                window_images += batch["view1"].shape[0] * dinfo.world
                knn_due = monitor is not None and (done % knn_steps == 0 or done == total)
                if main and (done % t.log_every == 0 or done == total or knn_due):
                    now = time.perf_counter()
                    ips = window_images / max(now - window_start, 1e-9)
                    record = {"step": done, "epoch": done / spe, "loss": values[0], "pos": values[1],
                              "neg": values[2], "lr": float(schedule.lr[step]),
                              "momentum": float(schedule.momentum[step]), "grad_norm": values[3],
                              "images_per_s": ips, **collapse_monitors(out),
                              **encoder_monitors(model.encoder, micro["view1"])}
                    if knn_due:
                        record["knn"] = monitor(model.encoder)  # the encoder goes back to train mode
                    metrics.write(record)
                    if on_metrics is not None:
                        on_metrics(record)
                    window_start, window_images = time.perf_counter(), 0
                    if bar is not None:
                        knn = {"knn": f"{record['knn']:.3f}"} if "knn" in record else {}
                        bar.set_postfix(loss=f"{values[0]:.4f}", img_s=f"{ips:.0f}", **knn)
                if bar is not None:
                    bar.update(1)
                if main and sigterm.checkpoint_due(done, total, t.checkpoint_every):
                    last_path = save(done)
                sigterm.stop_if_requested(done, log)
    finally:
        if bar is not None:
            bar.close()
        if metrics is not None:
            metrics.close()
    if not main:
        return run_dir
    if last_path is None:  # nothing left to train: the newest checkpoint is the final one
        last_path = newest_valid(run_dir, log)[0]
    (run_dir / "COMPLETE").write_text(f"{last_path.name}\n")
    log(f"finished: {last_path}")
    return last_path
