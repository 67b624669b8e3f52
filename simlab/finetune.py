"""End-to-end fine-tuning of a pretrained encoder for classification (SIM_SPEC.md section 5): the run.

The paper's protocol (MAE's ``main_finetune.py``) is stated in :mod:`simlab.finetune_recipe` (the
config and its presets), :mod:`simlab.classifier` (the model, layer-wise lr decay, evaluation) and
:mod:`simlab.finetune_data` (timm's transforms, keyed draws); this module runs it and stays the
public place for all their names. Evaluation: resize to ``size / crop_pct`` and centre-crop, top-1
and top-5.

A run folder follows pretraining's rules: ``config.json``, ``metrics.jsonl``, atomic checkpoints
with a sha256, resume from the newest valid one (a run defined differently is refused), SIGTERM
saves and stops, ``results.json`` and ``COMPLETE`` at the end. Each image's augmentation is keyed
by ``(seed, step, index)`` and each step's mixup and drop-path draws by ``(seed, step, rank)``, so a
resumed run sees what an uninterrupted one saw, whatever the number of workers.

Under ``torchrun`` it runs DDP with pretraining's rules (``simlab.train.pretrain``): each rank takes
its contiguous share of every global batch, rank 0 alone writes the run folder and picks the
checkpoint every rank resumes from, and evaluation shards the validation set by stride and sums
the counts, so every image is scored exactly once. Without mixup or drop path (which draw per
rank, as in MAE's DDP fine-tuning), K ranks compute what one process computes, up to float
rounding. ``accum_steps`` splits each rank's share into micro-batches (one optimizer step, DDP's
gradient all-reduce on the last only). Under fp16 autocast a GradScaler scales the loss (the
head starts at std 2e-5, where fp16 gradients underflow); its state is checkpointed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn

from .checkpoint_io import FORMAT, SCHEMA, load_checkpoint, newest_valid, save_step, sha256_of
from .checkpoint_state import code_version
from .classifier import Classifier, build_classifier, evaluate, lr_at, param_groups
from .config import ConfigError, check_finished_run, check_same_definition
from .finetune_data import KeyedBatches, _first, seed_globals, seed_step, transforms
from .finetune_recipe import FINETUNE_PRESETS, FinetuneConfig, finetune_config
from .pretrained import load_encoder, resolve_checkpoint
from .run_start import CleanFailedStart, check_run_folder

# the public place for every fine-tuning name, those defined in the modules above included; the loop
# reads lr_at from here, so a test that replaces simlab.finetune.lr_at reaches it
__all__ = ["FinetuneConfig", "FINETUNE_PRESETS", "finetune_config", "Classifier", "build_classifier", "param_groups",
           "lr_at", "evaluate", "transforms", "seed_globals", "seed_step", "KeyedBatches", "finetune"]

def finetune(checkpoint, cfg: FinetuneConfig, run_dir, log: Callable[[str], None] = print) -> dict:
    """Fine-tune into ``run_dir`` (resuming from its newest valid checkpoint); returns the results.

    Under ``torchrun`` every rank calls this and gets the same results: the group is joined here
    (and left again if this call joined it), rank 0 alone writes the run folder.
    """
    from . import distributed
    from .devices import resolve_device

    cfg.validate()
    device = resolve_device(cfg.device)
    if distributed.launched_by_torchrun() and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    joined = not distributed.active()
    dinfo = distributed.init_from_env(device, cfg.dist_timeout)
    run_dir = check_run_folder(run_dir)
    try:
        # pretraining's rules: a start that fails before it records anything leaves nothing behind
        with CleanFailedStart(run_dir, active=dinfo.main):
            return _finetune(checkpoint, cfg, run_dir, device, dinfo, log)
    finally:
        if joined:  # the CLI leaves the group to whoever joined it
            distributed.shutdown()


def _finetune(checkpoint, cfg: FinetuneConfig, run_dir: Path, device: torch.device, dinfo,
              log: Callable[[str], None]) -> dict:
    from . import distributed
    from .data import build_dataset
    from .pipeline import StepBatches, ignore_sigint
    from .devices import autocast_dtype
    from .runfolder import MetricsLog
    from .signals import StopOnSignal
    from .train import NonFiniteError

    main = dinfo.main
    if not main:
        log = lambda *_: None  # noqa: E731 - rank 0 speaks for the run
    if cfg.batch_size % (dinfo.world * cfg.accum_steps):
        raise ConfigError(f"batch_size: {cfg.batch_size} does not split into {dinfo.world} rank(s) x "
                          f"{cfg.accum_steps} micro-batch(es) (accum_steps)")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    if (run_dir / "COMPLETE").exists():
        if (run_dir / "config.json").exists():  # the same definition does nothing; another is refused
            saved = json.loads((run_dir / "config.json").read_text())
            check_finished_run({k: v for k, v in saved.items() if k not in cfg.EXECUTION_FIELDS},
                               cfg.defining_dict(), run_dir)
        log(f"{run_dir} is complete; nothing to do")
        return json.loads((run_dir / "results.json").read_text())
    source = resolve_checkpoint(checkpoint)
    source_sha = sha256_of(source)
    pretrained = load_encoder(source)
    enc_cfg = pretrained.config
    dataset_name = cfg.dataset or enc_cfg.data.dataset
    root = cfg.data_root if cfg.data_root is not None else (enc_cfg.data.data_root if cfg.dataset is None else None)

    def split(name: str, n: Optional[int]):
        pool = {"size": n} if dataset_name == "shapes" and n else {}
        return _first(build_dataset(dataset_name, name, root, image_size=enc_cfg.data.image_size,
                                    seed=enc_cfg.seed, **pool), n)
    train_ds, val_ds = split("train", cfg.train_size), split("test", cfg.val_size)
    num_classes = train_ds.dataset.num_classes
    if not num_classes:
        raise ConfigError(f"dataset: {dataset_name!r} has no class labels to fine-tune on")

    amp = autocast_dtype(cfg.precision, device)
    model = build_classifier(pretrained, cfg, num_classes).to(device)  # seeded: the same weights on every rank
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.layer_decay), lr=cfg.peak_lr(),
                                  **({"fused": True} if device.type == "cuda" else {}))
    # fp16 needs loss scaling: the head starts at std 2e-5, and its gradients (and those it passes
    # back) underflow fp16's range without it. bf16 has fp32's range and needs none.
    scaler = torch.amp.GradScaler(device.type, growth_interval=2000) if amp == torch.float16 else None
    spe = len(train_ds) // cfg.batch_size
    if spe < 1:
        raise ConfigError(f"batch_size: {cfg.batch_size} exceeds the {len(train_ds)} training images")
    total = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * spe))

    start = 0
    defining = {**cfg.defining_dict(), "checkpoint_sha256": source_sha}  # the run is also its source
    found = newest_valid(run_dir, log) if main else None
    # rank 0 picks the checkpoint (a half-written newest one could look different to another rank)
    resume_path = distributed.broadcast_object(str(found[0]) if found else None)
    if resume_path is not None:
        path = Path(resume_path)
        ckpt = found[1] if found else load_checkpoint(path)
        old = {k: v for k, v in json.loads(ckpt["finetune_config"]).items() if k not in cfg.EXECUTION_FIELDS}
        check_same_definition({**old, "checkpoint_sha256": ckpt["source"]["sha256"]}, defining, path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start = int(ckpt["step"])
        log(f"resuming {run_dir} from step {start} ({path.name})")
        del ckpt
    elif main:
        (run_dir / "config.json").write_text(cfg.to_json() + "\n")
    metrics = MetricsLog(run_dir, start if resume_path is not None else None) if main else None
    net = distributed.wrap_ddp(model, device)  # its only buffer, the sin-cos table, is the same everywhere

    train_tf, eval_tf = transforms(cfg, model.preprocess)
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    mixup = (Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                   num_classes=num_classes) if cfg.mixup > 0 or cfg.cutmix > 0 else None)
    criterion = (SoftTargetCrossEntropy() if mixup is not None else
                 LabelSmoothingCrossEntropy(cfg.label_smoothing) if cfg.label_smoothing > 0 else nn.CrossEntropyLoss())
    sampler = StepBatches(len(train_ds), cfg.batch_size, cfg.seed, total, start, rank=dinfo.rank, world=dinfo.world)
    loader = torch.utils.data.DataLoader(KeyedBatches(train_ds, train_tf, cfg.seed), batch_size=None, sampler=sampler,
                                         num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                                         worker_init_fn=ignore_sigint if cfg.num_workers else None)

    def save(step: int) -> Path:
        ckpt = {"format": FORMAT, "schema": SCHEMA, "kind": "finetune", "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
                "step": step, "epoch": step / spe, "rng": None,
                "config": enc_cfg.to_json(), "finetune_config": cfg.to_json(), "code_version": code_version(),
                "preprocess": model.preprocess, "num_classes": num_classes,
                "source": {"checkpoint": str(source), "sha256": source_sha}}
        return save_step(run_dir, step, ckpt, cfg.keep_checkpoints)

    bar = None
    if cfg.progress and main:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=start, desc="finetune", unit="step", dynamic_ncols=True)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    parts = cfg.accum_steps
    model.train()
    began = time.perf_counter()
    try:
        with StopOnSignal() as sigterm:
            for images, labels, step in loader:
                images = images.to(device, non_blocking=True)  # (B_rank, C, S, S)
                labels = labels.to(device, non_blocking=True)  # (B_rank,)
                seed_step(cfg.seed, step, dinfo.rank)  # this process's draws: mixup's here, drop path's below
                if mixup is not None:  # mixes within this rank's share, as timm's Mixup does under DDP
                    images, targets = mixup(images, labels)
                else:
                    targets = labels
                lr = lr_at(cfg, step, spe, total)
                for g in optimizer.param_groups:
                    g["lr"] = lr * g["lr_scale"]
                loss_sum = torch.zeros((), device=device)
                for i, (x, y) in enumerate(zip(images.chunk(parts), targets.chunk(parts))):
                    # DDP all-reduces (averages over ranks) on the last micro-batch only; each
                    # micro-batch's mean loss / parts sums to the mean over the rank's share
                    sync = contextlib.nullcontext() if i == parts - 1 or net is model else net.no_sync()
                    with sync:
                        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                            logits = net(x)
                        loss = criterion(logits.float(), y) / parts
                        (scaler.scale(loss) if scaler is not None else loss).backward()
                    loss_sum += loss.detach()
                if scaler is not None:
                    scaler.unscale_(optimizer)  # clip (and report) the true gradients, not the scaled ones
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad or float("inf"))
                # one collective and one host read: every rank sees the global loss and decides alike
                values = torch.cat([distributed.mean_across_ranks(loss_sum.float().reshape(1)),
                                    norm.float().reshape(1)]).tolist()
                # under a GradScaler an inf/NaN gradient is an overflow of the scale: the scaler skips
                # the step and lowers the scale; anywhere else it is a fault
                if not math.isfinite(values[0]) or (scaler is None and not math.isfinite(values[1])):
                    optimizer.zero_grad(set_to_none=True)
                    raise NonFiniteError(f"step {step}: non-finite loss or gradient norm ({values}); "
                                         f"the optimizer step was not applied")
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                done = step + 1
                if main and (done % cfg.log_every == 0 or done == total):
                    record = {"step": done, "epoch": done / spe, "loss": values[0], "lr": lr, "grad_norm": values[1]}
                    if scaler is not None:
                        record["loss_scale"] = scaler.get_scale()
                    metrics.write(record)
                    if bar is not None:
                        bar.set_postfix(loss=f"{values[0]:.4f}")
                if bar is not None:
                    bar.update(1)
                if main and sigterm.checkpoint_due(done, total, cfg.checkpoint_every):
                    save(done)
                sigterm.stop_if_requested(done, log)
    finally:
        if bar is not None:
            bar.close()
        if metrics is not None:
            metrics.close()
    scores = evaluate(model, val_ds, eval_tf, device, amp=amp, rank=dinfo.rank, world=dinfo.world)
    results = {"dataset": dataset_name, "train_size": len(train_ds), "val_size": len(val_ds), "steps": total,
               "encoder": "random-init" if cfg.random_init is not None else "pretrained",
               "checkpoint": str(source), "sha256": source_sha, "ranks": dinfo.world,
               **scores, "seconds_since_start": time.perf_counter() - began}
    if main:
        (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (run_dir / "COMPLETE").write_text("results.json\n")
        log(f"finished: top-1 {results['top1']:.4f} on {scores['evaluated']} {dataset_name} validation images")
    distributed.barrier()  # no rank leaves (and tears the group down) before rank 0 has written the results
    return results
