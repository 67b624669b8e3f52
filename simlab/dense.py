"""What a trained SiM predicts, patch by patch: predictions against targets, attention, correspondences.

Every number here comes with its floor (:mod:`simlab.floors`): the decoder's
loss and cosine beside a content-blind predictor fitted on other images and
two oracles, learned correspondences beside the same-grid-index rule, a random
patch and a random-init encoder.

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

from .checkpoint import CheckpointError, build_encoder, config_of, load_checkpoint
from .floors import (MatchedReadout, PositionMean, image_mean_prediction, position_plus_image_prediction,
                     random_patch_agreement, same_index_matches, score_by_region, variance_shares)
from .features import match_channels
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
    matched: torch.Tensor  # (B, N, Dd) the online visible view-1 token under each view-2 patch (0 elsewhere)


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
    views = transform(match_channels(images, model.preprocess["in_chans"]), indices)
    grid = size // cfg.model.patch_size
    mask = keyed_masks(seed, 0, indices, grid, cfg.model.num_masked)
    latent = model.forward_online(views.view1, mask)
    pred = model.forward_decoder(latent, mask, views.geom1, views.geom2).float()
    target = model.forward_target(views.view2)
    coords = relative_coords(views.geom1, views.geom2, grid)
    regions = target_regions(coords, mask, grid)
    cosine = F.cosine_similarity(pred, target, dim=-1)
    return DensePair(views.view1, views.view2, views.geom1, views.geom2, mask, pred, target, regions, cosine,
                     matched_visible_tokens(latent[:, 1:].float(), mask, coords, regions, grid))


def matched_visible_tokens(visible: torch.Tensor, mask: torch.Tensor, coords: torch.Tensor, regions: torch.Tensor,
                           grid: int) -> torch.Tensor:
    """visible (B, N_vis, D) online tokens of view 1's visible patches, in grid order -> (B, N, D): for
    each view-2 patch, the token of the visible view-1 patch under its centre, zeros where none is."""
    B, N = mask.shape
    full = visible.new_zeros(B, N, visible.shape[-1])
    full[~mask] = visible.reshape(-1, visible.shape[-1])
    cell = geometric_matches(coords, grid).clamp(min=0)
    out = torch.gather(full, 1, cell[..., None].expand(-1, -1, full.shape[-1]))
    return out * (regions == VISIBLE)[..., None]


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


# ---------------------------------------------------------------------------- the evidence, with its floors
CONTENT_BLIND = "position mean (content-blind)"
# the same constants shrunk to minimise SiM's loss: the stricter floor, since the negative term alone
# rewards a shrunk prediction (README "Every number beside its floor")
CONTENT_BLIND_SHRUNK = "position mean, loss-optimal (content-blind)"
# a content-aware reference: what a linear read of the visible view-1 token under each patch recovers
READOUT = "position mean + linear readout of the visible view-1 token (reference)"
# what a saved dense_evidence.json says it scored, so that a probe of the same checkpoint can reuse it
EVIDENCE_SOURCE_KEYS = ("checkpoint_sha256", "dataset", "seed")


def evidence_record(evidence: dict, checkpoint_sha256: str, dataset: str, seed: int) -> dict:
    """:func:`dense_evidence`'s result with what it scored (:data:`EVIDENCE_SOURCE_KEYS`), as 03 saves it."""
    return dict(zip(EVIDENCE_SOURCE_KEYS, (checkpoint_sha256, dataset, seed)), **evidence)


