"""Baseline objectives under SiM's harness: masked image modeling (MAE).

MAE (He et al. 2022, ``models_mae.py``): one view with crop and flip only, a
uniformly random mask (``mae_mask_ratio``, 75 %), the encoder on the visible
patches with a final LayerNorm, a light LayerNorm decoder (``decoder_dim``,
``predictor_depth`` blocks) over all positions, and the mean squared error of
per-patch-normalised pixels on the masked patches only. It uses the same
encoder, data and schedule code as SiM; it trains its patch embedding (MAE
does), which SiM keeps frozen.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .config import Config
from .pos_embed import grid_sincos
from .vit import Encoder, init_weights, make_blocks


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
