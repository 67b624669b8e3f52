"""What a trained SiM predicts, patch by patch: predictions against targets, attention, correspondences.

The decoder predicts, for every view-2 patch, the target encoder's token at
that patch from the masked view 1 and the relative geometry (SIM_SPEC.md
section 2). Three regions of view 2 behave differently and are told apart here
from the known geometry (:func:`simlab.views.relative_coords`): patches whose
centre falls on a *visible* view-1 patch, on a *masked* one, or *outside*
view 1 altogether (SiM must extrapolate there). Everything runs in eval mode:
BatchNorm uses its running statistics.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .checkpoint import CheckpointError, config_of, load_checkpoint
from .masking import keyed_masks
from .views import TwoViewTransform, ViewGeometry, relative_coords

VISIBLE, MASKED, OUTSIDE = 0, 1, 2
REGION_NAMES = ("visible", "masked", "outside")


def load_sim_model(path) -> torch.nn.Module:
    """The whole SiM model of a checkpoint (online and target branches, decoder), eval mode, CPU."""
    from .model import SiM
    ckpt = load_checkpoint(path)
    cfg = config_of(ckpt)
    if cfg.train.objective != "sim":
        raise CheckpointError(f"{path}: a {cfg.train.objective!r} checkpoint has no dense SiM predictions")
    model = SiM(cfg, ckpt["preprocess"]["in_chans"])
    model.load_state_dict(ckpt["model"])
    model.preprocess = dict(ckpt["preprocess"])
    return model.eval()


class DensePair(NamedTuple):
    view1: torch.Tensor  # (B, C, S, S) normalised online view
    view2: torch.Tensor  # (B, C, S, S) normalised target view
    geom1: ViewGeometry
    geom2: ViewGeometry
    mask: torch.Tensor  # (B, N) bool, True = masked (view 1)
    pred: torch.Tensor  # (B, N, D) decoder predictions of view 2's tokens
    target: torch.Tensor  # (B, N, D) target tokens (affine-free LayerNorm)
    regions: torch.Tensor  # (B, N) long: VISIBLE, MASKED or OUTSIDE per view-2 patch
    cosine: torch.Tensor  # (B, N) cosine similarity of prediction and target


def target_regions(coords: torch.Tensor, mask: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, N, 2) view-2 patch centres in view-1's grid, (B, N) view-1 mask -> (B, N) region of each
    view-2 patch: OUTSIDE when its centre is not inside view 1, else the state of the view-1 patch
    under it."""
    cell = geometric_matches(coords, grid)
    under = torch.gather(mask, 1, cell.clamp(min=0))
    return torch.where(cell >= 0, torch.where(under, MASKED, VISIBLE), OUTSIDE)


@torch.no_grad()
def dense_pair(model, images: torch.Tensor, indices, mean, std, seed: int = 0) -> DensePair:
    """Views, mask (the training recipe's own draws for these indices), predictions and targets.

    images: (B, C, H, W) uint8 sources; the views are made at the model's input size."""
    cfg = model.cfg
    size = model.preprocess["input_size"]
    transform = TwoViewTransform(cfg.aug, size, mean, std, seed=seed)
    indices = torch.as_tensor(indices).reshape(-1)
    views = transform(images, indices)
    grid = size // cfg.model.patch_size
    mask = keyed_masks(seed, 0, indices, grid, cfg.model.num_masked)
    latent = model.forward_online(views.view1, mask)
    pred = model.forward_decoder(latent, mask, views.geom1, views.geom2).float()
    target = model.forward_target(views.view2)
    regions = target_regions(relative_coords(views.geom1, views.geom2, grid), mask, grid)
    cosine = F.cosine_similarity(pred, target, dim=-1)
    return DensePair(views.view1, views.view2, views.geom1, views.geom2, mask, pred, target, regions, cosine)


def cosine_by_region(pair: DensePair) -> dict:
    """Mean prediction-target cosine per region over all patches of the batch, and each region's count."""
    out = {}
    for code, name in enumerate(REGION_NAMES):
        sel = pair.regions == code
        out[name] = {"cosine": float(pair.cosine[sel].mean()) if sel.any() else float("nan"),
                     "patches": int(sel.sum())}
    return out


def pca_rgb(*token_sets: torch.Tensor) -> list[torch.Tensor]:
    """Project token sets (each (..., N, D)) on the first 3 principal components of all of them
    together, scaled to [0, 1] per component, so equal colours mean equal features across sets."""
    flat = torch.cat([t.reshape(-1, t.shape[-1]) for t in token_sets]).float()
    centred = flat - flat.mean(0)
    _, _, v = torch.pca_lowrank(centred, q=3, center=False, niter=4)
    proj = centred @ v[:, :3]
    lo, hi = proj.min(0).values, proj.max(0).values
    proj = (proj - lo) / (hi - lo).clamp(min=1e-8)
    out, start = [], 0
    for t in token_sets:
        n = t[..., 0].numel()
        out.append(proj[start:start + n].reshape(*t.shape[:-1], 3))
        start += n
    return out


@torch.no_grad()
def last_block_attention(encoder, x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) normalised images -> (B, heads, 1 + N, 1 + N) attention weights of the encoder's
    last block (computed from its own qkv projection, as timm's Attention does)."""
    tokens = encoder.embed(x)
    cls = (encoder.cls_token + encoder.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
    h = torch.cat([cls, tokens], dim=1)
    for blk in encoder.blocks[:-1]:
        h = blk(h)
    blk = encoder.blocks[-1]
    attn = blk.attn
    B, T, D = h.shape
    qkv = attn.qkv(blk.norm1(h)).reshape(B, T, 3, attn.num_heads, D // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def geometric_matches(coords: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, N, 2) view-2 centres in view-1's grid -> (B, N) index of the view-1 patch under each, -1 outside."""
    inside = ((coords > -0.5) & (coords < grid - 0.5)).all(-1)  # patch (r, c) spans [r - 0.5, r + 0.5)
    cell = coords.round().clamp(0, grid - 1).long()
    return torch.where(inside, cell[..., 0] * grid + cell[..., 1], -1)


def feature_matches(tokens1: torch.Tensor, tokens2: torch.Tensor) -> torch.Tensor:
    """(B, N, D) patch tokens of view 1 and view 2 -> (B, N): for each view-2 patch, the view-1 patch of
    highest cosine similarity."""
    sim = F.normalize(tokens2.float(), dim=-1) @ F.normalize(tokens1.float(), dim=-1).transpose(1, 2)
    return sim.argmax(-1)


def match_agreement(geometric: torch.Tensor, learned: torch.Tensor, grid: int, tolerance: int = 1) -> float:
    """Share of view-2 patches inside view 1 whose feature match lies within ``tolerance`` patches
    (Chebyshev distance) of the geometric one."""
    inside = geometric >= 0
    if not inside.any():
        return float("nan")
    return float((patch_distance(geometric[inside], learned[inside], grid) <= tolerance).float().mean())


def patch_distance(a: torch.Tensor, b: torch.Tensor, grid: int) -> torch.Tensor:
    """Chebyshev distance in patches between patch indices ``a`` and ``b`` of one grid (same shape)."""
    return torch.maximum((a // grid - b // grid).abs(), (a % grid - b % grid).abs())
