"""The floors: rules that need no learning, against which every dense measurement is read.

DESIGN.md convention 13: a number of learned structure means something only
beside what a content-blind rule scores on the same data. This module holds
those rules as pure tensor maths (no model, no dataset):

- predictors of SiM's targets that ignore view 1's content: the mean target
  token at each view-2 grid position (fitted on *other* images), the same
  shrunk to minimise SiM's loss, and two oracles that read the scored targets
  (each image's own mean token; position mean plus image offset); beside them a content-aware
  reference, a linear readout of the visible view-1 token under each patch (:class:`MatchedReadout`);
- :func:`score_by_region`: SiM's loss, its two terms and the cosine of any
  predictions, per region of view 2 (visible / masked / outside view 1);
- :func:`variance_shares`: how much of a token set's variance is explained by
  grid position, by image identity, and neither (a balanced two-way split);
- :func:`rankme`: RankMe (Garrido et al. 2023), the effective rank of features;
- correspondence floors: the same-grid-index rule and the exact chance level
  of a uniformly random patch.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from .loss import target_correlation


# ---------------------------------------------------------------------------- content-blind predictors
class PositionMean(NamedTuple):
    """The content-blind predictor: for view-2 patch n, a constant token fitted on other images.

    ``means`` (N, D) is the mean target token at each view-2 grid position;
    ``shrunk`` (N, D) is ``(I + lambda F)^-1 means``, the per-position constant
    that minimises SiM's loss ``|p - z|^2 + lambda p^T F p`` on the fitting set
    (the loss rewards shrinking along F's large directions, the cosine does not);
    ``shrink`` (D, D) is ``(I + lambda F)^-1`` itself, for any other prediction fitted on the same set.
    """

    means: torch.Tensor
    shrunk: torch.Tensor
    shrink: torch.Tensor

    @classmethod
    def fit(cls, targets: torch.Tensor, neg_weight: float) -> "PositionMean":
        """targets: (B, N, D) target tokens of the fitting images (never the scored ones)."""
        targets = targets.float()
        means = targets.mean(0)  # (N, D)
        corr = target_correlation(targets)  # (D, D)
        eye = torch.eye(corr.shape[0], dtype=corr.dtype)
        shrunk = torch.linalg.solve(eye + neg_weight * corr, means.T).T  # F symmetric: solve per position
        return cls(means, shrunk, torch.linalg.inv(eye + neg_weight * corr))

    def predict(self, batch: int, shrunk: bool = False) -> torch.Tensor:
        """(B, N, D): the same constants for every image."""
        src = self.shrunk if shrunk else self.means
        return src[None].expand(batch, -1, -1)


class MatchedReadout(NamedTuple):
    """A content-aware reference, not a floor: the loss-optimal position mean plus a linear map of the
    visible view-1 token under each view-2 patch (where one is; the position mean alone elsewhere).

    It sees what the decoder sees (the online branch's visible tokens and the geometry), fitted by
    ridge regression on other images, so it shows how much of the targets' content beyond position
    a linear read of the right token already recovers: a decoder level with the content-blind rule
    but far above this one has the content at hand and does not route it.
    ``weight`` (D_in + 1, D) maps [token, 1] to the target's offset from its position mean.
    """

    position: PositionMean  # fitted on the same images; its shrink is the loss-optimal one here too
    weight: torch.Tensor

    @classmethod
    def fit(cls, matched: torch.Tensor, visible: torch.Tensor, targets: torch.Tensor, position: PositionMean,
            ridge: float = 100.0) -> "MatchedReadout":
        """matched (B, N, D_in): the visible view-1 token under each view-2 patch; visible (B, N) bool:
        where there is one; targets (B, N, D) of the fitting images (never the scored ones), on which
        ``position`` was fitted."""
        x = _with_bias(matched.float()[visible])
        y = (targets.float() - position.means[None])[visible]
        return cls(position, torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1]), x.T @ y))

    def predict(self, matched: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """(B, N, D): ``shrink (means_n + [visible] W [token, 1])``, shrunk as SiM's loss rewards."""
        offset = (_with_bias(matched.float()) @ self.weight) * visible[..., None]
        return (self.position.means[None] + offset) @ self.position.shrink.T


def _with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype)], dim=-1)


def image_mean_prediction(target: torch.Tensor) -> torch.Tensor:
    """Oracle: each image's own mean target token at every patch. (B, N, D) -> (B, N, D).

    It reads the scored targets, so it is no predictor; it shows how far an
    image-level code (what SiM's targets share across a view) goes."""
    return target.float().mean(1, keepdim=True).expand_as(target)


