"""The fine-tuned classifier (SIM_SPEC.md section 5, MAE's ``main_finetune.py``): the pretrained
encoder, the mean of its patch tokens, a fresh ``fc_norm`` LayerNorm and a Linear head (trunc-normal,
std 2e-5); its AdamW groups with layer-wise lr decay, the warmup-cosine learning rate, and top-1 /
top-5 evaluation sharded over ranks.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .finetune_data import _to_pil
from .finetune_recipe import FinetuneConfig

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
    from .pretrained import load_encoder
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
