"""SiM: online encoder on view 1's visible tokens, projector, relative-position decoder, EMA target.

Follows ``SiameseIMViT.forward_sim`` of the official code (SIM_SPEC.md sections
1-3), with MAE's named stages (``models_mae.py``) and DINOv2's EMA update:

1. ``forward_online``: view 1's visible patches (+ cls) through the encoder and
   projector -> (B, 1 + N_vis, Dd).
2. ``forward_decoder``: cls and visible tokens at their view-1 sin-cos
   positions, plus one mask-token query per view-2 patch at its position *in
   view 1's frame* (``relative_embedding`` through a learned Linear);
   BatchNorm blocks; a Linear head. Predictions are the query outputs (B, N, Dd).
3. ``update_target`` (EMA with ``_foreach`` ops, before the target pass, from the
   online weights after the previous optimizer step), then ``forward_target``:
   the EMA encoder + projector on all of view 2, affine-free LayerNorm -> (B, N, Dd).
4. ``sim_loss`` (loss.py).
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Config
from .loss import sim_loss, target_correlation
from .pos_embed import grid_coords, grid_sincos, relative_embedding
from .views import ViewGeometry, relative_coords, relative_scales
from .vit import Encoder, Projector, init_weights, make_blocks


class Decoder(nn.Module):
    """SiM's predictor: self-attention over [cls, visible view-1 tokens, view-2 queries]."""

    def __init__(self, grid: int, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, norm: str = "bn",
                 pos_gain: float = 1.0):
        super().__init__()
        self.grid, self.dim, self.pos_gain = grid, dim, pos_gain
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", grid_sincos(grid, dim, cls_token=True)[None], persistent=True)
        self.pos_mlp = nn.Linear(2 * dim, dim)  # relative embedding (2 Dd) -> Dd
        self.blocks = make_blocks(depth, dim, heads, mlp_ratio, norm)
        self.pred = nn.Linear(dim, dim)
        self.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, mask: torch.Tensor, query_embed: torch.Tensor) -> torch.Tensor:
        """latent (B, 1 + N_vis, Dd) from the projector; mask (B, N) True = masked;
        query_embed (B, N, 2 Dd) relative embedding of view 2's patches -> predictions (B, N, Dd)."""
        B, _, D = latent.shape
        gain = self.pos_gain
        pos = (self.pos_embed if gain == 1 else gain * self.pos_embed).expand(B, -1, -1)  # scaled once, not per image
        vis_pos = pos[:, 1:][~mask].reshape(B, -1, D)  # (B, N_vis, Dd): each visible token's own place
        query_pos = self.pos_mlp(query_embed)
        queries = self.mask_token + (query_pos if gain == 1 else gain * query_pos)  # (B, N, Dd)
        x = torch.cat([latent[:, :1] + pos[:, :1], latent[:, 1:] + vis_pos, queries], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(x[:, -queries.shape[1]:])


class SiM(nn.Module):
    """The full SiM model; ``forward(batch, momentum)`` returns ``(loss, outputs)``."""

    def __init__(self, cfg: Config, in_chans: int = 3):
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.grid = cfg.grid
        self.num_masked = m.num_masked
        self.encoder = Encoder(cfg.data.image_size, m.patch_size, in_chans, m.embed_dim, m.depth, m.num_heads,
                               m.mlp_ratio, m.drop_path, m.train_patch_embed)
        self.projector = Projector(m.embed_dim, m.decoder_dim, m.projector_depth, m.decoder_heads,
                                   m.mlp_ratio, m.decoder_norm)
        self.decoder = Decoder(self.grid, m.decoder_dim, m.predictor_depth, m.decoder_heads, m.mlp_ratio,
                               m.decoder_norm, m.decoder_pos_gain)
        # the target: copies at init, never trained by gradients
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.register_buffer("running_correlation", torch.eye(m.decoder_dim))  # EMA-F ablation only

    # ------------------------------------------------------------------ stages
    def forward_online(self, view1: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """view1 (B, C, H, W), mask (B, N) -> projected visible tokens (B, 1 + N_vis, Dd)."""
        return self.projector(self.encoder.forward_visible(view1, mask))

    def query_embedding(self, geom1: ViewGeometry, geom2: ViewGeometry) -> torch.Tensor:
        """(B, N, 2 Dd): where each view-2 patch lies in view 1's grid, and the relative zoom."""
        m = self.cfg.model
        if m.query_pos == "relative":
            coords = relative_coords(geom1, geom2, self.grid)
            scales = relative_scales(geom1, geom2)
        else:  # 'absolute' ablation: view 2's own grid, no geometry
            B = geom1.top.shape[0]
            coords = grid_coords(self.grid, geom1.top.device).expand(B, -1, -1)
            scales = torch.zeros(B, 2, device=geom1.top.device)
        if not m.scale_terms:
            scales = torch.zeros_like(scales)
        return relative_embedding(coords, scales, m.decoder_dim)

    def forward_decoder(self, latent: torch.Tensor, mask: torch.Tensor, geom1: ViewGeometry,
                        geom2: ViewGeometry) -> torch.Tensor:
        """-> predictions of view 2's target tokens (B, N, Dd)."""
        return self.decoder(latent, mask, self.query_embedding(geom1, geom2).to(latent.dtype))

    @torch.no_grad()
    def forward_target(self, view2: torch.Tensor) -> torch.Tensor:
        """view2 (B, C, H, W) -> target tokens (B, N, Dd), affine-free LayerNorm, fp32."""
        tokens = self.target_projector(self.target_encoder.forward_features(view2))[:, 1:]
        with torch.autocast(device_type=view2.device.type, enabled=False):
            tokens = tokens.float()
            if self.cfg.model.target_centering:
                tokens = tokens - tokens.mean(dim=1, keepdim=True)  # each image's mean token, (B, 1, Dd)
            if self.cfg.model.target_position_centering:
                tokens = tokens - tokens.mean(dim=0, keepdim=True)  # each grid position's mean, (1, N, Dd)
            return F.layer_norm(tokens, tokens.shape[-1:])

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online, for encoder and projector.

        Parameters only: BatchNorm running statistics are buffers and stay the
        target's own (it runs in train mode, on batch statistics, as in SiM).
        """
        online = [p for mod in (self.encoder, self.projector) for p in mod.parameters()]
        target = [p for mod in (self.target_encoder, self.target_projector) for p in mod.parameters()]
        torch._foreach_lerp_(target, online, 1.0 - momentum)

    # ------------------------------------------------------------------ whole step
    def forward(self, batch: dict, momentum: Optional[float] = None) -> tuple[torch.Tensor, dict]:
        """batch: ``view1``, ``view2`` (B, C, H, W), ``mask`` (B, N) bool, ``geom1``, ``geom2``.

        ``momentum``: when given, the target is EMA-updated first (one training step).
        ``outputs``: ``pred`` and ``target`` (B, N, Dd), ``mask``, ``pos``, ``neg``.
        """
        mask = batch["mask"]
        latent = self.forward_online(batch["view1"], mask)
        pred = self.forward_decoder(latent, mask, batch["geom1"], batch["geom2"])
        if momentum is not None:
            self.update_target(momentum)
        target = self.forward_target(batch["view2"])
        correlation = None
        rho = self.cfg.model.f_momentum
        if rho > 0:
            batch_f = target_correlation(target)
            if self.training:
                self.running_correlation.lerp_(batch_f, 1.0 - rho)
            correlation = self.running_correlation
        loss, stats = sim_loss(pred, target, self.cfg.model.neg_weight, correlation)
        outputs = {"pred": pred, "target": target, "mask": mask, **stats}
        return loss, outputs
