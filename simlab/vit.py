"""Transformer parts of SiM: the ViT encoder and the BatchNorm token blocks.

Built from timm's ``Block`` and ``PatchEmbed`` by keyword (timm's
``vision_transformer.py``), with SiM's choices (SIM_SPEC.md section 1):
fixed 2-D sin-cos positions (row first) added *before* masking, a cls token
whose position embedding is zero, **no final LayerNorm** during pretraining,
and xavier-uniform init everywhere (the patch embedding initialised like a
Linear, then frozen by default: the MoCo v3 trick).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

from . import distributed
from .pos_embed import grid_sincos


class TokenBatchNorm(nn.Module):
    """BatchNorm over the channels of (B, L, D) tokens, statistics over batch x tokens, in fp32.

    SiM's ``PermuteBN`` (the projector's and decoder's norm); under torchrun its training statistics
    cover every rank (SyncBatchNorm's role, on CPU too). Reshaping to
    (B*L, D) gives the same statistics as BatchNorm1d on (B, D, L) without a
    permute. Autocast is off: the statistics of low-precision tokens are not
    trusted (SIM_SPEC.md section 5, precision).
    """

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1, device=None, dtype=None):
        super().__init__()  # device/dtype: newer timm passes them to every norm layer; stats stay fp32
        self.dim, self.eps, self.momentum = dim, eps, momentum
        self.weight = nn.Parameter(torch.ones(dim, device=device))
        self.bias = nn.Parameter(torch.zeros(dim, device=device))
        self.register_buffer("running_mean", torch.zeros(dim, device=device))
        self.register_buffer("running_var", torch.ones(dim, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = x.reshape(-1, self.dim).float()
            if self.training and distributed.active():
                y = self._global_batch_norm(flat)
            else:
                y = F.batch_norm(flat, self.running_mean, self.running_var, self.weight, self.bias,
                                 self.training, self.momentum, self.eps)
        return y.reshape(shape)

    def _global_batch_norm(self, flat: torch.Tensor) -> torch.Tensor:
        """Statistics over the tokens of every rank: one all-reduce of (sum, sum of squares, count).

        The all-reduce carries gradients, so the backward pass is that of one
        BatchNorm over the global batch (what SyncBatchNorm does, but on CPU too).
        """
        count = torch.full((1,), float(flat.shape[0]), device=flat.device)
        stats = distributed.sum_with_grad(torch.cat([flat.sum(0), (flat * flat).sum(0), count]))
        total = stats[-1]
        mean = stats[:self.dim] / total
        var = (stats[self.dim:2 * self.dim] / total - mean * mean).clamp_min(0)
        with torch.no_grad():  # running statistics as F.batch_norm keeps them (unbiased variance)
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * total / (total - 1).clamp_min(1), self.momentum)
        return (flat - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def norm_layer(kind: str):
    """The norm class for blocks: 'ln' (LayerNorm, eps 1e-6 as SiM's ViT) or 'bn' (TokenBatchNorm)."""
    if kind == "ln":
        return partial(nn.LayerNorm, eps=1e-6)
    if kind == "bn":
        return TokenBatchNorm
    raise ValueError(f"unknown norm {kind!r}: use 'ln' or 'bn'")


def make_blocks(depth: int, dim: int, heads: int, mlp_ratio: float, norm: str,
                drop_path: float = 0.0) -> nn.ModuleList:
    rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows linearly
    return nn.ModuleList([Block(dim=dim, num_heads=heads, mlp_ratio=mlp_ratio, qkv_bias=True,
                                drop_path=r, norm_layer=norm_layer(norm)) for r in rates])


def init_weights(module: nn.Module) -> None:
    """xavier-uniform Linears with zero bias, unit LayerNorms (SiM's ``_init_weights``)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class Encoder(nn.Module):
    """ViT encoder (no final norm unless asked); ``forward_features`` returns all tokens (B, 1 + N, D)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, dim: int, depth: int, heads: int,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0, train_patch_embed: bool = False,
                 final_norm: bool = False):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=dim)
        self.grid = img_size // patch_size
        self.num_patches = self.grid * self.grid
        self.embed_dim = dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # fixed, so a buffer; the cls token's entry is zero as in SiM
        self.register_buffer("pos_embed", grid_sincos(self.grid, dim, cls_token=True)[None], persistent=True)
        self.blocks = make_blocks(depth, dim, heads, mlp_ratio, "ln", drop_path)
        # SiM pretrains without a final norm; MAE's encoder ends with one
        self.norm = nn.LayerNorm(dim, eps=1e-6) if final_norm else nn.Identity()
        self.apply(init_weights)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # like a Linear, not a conv
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        self.patch_embed.requires_grad_(train_patch_embed)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> patch tokens with positions (B, N, D)."""
        return self.patch_embed(x) + self.pos_embed[:, 1:]

    def run_blocks(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prepend the cls token to (B, n, D) patch tokens and run the blocks: (B, 1 + n, D)."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens of full images: (B, C, H, W) -> (B, 1 + N, D), no final norm."""
        return self.run_blocks(self.embed(x))

    def forward_visible(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Tokens of the visible patches only: mask (B, N) bool, True = masked -> (B, 1 + N_vis, D).

        Positions are added before dropping, so visible tokens keep their place.
        Every row must mask the same number of patches.
        """
        tokens = self.embed(x)  # (B, N, D)
        B, N, D = tokens.shape
        visible = tokens[~mask].reshape(B, -1, D)  # (B, N_vis, D)
        return self.run_blocks(visible)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class Projector(nn.Module):
    """Linear encoder width -> decoder width, then ``depth`` norm-``norm`` blocks (SiM: 2 BN blocks)."""

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, norm: str = "bn"):
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.blocks = make_blocks(depth, dim, heads, mlp_ratio, norm)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return x
