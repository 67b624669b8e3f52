"""End-to-end fine-tuning of a pretrained encoder for classification (SIM_SPEC.md section 5).

The paper's protocol (MAE's ``main_finetune.py``): mean of the patch tokens, a fresh ``fc_norm``
LayerNorm and a Linear head (trunc-normal, std 2e-5); AdamW with layer-wise lr decay 0.65, weight
decay 0.05 (none on biases, norms and the cls token); linear warmup then cosine to ``min_lr``; drop
path 0.1; RandAugment ``rand-m9-mstd0.5-inc1`` and random erasing 0.25 through timm; mixup 0.8 and
cutmix 1.0 through timm's ``Mixup`` with label smoothing 0.1. Presets scale it (``paper``, ``demo``,
``tiny``). Evaluation: resize to ``size / crop_pct`` and centre-crop, top-1 and top-5.

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
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn

from .checkpoint import (FORMAT, SCHEMA, CleanFailedStart, check_run_folder, code_version, newest_valid,
                         resolve_checkpoint, save_step, sha256_of)
from .config import ConfigError, apply_overrides, check_finished_run, check_same_definition
from .validation import _check, _check_prob


@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run is defined by (and a few execution-only fields)."""

    dataset: Optional[str] = None        # labelled dataset (None: the checkpoint's pretraining dataset)
    data_root: Optional[str] = None
    train_size: Optional[int] = None     # first N train images (None: all; shapes: its pool size)
    val_size: Optional[int] = None       # first N validation (test split) images (None: all)
    batch_size: int = 1024
    epochs: float = 100
    steps: Optional[int] = None          # overrides epochs when set
    blr: float = 2.5e-4                  # lr = blr * batch_size / 256 unless lr is set
    lr: Optional[float] = None
    min_lr: float = 1e-6
    warmup_epochs: float = 5
    weight_decay: float = 0.05
    layer_decay: float = 0.65
    drop_path: float = 0.1
    label_smoothing: float = 0.1
    mixup: float = 0.8                   # mixup alpha (0: off)
    cutmix: float = 1.0                  # cutmix alpha (0: off)
    randaug: str = "rand-m9-mstd0.5-inc1"  # timm auto-augment policy ('' : none)
    reprob: float = 0.25                 # random erasing probability
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_pct: float = 0.875              # evaluation: resize to size / crop_pct, centre-crop
    clip_grad: Optional[float] = None
    seed: int = 0
    random_init: Optional[int] = None    # fine-tune a fresh encoder of the checkpoint's architecture (baseline)
    # execution only
    device: str = "auto"
    precision: str = "auto"
    num_workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    progress: bool = True
    # micro-batches per optimizer step on each rank: batch_size = ranks x accum_steps x micro-batch.
    # The classifier has no batch statistics, so this changes memory, not the maths (up to rounding)
    accum_steps: int = 1
    dist_timeout: float = 60.0           # seconds a collective may wait on a peer before failing

    EXECUTION_FIELDS = ("data_root", "device", "precision", "num_workers", "log_every", "checkpoint_every",
                        "keep_checkpoints", "progress", "accum_steps", "dist_timeout")

    def validate(self) -> "FinetuneConfig":
        for name in ("batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "accum_steps"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _check(self.batch_size % self.accum_steps == 0, "accum_steps",
               f"must divide batch_size={self.batch_size}, got {self.accum_steps}")
        _check(self.dist_timeout > 0, "dist_timeout", f"must be positive, got {self.dist_timeout}")
        _check(self.steps is None or self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        _check(self.epochs > 0, "epochs", f"must be positive, got {self.epochs}")
        _check(self.blr > 0, "blr", f"must be positive, got {self.blr}")
        _check(self.lr is None or self.lr > 0, "lr", f"must be positive, got {self.lr}")
        _check(0 <= self.min_lr, "min_lr", f"must be >= 0, got {self.min_lr}")
        _check(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(0 < self.layer_decay <= 1, "layer_decay", f"must be in (0, 1], got {self.layer_decay}")
        _check(0 <= self.drop_path < 1, "drop_path", f"must be in [0, 1), got {self.drop_path}")
        _check(0 <= self.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        _check(self.mixup >= 0 and self.cutmix >= 0, "mixup", "mixup and cutmix alphas must be >= 0")
        _check_prob(self.reprob, "reprob")
        _check(0 < self.crop_pct <= 1, "crop_pct", f"must be in (0, 1], got {self.crop_pct}")
        _check(len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1, "crop_scale",
               f"must be 0 < low <= high <= 1, got {self.crop_scale}")
        _check(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        _check(self.precision in ("auto", "fp32", "bf16", "fp16"), "precision",
               f"must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        return self

    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else self.blr * self.batch_size / 256

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def defining_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
                if k not in self.EXECUTION_FIELDS}


def _paper() -> FinetuneConfig:
    return FinetuneConfig()


def _demo() -> FinetuneConfig:
    """A few CPU minutes on ``shapes``: the paper's recipe with a lighter RandAugment and shorter schedule."""
    return FinetuneConfig(train_size=10_000, val_size=2_000, batch_size=128, steps=300, lr=1e-3, warmup_epochs=0.5,
                          randaug="rand-m5-mstd0.5-inc1", mixup=0.2, cutmix=0.0, reprob=0.1, crop_scale=(0.35, 1.0),
                          drop_path=0.05, log_every=10, checkpoint_every=100)


def _tiny() -> FinetuneConfig:
    """For tests: no mixup, RandAugment or erasing; tens of steps."""
    return FinetuneConfig(train_size=2_000, val_size=500, batch_size=64, steps=80, lr=1e-3, warmup_epochs=0.2,
                          randaug="", mixup=0.0, cutmix=0.0, reprob=0.0, crop_scale=(0.5, 1.0), drop_path=0.0,
                          label_smoothing=0.1, log_every=5, checkpoint_every=20, progress=False)


FINETUNE_PRESETS: dict[str, Callable[[], FinetuneConfig]] = {"paper": _paper, "demo": _demo, "tiny": _tiny}


def finetune_config(preset: str = "paper", overrides=(), **named) -> FinetuneConfig:
    """A preset, then named values that are not None, then ``key=value`` overrides, validated."""
    if preset not in FINETUNE_PRESETS:
        raise ConfigError(f"preset: unknown fine-tuning preset {preset!r}; choose one of {', '.join(FINETUNE_PRESETS)}")
    cfg = FINETUNE_PRESETS[preset]()
    apply_overrides(cfg, {k: v for k, v in named.items() if v is not None})
    if named.get("epochs") is not None and named.get("steps") is None:
        cfg.steps = None
    apply_overrides(cfg, list(overrides))
    return cfg.validate()


# ---------------------------------------------------------------------------- the model
class Classifier(nn.Module):
    """Pretrained encoder, mean of its patch tokens, a fresh ``fc_norm`` and a Linear head."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        dim = encoder.embed_dim
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder.forward_features(x)[:, 1:]  # (B, N, D), cls dropped
        return self.head(self.fc_norm(tokens.mean(1)))


def build_classifier(source, cfg: FinetuneConfig, num_classes: int) -> Classifier:
    """The online encoder of ``source`` (a checkpoint, or an encoder ``load_encoder`` returned) (or, with ``random_init``, a fresh one of its architecture),
    rebuilt with the configured drop path and everything trainable, plus the head. The classifier
    carries the encoder's ``preprocess`` and its pretraining ``config``."""
    from .checkpoint import load_encoder
    from .vit import Encoder
    pre = source if isinstance(source, nn.Module) else load_encoder(source)
    m = pre.config.model
    torch.manual_seed(cfg.random_init if cfg.random_init is not None else cfg.seed)
    encoder = Encoder(pre.preprocess["input_size"], m.patch_size, pre.preprocess["in_chans"], m.embed_dim, m.depth,
                      m.num_heads, m.mlp_ratio, drop_path=cfg.drop_path, train_patch_embed=True)
    if cfg.random_init is None:
        encoder.load_state_dict(pre.state_dict())
    model = Classifier(encoder, num_classes)
    model.preprocess, model.config = dict(pre.preprocess), pre.config
    return model


def param_groups(model: Classifier, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups with layer-wise lr decay (BEiT/MAE): the embedding is layer 0, block i is layer
    i + 1, the head layer depth + 1; lr scale = decay ** (depth + 1 - layer). No weight decay on
    1-D parameters (biases, norms) and the cls token."""
    depth = len(model.encoder.blocks)
    groups: dict = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("encoder.blocks."):
            layer = int(name.split(".")[2]) + 1
        elif name.startswith("encoder."):
            layer = 0
        else:
            layer = depth + 1
        decay = not (p.ndim == 1 or name.endswith(".bias") or name.endswith("cls_token"))
        key = (layer, decay)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": weight_decay if decay else 0.0,
                           "lr_scale": layer_decay ** (depth + 1 - layer), "layer": layer}
        groups[key]["params"].append(p)
    return list(groups.values())


def lr_at(cfg: FinetuneConfig, step: int, steps_per_epoch: int, total: int) -> float:
    from .schedules import warmup_cosine
    return float(warmup_cosine(step, cfg.warmup_epochs * steps_per_epoch, total, cfg.peak_lr(), cfg.min_lr))


# ---------------------------------------------------------------------------- data
def _to_pil(image: torch.Tensor):
    from PIL import Image
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def _zero_bit_posterize() -> None:
    """timm's RandAugment can ask ``PosterizeIncreasing`` for 0 bits (magnitude 10 after its noise);
    Pillow >= 11 refuses that, while the Pillow the policy was tuned with returned a black image.
    Give timm's op table that older behaviour (once)."""
    from PIL import Image
    from timm.data import auto_augment as aa
    original = aa.posterize
    if getattr(original, "zero_bits_ok", False):
        return

    def posterize(img, bits_to_keep, **kwargs):
        if bits_to_keep <= 0:
            return Image.new(img.mode, img.size)
        return original(img, bits_to_keep, **kwargs)
    posterize.zero_bits_ok = True
    aa.posterize = posterize
    for name, fn in list(aa.NAME_TO_OP.items()):
        if fn is original:
            aa.NAME_TO_OP[name] = posterize


def transforms(cfg: FinetuneConfig, preprocess: dict):
    """(train, eval) per-image transforms (timm's, PIL in, normalised tensor out)."""
    from timm.data import create_transform
    _zero_bit_posterize()
    size, mean, std = preprocess["input_size"], tuple(preprocess["mean"]), tuple(preprocess["std"])
    train = create_transform(size, is_training=True, scale=tuple(cfg.crop_scale), auto_augment=cfg.randaug or None,
                             re_prob=cfg.reprob, re_mode="pixel", re_count=1, interpolation="bicubic",
                             mean=mean, std=std)
    evaluate = create_transform(size, is_training=False, crop_pct=cfg.crop_pct, interpolation="bicubic",
                                mean=mean, std=std)
    return train, evaluate


def seed_globals(*key: int, devices: bool = False) -> None:
    """Seed Python's, numpy's and torch's CPU global generators (and, with ``devices``, every
    device's) from a tuple of integers: timm's RandAugment, random erasing, Mixup and drop path draw
    from them, so the draws that follow depend on the key alone, not on what ran before
    (SeedSequence mixes the tuple into one seed). Per image, ``devices`` stays off:
    ``torch.manual_seed`` visits every backend and costs about a millisecond."""
    seed = int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0]) % 2 ** 31
    random.seed(seed)
    np.random.seed(seed)
    if devices:
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


def seed_step(seed: int, step: int, rank: int = 0) -> None:
    """Every global generator keyed by ``(seed, step, rank)``: each step's mixup and drop-path draws
    (drop path draws on the training device)."""
    seed_globals(seed, step, rank, 1, devices=True)


class KeyedBatches(torch.utils.data.Dataset):
    """``(step, epoch, indices)`` -> (images (B, C, S, S), labels (B,), step), each image's augmentation
    keyed by ``(seed, step, index)``: the same image at the same step gets the same draws whichever
    rank, worker or position in a share it lands on (RandomResizedCrop's draws are data dependent,
    so one key per step would tie an image's crop to the images before it)."""

    def __init__(self, dataset, transform, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __getitem__(self, item):
        step, _, indices = item
        images, labels = [], []
        for i in indices.tolist():
            it = self.dataset[i]
            seed_globals(self.seed, step, i, 0)
            images.append(self.transform(_to_pil(it["image"])))
            labels.append(int(it["label"]))
        return torch.stack(images), torch.as_tensor(labels), step

    def __len__(self):
        return 0


def evaluate(model: Classifier, dataset, transform, device: torch.device, batch_size: int = 256,
             amp=None, rank: int = 0, world: int = 1) -> dict:
    """Top-1 and top-5 accuracy (top-5 where there are more than 5 classes) over a labelled dataset,
    and ``evaluated``, the number of images scored.

    With ``world`` > 1 (every rank of a group calls it) rank r scores images r, r + world, ... and
    the counts are summed over the ranks, so each image is counted exactly once, whatever the
    remainder of ``len(dataset) / world``.
    """
    from . import distributed
    model.eval()
    indices = list(range(rank, len(dataset), world))
    counts = torch.zeros(3, dtype=torch.float64, device=device)  # correct top-1, correct top-5, scored
    num_classes = model.head.out_features
    with torch.no_grad():
        for s in range(0, len(indices), batch_size):
            items = [dataset[i] for i in indices[s:s + batch_size]]
            x = torch.stack([transform(_to_pil(it["image"])) for it in items]).to(device)
            y = torch.as_tensor([int(it["label"]) for it in items], device=device)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = model(x).float()  # (B, classes)
            top = logits.topk(min(5, num_classes), dim=1).indices
            counts += torch.stack([(top[:, 0] == y).sum(), (top == y[:, None]).any(1).sum(),
                                   torch.tensor(len(y), device=device)]).double()
    model.train()
    if world > 1:  # the mean over ranks times their number: the sum, exact for counts below 2**53
        counts = distributed.mean_across_ranks(counts) * world
    correct1, correct5, n = (round(v) for v in counts.tolist())
    out = {"top1": correct1 / max(n, 1)}
    if num_classes > 5:
        out["top5"] = correct5 / max(n, 1)
    out["evaluated"] = n
    return out


def _first(dataset, n: Optional[int]):
    """The first ``n`` items of ``dataset`` (all when ``n`` is None)."""
    return torch.utils.data.Subset(dataset, range(len(dataset) if n is None else min(n, len(dataset))))


# ---------------------------------------------------------------------------- the run
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
    from .checkpoint import load_checkpoint, load_encoder
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
