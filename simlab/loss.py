"""SiM's loss (``SiameseIMViT.compute_unigrad_loss``; SIM_SPEC.md section 3), in fp32.

With z the target tokens after an affine-free LayerNorm (so |z|^2 ~ D), p the
raw predictions and F = mean_m z_m z_m^T over every target token of the global
batch (no gradient)::

    loss = (mean_m |p_m - z_m|^2 + lambda * mean_m p_m^T F p_m) / D

The negative term is computed as ``((p @ F) * p).sum(-1)``: the official
``diagonal(p @ F @ p.T)`` builds an (M x M) matrix over all M = batch x tokens
predictions, about 25x the FLOPs and gigabytes of memory for the same number.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist


def target_correlation(target: torch.Tensor) -> torch.Tensor:
    """F = mean over all target tokens of z z^T, averaged over ranks when a group is initialised.

    target: (..., D) -> (D, D) float32, without gradient.
    """
    with torch.no_grad():
        z = target.reshape(-1, target.shape[-1]).float()
        corr = z.T @ z / z.shape[0]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(corr)
            corr /= dist.get_world_size()
    return corr


def sim_loss(pred: torch.Tensor, target: torch.Tensor, neg_weight: float = 0.02,
             correlation: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
    """SiM's dense UniGrad-style loss.

    pred, target: (B, N, D); ``target`` is already the affine-free LayerNorm output.
    ``correlation`` replaces the batch's F (the EMA-F ablation passes its running F).
    Returns the scalar loss and detached stats: ``pos`` and ``neg`` (each divided by D,
    so loss = pos + neg_weight * neg).
    """
    D = pred.shape[-1]
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p = pred.reshape(-1, D).float()
        z = target.reshape(-1, D).float().detach()
        corr = target_correlation(z) if correlation is None else correlation.float()
        pos = (p - z).pow(2).sum(-1).mean()
        neg = ((p @ corr) * p).sum(-1).mean()
        loss = (pos + neg_weight * neg) / D
    return loss, {"pos": pos.detach() / D, "neg": neg.detach() / D}