def random_encoder_like(model, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised encoder of the model's architecture (the random-init floor), eval mode."""
    torch.manual_seed(seed)
    return build_encoder(model.cfg, model.preprocess)


@torch.no_grad()
def encoder_patch_tokens(encoder, views: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) normalised views -> (B, N, D) the encoder's patch tokens on the full view."""
    return encoder.forward_features(views)[:, 1:].float()


@torch.no_grad()
def prediction_scores(pair: DensePair, fit: DensePair, neg_weight: float) -> dict:
    """The decoder's predictions, the floors' and the matched-token readout's, scored with SiM's loss,
    its terms and the cosine per region. ``fit``: pairs of *other* images, to fit the content-blind
    predictor and the readout on. Returns ``{predictor: {region: {loss, pos, neg, cosine, patches}}}``."""
    position = PositionMean.fit(fit.target, neg_weight)
    readout = MatchedReadout.fit(fit.matched, fit.regions == VISIBLE, fit.target, position)
    B = pair.target.shape[0]
    predictions = {
        "decoder": pair.pred,
        CONTENT_BLIND: position.predict(B),
        CONTENT_BLIND_SHRUNK: position.predict(B, shrunk=True),
        READOUT: readout.predict(pair.matched, pair.regions == VISIBLE),
        "image mean (oracle)": image_mean_prediction(pair.target),
        "position + image (oracle)": position_plus_image_prediction(pair.target, position),
    }
    return {name: score_by_region(p, pair.target, pair.regions, neg_weight, REGION_NAMES)
            for name, p in predictions.items()}


@torch.no_grad()
def correspondence_scores(pair: DensePair, encoder, random_encoder, grid: int, tolerance: int = 1) -> dict:
    """Share of view-2 patches inside view 1 whose match lies within ``tolerance`` patches of the
    geometric truth: the encoder's nearest neighbour, a random-init encoder's, the same grid index,
    and a uniformly random patch (its exact expectation)."""
    geometric = geometric_matches(relative_coords(pair.geom1, pair.geom2, grid), grid)
    B, N = geometric.shape

    def learned(enc):
        return feature_matches(encoder_patch_tokens(enc, pair.view1), encoder_patch_tokens(enc, pair.view2))

    return {"encoder": match_agreement(geometric, learned(encoder), grid, tolerance),
            "random-init encoder": match_agreement(geometric, learned(random_encoder), grid, tolerance),
            "same grid index": match_agreement(geometric, same_index_matches(B, N), grid, tolerance),
            "random patch": random_patch_agreement(geometric, grid, tolerance),
            "pairs": B, "tolerance": tolerance}


@torch.no_grad()
def dense_evidence(model, images: torch.Tensor, indices, fit_images: torch.Tensor, fit_indices, mean, std,
                   seed: int = 0, random_init_seed: int = 0) -> tuple[DensePair, dict]:
    """Everything 03_dense_features and ``simlab probe`` report about a SiM model's dense side.

    images (B, C, H, W) uint8: the scored (held-out) images; fit_images: *other* images, on whose
    targets the content-blind predictor is fitted. Returns the scored :class:`DensePair` and a
    JSON-ready dict: ``predictions`` (decoder and floors per region), ``correspondences`` (encoder
    and floors), ``decomposition`` (variance shares of the target tokens and of the encoder's patch
    tokens on view 2) and the counts.
    """
    pair = dense_pair(model, images, indices, mean, std, seed=seed)
    fit = dense_pair(model, fit_images, fit_indices, mean, std, seed=seed)
    grid = model.cfg.grid
    random_encoder = random_encoder_like(model, random_init_seed)
    report = {
        "pairs": int(pair.target.shape[0]), "fit_pairs": int(fit.target.shape[0]),
        "neg_weight": model.cfg.model.neg_weight,
        "predictions": prediction_scores(pair, fit, model.cfg.model.neg_weight),
        "correspondences": correspondence_scores(pair, model.encoder, random_encoder, grid),
        "decomposition": {"target": variance_shares(pair.target),
                          "encoder": variance_shares(encoder_patch_tokens(model.encoder, pair.view2)),
                          "random-init encoder": variance_shares(encoder_patch_tokens(random_encoder, pair.view2))},
    }
    return pair, report


def evidence_table(report: dict) -> str:
    """The predictions part of :func:`dense_evidence` as a markdown table (loss, pos, neg, cosine per
    region), floors included."""
    head = "| predictor | region | loss | pos | neg | cosine | patches |"
    lines = [head, "|" + " --- |" * 7]
    for name, regions in report["predictions"].items():
        for region, s in regions.items():
            lines.append(f"| {name} | {region} | {s['loss']:.3f} | {s['pos']:.3f} | {s['neg']:.3f} | "
                         f"{s['cosine']:+.3f} | {s['patches']} |")
    return "\n".join(lines)
