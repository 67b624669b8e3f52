"""Baseline objectives under SiM's harness: masked image modeling (MAE) and instance discrimination (ID).

MAE (He et al. 2022, ``models_mae.py``): one view with crop and flip only, a
uniformly random mask (``mae_mask_ratio``, 75 %), the encoder on the visible
patches with a final LayerNorm, a light LayerNorm decoder (``decoder_dim``,
``predictor_depth`` blocks) over all positions, and the mean squared error of
per-patch-normalised pixels on the masked patches only. It uses the same
encoder, data and schedule code as SiM; it trains its patch embedding (MAE
does), which SiM keeps frozen.

ID (MoCo v3's architecture with UniGrad's loss, as SiM's ID ablation): both
views with SiM's augmentations and no mask; the online encoder (SiM's, frozen
patch embedding, no final norm) on all of view 1, its patch tokens
mean-pooled (what the probes read), a 3-layer BatchNorm MLP projector and a
2-layer predictor (hidden width 2 x ``decoder_dim``, output ``decoder_dim``);
the EMA target (encoder + projector) on view 2, its pooled output through an
affine-free LayerNorm; SiM's loss on one token per image (``neg_weight`` is
lambda, ``f_momentum`` is UniGrad's rho, 0 = the batch's F). Departures from
MoCo v3: one direction (view 1 predicts view 2, as SiM; MoCo v3 symmetrises
at twice the cost), UniGrad's loss instead of InfoNCE, mean-pooled patch
tokens instead of the cls token. ``id_loss=infonce`` swaps the loss for MoCo v3's own: both
directions, each view's prediction scored against the momentum keys of every image in the global
batch by InfoNCE at temperature ``id_temperature``, times ``2 * temperature`` (MoCo v3's scaling).
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed
from .config import Config
from .loss import sim_loss, target_correlation
from .pos_embed import grid_sincos
from .vit import Encoder, TokenBatchNorm, init_weights, make_blocks


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, patch*patch*C), patches row-major, pixels (row, col, channel) as MAE."""
    B, C, H, W = images.shape
    g = H // patch
    x = images.reshape(B, C, g, patch, g, patch)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(B, g * g, patch * patch * C)