def position_plus_image_prediction(target: torch.Tensor, position: PositionMean) -> torch.Tensor:
    """Oracle: the fitted position mean plus each image's own offset from the mean token, the best
    additive code of position and image identity. (B, N, D) -> (B, N, D)."""
    offset = target.float().mean(1, keepdim=True) - position.means.mean(0)  # (B, 1, D)
    return position.means[None] + offset


# ---------------------------------------------------------------------------- scores
def score_by_region(pred: torch.Tensor, target: torch.Tensor, regions: torch.Tensor, neg_weight: float,
                    names: Sequence[str]) -> dict:
    """SiM's loss, its terms and the cosine of ``pred`` against ``target``, per region and overall.

    pred, target: (B, N, D); regions: (B, N) long codes indexing ``names``. F is the
    correlation of *all* scored targets, as in training, so the ``all`` entry equals
    :func:`simlab.loss.sim_loss` on the batch. Per token, with both terms divided by D:
    ``loss = pos + neg_weight * neg``. Returns ``{name: {loss, pos, neg, cosine, patches}}``.
    """
    D = pred.shape[-1]
    p, z = pred.float(), target.float()
    corr = target_correlation(z)
    pos = (p - z).pow(2).sum(-1) / D  # (B, N)
    neg = ((p @ corr) * p).sum(-1) / D
    cosine = F.cosine_similarity(p, z, dim=-1)
    out = {}
    for code, name in [(None, "all"), *enumerate(names)]:
        sel = torch.ones_like(regions, dtype=torch.bool) if code is None else regions == code
        n = int(sel.sum())
        if n == 0:
            out[name] = {"loss": float("nan"), "pos": float("nan"), "neg": float("nan"),
                         "cosine": float("nan"), "patches": 0}
            continue
        out[name] = {"loss": float((pos[sel] + neg_weight * neg[sel]).mean()), "pos": float(pos[sel].mean()),
                     "neg": float(neg[sel].mean()), "cosine": float(cosine[sel].mean()), "patches": n}
    return out


# ---------------------------------------------------------------------------- what the tokens encode
@torch.no_grad()
def variance_shares(tokens: torch.Tensor) -> dict:
    """Share of the variance of tokens (B, N, D) explained by grid position, by image, and neither.

    A balanced two-way decomposition (every image has every position):
    ``SS_total = SS_position + SS_image + SS_rest`` with ``SS_position = B sum_n |m_n - g|^2``,
    ``SS_image = N sum_b |c_b - g|^2`` (m_n: mean over images at position n, c_b: mean of
    image b, g: grand mean). The three shares sum to 1. Pure noise gives about
    (N - 1) / (B N) to position and 1 / N to image, not exactly 0.
    """
    x = tokens.float()
    B, N, _ = x.shape
    grand = x.mean((0, 1))
    total = (x - grand).pow(2).sum()
    if total <= 0:
        return {"position": 0.0, "image": 0.0, "rest": 0.0}
    position = B * (x.mean(0) - grand).pow(2).sum()
    image = N * (x.mean(1) - grand).pow(2).sum()
    pos_share, img_share = float(position / total), float(image / total)
    return {"position": pos_share, "image": img_share, "rest": max(0.0, 1.0 - pos_share - img_share)}


@torch.no_grad()
def rankme(features: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of the
    (uncentred) feature matrix (B, D). Between 1 (collapse to a line) and min(B, D)."""
    sv = torch.linalg.svdvals(features.float().reshape(-1, features.shape[-1]))
    p = sv / sv.sum().clamp(min=1e-12) + eps
    return float(torch.exp(-(p * p.log()).sum()))


# ---------------------------------------------------------------------------- correspondence floors
def same_index_matches(batch: int, n: int) -> torch.Tensor:
    """(B, N): every view-2 patch matched to the view-1 patch of the same grid index, as if the two
    crops were the same."""
    return torch.arange(n).expand(batch, n)


def random_patch_agreement(geometric: torch.Tensor, grid: int, tolerance: int = 1) -> float:
    """Exact expected agreement of a uniformly random view-1 patch with the geometric match: the mean,
    over view-2 patches inside view 1, of the share of the grid within ``tolerance`` patches
    (Chebyshev) of the truth. geometric: (B, N) view-1 patch index, -1 outside."""
    g = geometric[geometric >= 0]
    if g.numel() == 0:
        return float("nan")
    r, c = g // grid, g % grid
    rows = torch.minimum(r + tolerance, torch.tensor(grid - 1)) - torch.clamp(r - tolerance, min=0) + 1
    cols = torch.minimum(c + tolerance, torch.tensor(grid - 1)) - torch.clamp(c - tolerance, min=0) + 1
    return float((rows * cols).float().mean() / grid ** 2)
