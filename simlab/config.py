"""Dataclass configs and their validation.

A run is described by one :class:`Config` made of sections (data, augmentation,
...). Every leaf field name is unique across sections, so an override may name a
field plainly (``crop_scale=0.2,1``) or with its section (``aug.crop_scale=...``).
Values are parsed by the field's declared type (:mod:`simlab.overrides`) and checked
by the section's ``validate``; every error names the field (nanoGPT's flat config, made typed).
The data and augmentation sections (:mod:`simlab.data_config`), the override parser and the
run-definition checks live in their own modules; this one holds the model and training sections
and the whole :class:`Config`, and stays the public place for every config name.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional

from .data_config import DATASET_NAMES, IMAGENET_MEAN, IMAGENET_STD, AugConfig, DataConfig
from .definition import check_finished_run, check_same_definition
from .overrides import _sections, all_field_names, apply_overrides, set_field
from .validation import ConfigError, _check

# simlab.config is the public place for every config name, those defined in the modules above included
# (tests, notebooks, presets and users import them from here)
__all__ = ["Config", "DataConfig", "AugConfig", "ModelConfig", "TrainConfig", "ConfigError",
           "DATASET_NAMES", "IMAGENET_MEAN", "IMAGENET_STD", "all_field_names", "apply_overrides", "set_field",
           "check_same_definition", "check_finished_run"]


@dataclass
class ModelConfig:
    """SiM's network (SIM_SPEC.md section 1) and its ablation switches.

    Defaults are the paper's ViT-B/16 (presets scale them down).
    """

    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    # frozen random patch embedding (SiM, after MoCo v3); true trains it
    train_patch_embed: bool = False
    decoder_dim: int = 768               # projector and decoder width (the official config overrides 512 -> 768)
    decoder_heads: int = 16
    projector_depth: int = 2             # BatchNorm blocks after the projector's Linear
    predictor_depth: int = 4             # BatchNorm self-attention blocks of the decoder
    decoder_norm: str = "bn"             # bn (SiM's PermuteBN) | ln (ablation: LayerNorm blocks, no batch statistics)
    # ablation: 'relative' queries carry view 2's position in view 1's frame (SiM);
    # 'absolute' queries carry view 2's own grid, as if both views were the same crop
    query_pos: str = "relative"
    scale_terms: bool = True             # ablation: false zeroes the log scale ratios of the query embedding
    # deviation (not in SiM, where it is 1): multiplies the decoder's position codes (the visible tokens'
    # sin-cos and the queries' embedding), which small projected tokens can otherwise drown
    decoder_pos_gain: float = 1.0
    mask_kind: str = "block"             # block (SiM, BEiT-style) | random (ablation)
    num_masked: Optional[int] = None     # masked patches of view 1 (None: round(0.602 grid^2), 118 of 196)
    neg_weight: float = 0.02             # lambda of the loss's negative term
    # ablation: 0 uses the batch's target correlation F (SiM); rho > 0 keeps an EMA
    # F <- rho F + (1 - rho) F_batch as original UniGrad does (rho = 0.99 there)
    f_momentum: float = 0.0
    mae_mask_ratio: float = 0.75         # objective=mae: fraction of patches masked (uniformly at random)
    # objective=id: 'unigrad' (SiM's own loss on one pooled token per image, one direction) |
    # 'infonce' (MoCo v3's: symmetric InfoNCE against the batch's momentum keys, at temperature
    # id_temperature, scaled by 2 * temperature)
    id_loss: str = "unigrad"
    id_temperature: float = 0.2
    # deviation (not in SiM): subtract each image's mean target token before the target LayerNorm,
    # so the targets keep only what varies *within* a view (see README "Presets" for why a tiny
    # CPU run may need it)
    target_centering: bool = False
    # deviation (not in SiM): subtract the batch's mean target token at each view-2 grid position
    # before the target LayerNorm, so no content-blind rule can predict the targets (on shapes at 32 px
    # two-thirds of their variance is grid position: README "Every number beside its floor")
    target_position_centering: bool = False

    def validate(self) -> None:
        for name in ("patch_size", "embed_dim", "depth", "num_heads", "decoder_dim", "decoder_heads"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("projector_depth", "predictor_depth"):
            _check(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        _check(self.embed_dim % self.num_heads == 0, "num_heads",
               f"must divide embed_dim={self.embed_dim}, got {self.num_heads}")
        _check(self.decoder_dim % self.decoder_heads == 0, "decoder_heads",
               f"must divide decoder_dim={self.decoder_dim}, got {self.decoder_heads}")
        _check(self.embed_dim % 4 == 0, "embed_dim", f"must be a multiple of 4 (2-D sin-cos), got {self.embed_dim}")
        _check(self.decoder_dim % 4 == 0, "decoder_dim", f"must be a multiple of 4, got {self.decoder_dim}")
        _check(self.mlp_ratio > 0, "mlp_ratio", f"must be positive, got {self.mlp_ratio}")
        _check(0 <= self.drop_path < 1, "drop_path", f"must be in [0, 1), got {self.drop_path}")
        _check(self.decoder_norm in ("bn", "ln"), "decoder_norm", f"must be bn or ln, got {self.decoder_norm!r}")
        _check(self.query_pos in ("relative", "absolute"), "query_pos",
               f"must be relative or absolute, got {self.query_pos!r}")
        _check(self.decoder_pos_gain > 0, "decoder_pos_gain", f"must be positive, got {self.decoder_pos_gain}")
        _check(self.mask_kind in ("block", "random"), "mask_kind", f"must be block or random, got {self.mask_kind!r}")
        _check(self.neg_weight >= 0, "neg_weight", f"must be >= 0, got {self.neg_weight}")
        _check(0 <= self.f_momentum < 1, "f_momentum", f"must be in [0, 1), got {self.f_momentum}")
        _check(0 < self.mae_mask_ratio < 1, "mae_mask_ratio", f"must be in (0, 1), got {self.mae_mask_ratio}")
        _check(self.id_loss in ("unigrad", "infonce"), "id_loss",
               f"must be unigrad or infonce, got {self.id_loss!r}")
        _check(self.id_temperature > 0, "id_temperature", f"must be positive, got {self.id_temperature}")


@dataclass
class TrainConfig:
    """Optimisation, schedules, precision and bookkeeping (SIM_SPEC.md section 5)."""

    objective: str = "sim"               # sim | mae | id (baselines: simlab.baselines)
    batch_size: int = 4096               # global batch
    epochs: float = 1600
    steps: Optional[int] = None          # total optimizer steps; overrides epochs when set
    blr: float = 6.25e-5                 # base lr; lr = blr * batch_size / 256 (MAE's rule) unless lr is set
    lr: Optional[float] = None           # absolute peak lr (small presets: the scaling rule is too small for short runs)
    min_lr: float = 0.0
    warmup_epochs: Optional[float] = 40  # linear warmup length in epochs; None uses warmup_frac
    warmup_frac: float = 0.025           # warmup as a fraction of all steps (when warmup_epochs is None)
    weight_decay: float = 0.05           # not on biases and 1-D params; cls and mask tokens are decayed (timm rule)
    beta1: float = 0.9
    beta2: float = 0.95
    clip_grad: Optional[float] = 1.0
    ema_start: float = 0.995             # target momentum, cosine to ema_end over training
    ema_end: float = 1.0
    precision: str = "auto"              # auto (bf16 on GPUs with it, else fp16 + GradScaler; fp32 on CPU) | fp32 | bf16 | fp16
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    compile: bool = False                # torch.compile the model (pays off on GPUs, not on CPUs)
    log_every: int = 10                  # steps between metric lines
    checkpoint_every: int = 1000         # steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2            # newest checkpoints kept in the run folder
    progress: bool = True                # tqdm progress bar
    # experiment tracker mirroring metrics.jsonl (simlab.tracking): tensorboard | wandb | mlflow | none
    logger: str = "tensorboard"
    # online k-NN monitor (k = 20, T = 0.07) every knn_every epochs (0: off), on rank 0: a bank of
    # knn_train_size labelled train images and knn_test_size test images of knn_dataset (default:
    # the pretraining dataset; name a labelled one when pretraining on unlabeled images)
    knn_every: float = 0.0
    knn_dataset: Optional[str] = None
    knn_train_size: int = 5000
    knn_test_size: int = 1000
    # micro-batches per optimizer step on each rank: batch_size = ranks x accum_steps x micro-batch.
    # BatchNorm and F statistics then cover one micro-batch (of all ranks), not the global batch
    accum_steps: int = 1
    dist_timeout: float = 60.0           # seconds a collective may wait on a peer before failing

    def validate(self) -> None:
        _check(self.knn_every >= 0, "knn_every", f"must be >= 0, got {self.knn_every}")
        for name in ("knn_train_size", "knn_test_size"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _check(self.accum_steps >= 1, "accum_steps", f"must be >= 1, got {self.accum_steps}")
        _check(self.batch_size % self.accum_steps == 0, "accum_steps",
               f"must divide batch_size={self.batch_size}, got {self.accum_steps}")
        _check(self.dist_timeout > 0, "dist_timeout", f"must be positive, got {self.dist_timeout}")
        _check(self.objective in ("sim", "mae", "id"), "objective",
               f"must be sim, mae or id, got {self.objective!r}")
        _check(self.batch_size >= 2, "batch_size", f"must be >= 2 (BatchNorm needs a batch), got {self.batch_size}")
        _check(self.epochs > 0, "epochs", f"must be positive, got {self.epochs}")
        _check(self.steps is None or self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        _check(self.blr > 0, "blr", f"must be positive, got {self.blr}")
        _check(self.lr is None or self.lr > 0, "lr", f"must be positive, got {self.lr}")
        _check(self.min_lr >= 0, "min_lr", f"must be >= 0, got {self.min_lr}")
        _check(self.warmup_epochs is None or self.warmup_epochs >= 0, "warmup_epochs",
               f"must be >= 0, got {self.warmup_epochs}")
        _check(0 <= self.warmup_frac < 1, "warmup_frac", f"must be in [0, 1), got {self.warmup_frac}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            _check(0 <= getattr(self, name) < 1, name, f"must be in [0, 1), got {getattr(self, name)}")
        _check(self.clip_grad is None or self.clip_grad > 0, "clip_grad", f"must be positive, got {self.clip_grad}")
        _check(0 <= self.ema_start <= self.ema_end <= 1, "ema_start",
               f"need 0 <= ema_start <= ema_end <= 1, got {self.ema_start}, {self.ema_end}")
        _check(self.logger in ("tensorboard", "wandb", "mlflow", "none"), "logger",
               f"must be tensorboard, wandb, mlflow or none, got {self.logger!r}")
        _check(self.precision in ("auto", "fp32", "bf16", "fp16"), "precision",
               f"must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "device",
               f"must be auto, cpu or cuda[:N], got {self.device!r}")
        for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")

    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else self.blr * self.batch_size / 256


@dataclass
class Config:
    """Everything that describes a run."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # Fields that only change how a run executes; all others define the run and
    # must match when it resumes (DESIGN.md "Checkpoints").
    EXECUTION_FIELDS = ("data_root", "num_workers", "download", "on_bad_image", "augment_on", "device", "compile", "log_every",
                        "checkpoint_every", "keep_checkpoints", "progress", "logger", "accum_steps", "dist_timeout",
                        "knn_every", "knn_dataset", "knn_train_size", "knn_test_size")

    def validate(self) -> "Config":
        for section in _sections(self):
            getattr(self, section).validate()
        m, d = self.model, self.data
        _check(d.image_size % m.patch_size == 0, "patch_size",
               f"must divide image_size={d.image_size}, got {m.patch_size}")
        grid = d.image_size // m.patch_size
        _check(grid >= 2, "patch_size", f"leaves a {grid}x{grid} grid; need at least 2x2")
        if m.num_masked is not None:
            _check(0 <= m.num_masked < grid * grid, "num_masked",
                   f"must be in [0, {grid * grid - 1}] for a {grid}x{grid} grid, got {m.num_masked}")
        return self

    @property
    def grid(self) -> int:
        return self.data.image_size // self.model.patch_size

    def defining_dict(self) -> dict:
        """The fields that define the run, flattened to ``name: value``."""
        flat = {}
        for key, value in self.to_dict().items():
            items = value.items() if isinstance(value, dict) else [(key, value)]
            for k, v in items:
                if k not in self.EXECUTION_FIELDS:
                    flat[k] = list(v) if isinstance(v, tuple) else v
        return flat

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        cfg = cls()
        for key, value in d.items():
            if dataclasses.is_dataclass(getattr(cfg, key, None)):
                for k, v in value.items():
                    set_field(cfg, f"{key}.{k}", v)
            else:
                set_field(cfg, key, value)
        return cfg