class MAE(nn.Module):
    """Masked autoencoder; ``forward(batch)`` returns ``(loss, outputs)`` like :class:`simlab.model.SiM`."""

    def __init__(self, cfg: Config, in_chans: int = 3):
        super().__init__()
        m = cfg.model
        self.cfg, self.grid, self.patch = cfg, cfg.grid, m.patch_size
        self.encoder = Encoder(cfg.data.image_size, m.patch_size, in_chans, m.embed_dim, m.depth, m.num_heads,
                               m.mlp_ratio, m.drop_path, train_patch_embed=True, final_norm=True)
        self.decoder_embed = nn.Linear(m.embed_dim, m.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, m.decoder_dim))
        self.register_buffer("decoder_pos_embed", grid_sincos(self.grid, m.decoder_dim, cls_token=True)[None])
        self.decoder_blocks = make_blocks(m.predictor_depth, m.decoder_dim, m.decoder_heads, m.mlp_ratio, "ln")
        self.decoder_norm = nn.LayerNorm(m.decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(m.decoder_dim, m.patch_size ** 2 * in_chans)
        for mod in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            mod.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward_decoder(self, latent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """latent (B, 1 + N_vis, D) -> pixel predictions for every patch (B, N, p*p*C)."""
        x = self.decoder_embed(latent)
        B, _, Dd = x.shape
        full = self.mask_token.expand(B, mask.shape[1], Dd).clone()
        full[~mask] = x[:, 1:].reshape(-1, Dd)  # visible tokens back at their places
        x = torch.cat([x[:, :1], full], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(self, batch: dict, momentum: Optional[float] = None) -> tuple[torch.Tensor, dict]:
        images, mask = batch["view1"], batch["mask"]
        pred = self.forward_decoder(self.encoder.forward_visible(images, mask), mask)
        with torch.autocast(device_type=images.device.type, enabled=False):
            target = patchify(images.float(), self.patch)
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5  # MAE's norm_pix_loss
            per_patch = (pred.float() - target).pow(2).mean(-1)  # (B, N)
            loss = (per_patch * mask).sum() / mask.sum()
        zero = loss.detach() * 0
        return loss, {"pred": pred, "target": target, "mask": mask, "pos": loss.detach(), "neg": zero}


def bn_mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """MoCo v3's MLP: (Linear, BatchNorm, ReLU) x (layers - 1), then Linear. BatchNorm is
    :class:`TokenBatchNorm`, so its statistics cover every rank under torchrun."""
    mods, dim = [], in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(dim, hidden), TokenBatchNorm(hidden), nn.ReLU(inplace=True)]
        dim = hidden
    mods.append(nn.Linear(dim, out_dim))
    net = nn.Sequential(*mods)
    net.apply(init_weights)
    return net


class InstanceDiscrimination(nn.Module):
    """Global two-view ID baseline; ``forward(batch, momentum)`` returns ``(loss, outputs)`` like SiM."""

    def __init__(self, cfg: Config, in_chans: int = 3):
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.encoder = Encoder(cfg.data.image_size, m.patch_size, in_chans, m.embed_dim, m.depth, m.num_heads,
                               m.mlp_ratio, m.drop_path, train_patch_embed=m.train_patch_embed)
        self.projector = bn_mlp(m.embed_dim, 2 * m.decoder_dim, m.decoder_dim, 3)
        self.predictor = bn_mlp(m.decoder_dim, 2 * m.decoder_dim, m.decoder_dim, 2)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.register_buffer("running_correlation", torch.eye(m.decoder_dim))  # rho > 0 only

    @staticmethod
    def pool(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:].mean(dim=1)  # mean of the patch tokens, as the probes read them

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        online = [p for mod in (self.encoder, self.projector) for p in mod.parameters()]
        target = [p for mod in (self.target_encoder, self.target_projector) for p in mod.parameters()]
        torch._foreach_lerp_(target, online, 1.0 - momentum)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.pool(self.encoder.forward_features(images))))

    @torch.no_grad()
    def key(self, images: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.pool(self.target_encoder.forward_features(images)))

    def forward(self, batch: dict, momentum: Optional[float] = None) -> tuple[torch.Tensor, dict]:
        if self.cfg.model.id_loss == "infonce":
            return self.forward_infonce(batch, momentum)
        pred = self.query(batch["view1"])
        if momentum is not None:
            self.update_target(momentum)
        target = self.key(batch["view2"])  # no gradient: key() runs under no_grad
        with torch.autocast(device_type=target.device.type, enabled=False):
            target = F.layer_norm(target.float(), target.shape[-1:])
        correlation = None
        rho = self.cfg.model.f_momentum
        if rho > 0:
            if self.training:
                self.running_correlation.lerp_(target_correlation(target), 1.0 - rho)
            correlation = self.running_correlation
        loss, stats = sim_loss(pred[:, None], target[:, None], self.cfg.model.neg_weight, correlation)
        return loss, {"pred": pred[:, None], "target": target[:, None], "mask": batch.get("mask"), **stats}

    def forward_infonce(self, batch: dict, momentum: Optional[float]) -> tuple[torch.Tensor, dict]:
        """MoCo v3: ctr(q1, k2) + ctr(q2, k1), the target updated before the keys are computed."""
        views = (batch["view1"], batch["view2"])
        queries = [self.query(v) for v in views]
        if momentum is not None:
            self.update_target(momentum)
        keys = [self.key(v) for v in views]
        tau = self.cfg.model.id_temperature
        (l12, acc12), (l21, _) = infonce(queries[0], keys[1], tau), infonce(queries[1], keys[0], tau)
        loss = l12 + l21
        # "pos" is the mean query-key cosine of matching views and "neg" the share of queries whose own
        # key is not the nearest in the global batch (1 - top-1 instance accuracy), so the metrics log
        # shows whether instance discrimination is being learned
        with torch.no_grad():
            pos = F.cosine_similarity(queries[0].float(), keys[1].float(), dim=-1).mean()
        return loss, {"pred": queries[0][:, None], "target": keys[1][:, None], "mask": batch.get("mask"),
                      "pos": pos, "neg": 1.0 - acc12}


def infonce(query: torch.Tensor, key: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo v3's ``contrastive_loss``: (B, D) queries against the keys of every rank's batch.

    Returns (loss, top-1 accuracy), the loss ``2 * temperature * cross_entropy`` in fp32 with query i's
    positive its own key, at global index ``rank * B + i``.
    """
    with torch.autocast(device_type=query.device.type, enabled=False):
        q = F.normalize(query.float(), dim=-1)
        k = F.normalize(key.float().detach(), dim=-1)
        k_all = gather_keys(k)
        logits = q @ k_all.T / temperature
        labels = torch.arange(q.shape[0], device=q.device) + distributed.info().rank * q.shape[0]
        loss = F.cross_entropy(logits, labels) * (2 * temperature)
        acc = (logits.detach().argmax(-1) == labels).float().mean()
    return loss, acc


def gather_keys(keys: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (world * B, D): every rank's keys, in rank order (no gradient flows to keys)."""
    if not distributed.active():
        return keys
    import torch.distributed as dist
    parts = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, keys.contiguous())
    return torch.cat(parts)
