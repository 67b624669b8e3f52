"""Two views of an image with their exact geometry (SIM_SPEC.md sections 2 and 4).

A view is a box of the source image resampled to a square, then mirrored when
flipped. :class:`ViewGeometry` records the box in the *un-flipped* source's
pixel coordinates with continuous edges: it covers [left, left + width) x
[top, top + height), and source pixel (i, j) has its centre at (i + 0.5, j + 0.5).
From two geometries, :func:`relative_coords` places every view-2 patch centre in
view 1's patch grid, which is what SiM's decoder queries are built from.

Crop-then-mirror (rather than the official flip-then-crop) gives the same
distribution of views; the mapping below is derived for it and tested against
explicit pixel geometry (tests/test_views.py), as SIM_SPEC.md pitfall 1 asks.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Union

import torch
from torchvision.ops import roi_align

from .augment import PHOTO_DRAWS, apply_photometric, sample_photometric
from .config import AugConfig
from .seeding import STREAM_VIEW1, STREAM_VIEW2, keyed_uniform, sample_keys

_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries this many boxes before its fallback
GEOM_DRAWS = 2 * _ATTEMPTS + 3  # uniforms per view consumed by sample_geometry


class ViewGeometry(NamedTuple):
    """A batch of views: boxes in source pixels, float (B,) each, and ``flipped`` bool (B,)."""

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flipped: torch.Tensor

    def to(self, device) -> "ViewGeometry":
        return ViewGeometry(*(t.to(device) for t in self))

    def select(self, idx) -> "ViewGeometry":
        """A sub-batch (by index tensor, slice or bool mask)."""
        return ViewGeometry(*(t[idx] for t in self))

    @staticmethod
    def cat(geoms: Sequence["ViewGeometry"]) -> "ViewGeometry":
        return ViewGeometry(*(torch.cat(parts) for parts in zip(*geoms)))


def _source_of_view_points(g: ViewGeometry, fy: torch.Tensor, fx: torch.Tensor):
    """Source coordinates of view points given as fractions of the view (B, N) each."""
    top, left, h, w = (t.double()[:, None] for t in g[:4])
    fx = torch.where(g.flipped[:, None], 1.0 - fx, fx)
    return top + fy * h, left + fx * w


def relative_coords(g1: ViewGeometry, g2: ViewGeometry, grid: int) -> torch.Tensor:
    """Centre of every view-2 patch in view 1's patch grid.

    Returns (B, grid*grid, 2) float32 (row, col), view-2 patches in row-major
    order; view-1 patch (r, c) sits at exactly (r, c). Computed in float64.
    Points outside view 1 get coordinates outside [0, grid - 1]: there is no
    overlap filtering (SIM_SPEC.md section 2).
    """
    centres = (torch.arange(grid, dtype=torch.float64, device=g1.top.device) + 0.5) / grid
    fy = centres.repeat_interleave(grid)[None]  # (1, N): row fraction of each view-2 patch
    fx = centres.repeat(grid)[None]
    sy, sx = _source_of_view_points(g2, fy, fx)  # (B, N) source pixels
    top, left, h, w = (t.double()[:, None] for t in g1[:4])
    vy, vx = (sy - top) / h, (sx - left) / w  # fractions of view 1, before its mirror
    vx = torch.where(g1.flipped[:, None], 1.0 - vx, vx)
    return torch.stack([vy * grid - 0.5, vx * grid - 0.5], dim=-1).float()


def relative_scales(g1: ViewGeometry, g2: ViewGeometry) -> torch.Tensor:
    """(B, 2) float32: ``log(h2 / h1), log(w2 / w1)``, the relative zoom of view 2."""
    return torch.stack([torch.log(g2.height.double() / g1.height.double()),
                        torch.log(g2.width.double() / g1.width.double())], dim=-1).float()


def overlap_fraction(g1: ViewGeometry, g2: ViewGeometry) -> torch.Tensor:
    """(B,) fraction of view 2's area that view 1 also covers (flips do not matter)."""
    def span(a0, a1, b0, b1):
        return (torch.minimum(a1, b1) - torch.maximum(a0, b0)).clamp(min=0)
    t1, l1, h1, w1 = (t.double() for t in g1[:4])
    t2, l2, h2, w2 = (t.double() for t in g2[:4])
    inter = span(t1, t1 + h1, t2, t2 + h2) * span(l1, l1 + w1, l2, l2 + w2)
    return (inter / (h2 * w2)).float()


def relative_tuple(g1: ViewGeometry, g2: ViewGeometry, i: int = 0) -> dict:
    """Sample ``i``'s relative tuple as the official dataset returns it (offsets of view 2's corner in
    units of view 1's size, scale ratios, relative flip) and the overlap fraction, as Python numbers."""
    t1, l1, h1, w1 = (float(t[i]) for t in g1[:4])
    t2, l2, h2, w2 = (float(t[i]) for t in g2[:4])
    one = slice(i, i + 1)
    return {"di": (t2 - t1) / h1, "dj": (l2 - l1) / w1, "sh": h2 / h1, "sw": w2 / w1,
            "flip": bool(g1.flipped[i]) != bool(g2.flipped[i]),
            "overlap": float(overlap_fraction(g1.select(one), g2.select(one))[0])}


def sample_geometry(u: torch.Tensor, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                    flip_p: float = 0.5) -> ViewGeometry:
    """RandomResizedCrop boxes and flips from uniforms ``u`` (B, GEOM_DRAWS).

    ``height``/``width`` are the source sizes (scalars or (B,)). Like torchvision,
    up to 10 (area, log-ratio) draws are tried and the first box that fits is
    kept; otherwise the whole image is cropped to the nearest allowed ratio,
    centred. Unlike torchvision, boxes are not rounded to whole pixels.
    """
    u = u.double()
    B = u.shape[0]
    H = torch.as_tensor(height, dtype=torch.float64).expand(B)
    W = torch.as_tensor(width, dtype=torch.float64).expand(B)
    area = (H * W)[:, None]
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, 0:_ATTEMPTS])
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, _ATTEMPTS:2 * _ATTEMPTS]
    aspect = torch.exp(log_r)
    w = torch.sqrt(target * aspect)
    h = torch.sqrt(target / aspect)
    fits = (w <= W[:, None]) & (h <= H[:, None])
    first = fits.double().argmax(1)
    rows = torch.arange(B)
    hit = fits.any(1)
    # fallback: whole image, clipped to the allowed ratio range (torchvision's rule)
    in_ratio = W / H
    fw = torch.where(in_ratio < ratio[0], W, torch.where(in_ratio > ratio[1], H * ratio[1], W))
    fh = torch.where(in_ratio < ratio[0], W / ratio[0], torch.where(in_ratio > ratio[1], H, H))
    bw = torch.where(hit, w[rows, first], fw)
    bh = torch.where(hit, h[rows, first], fh)
    top = torch.where(hit, (H - bh) * u[:, -3], (H - bh) / 2)
    left = torch.where(hit, (W - bw) * u[:, -2], (W - bw) / 2)
    flipped = u[:, -1] < flip_p
    return ViewGeometry(top.float(), left.float(), bh.float(), bw.float(), flipped)


def full_geometry(batch: int, height: float, width: float) -> ViewGeometry:
    """Views that are the whole image, un-flipped."""
    z = torch.zeros(batch)
    return ViewGeometry(z, z.clone(), torch.full((batch,), float(height)),
                        torch.full((batch,), float(width)), torch.zeros(batch, dtype=torch.bool))


ImageBatch = Union[torch.Tensor, Sequence[torch.Tensor]]


def crop_views(images: ImageBatch, geom: ViewGeometry, size: int) -> torch.Tensor:
    """Resample each box to ``size`` x ``size`` and mirror flipped views.

    images: uint8 or float (B, C, H, W), or a list of (C, H_i, W_i) of any sizes.
    Returns float32 (B, C, size, size) in [0, 1] on the images' device.
    Bilinear sampling through ``roi_align(aligned=True)``, which puts pixel
    centres at half-integers like :class:`ViewGeometry`; it averages
    ceil(box / size) samples per output pixel and per axis, so downscaling is
    anti-aliased. (The official code resizes with PIL's bicubic filter.)
    """
    if isinstance(images, torch.Tensor):
        x = images.float()
        boxes = torch.stack([torch.arange(len(x), dtype=torch.float32, device=x.device),
                             geom.left, geom.top, geom.left + geom.width, geom.top + geom.height],
                            dim=1).to(x.device, torch.float32)
        out = roi_align(x, boxes, output_size=(size, size), spatial_scale=1.0,
                        sampling_ratio=-1, aligned=True)
        if images.dtype == torch.uint8:
            out = out.mul_(1.0 / 255)  # after resampling: fewer pixels to scale
    else:
        out = torch.cat([crop_views(img[None], geom.select(slice(i, i + 1)), size) for i, img in enumerate(images)])
        return out
    rows = geom.flipped.to(out.device).nonzero().squeeze(1)
    if rows.numel():  # mirror only the flipped views (torch.where over the batch costs ~10x on a CPU)
        out[rows] = out[rows].flip(-1)
    return out


def image_sizes(images: ImageBatch) -> torch.Tensor:
    """(B, 2) float64 (height, width) of a batch (B, C, H, W) or a list of (C, H_i, W_i)."""
    if isinstance(images, torch.Tensor):
        return torch.tensor(images.shape[-2:], dtype=torch.float64).expand(len(images), 2)
    return torch.tensor([img.shape[-2:] for img in images], dtype=torch.float64)


class TwoViews(NamedTuple):
    view1: torch.Tensor  # (B, C, S, S) float32, normalised: the online (masked) view
    view2: torch.Tensor  # (B, C, S, S) float32, normalised: the target view
    geom1: ViewGeometry
    geom2: ViewGeometry


class TwoViewTransform:
    """SiM's asymmetric two-view augmentation for a batch of images.

    Each sample's boxes, flips and photometric draws come from keys of
    ``(seed, epoch, index)`` (DESIGN.md "Randomness"), so a sample gets the same
    views whether it is processed alone or in any batch, worker or rank.
    """

    def __init__(self, aug: AugConfig, image_size: int, mean: Sequence[float], std: Sequence[float],
                 seed: int = 0):
        aug.validate()
        self.aug, self.size, self.seed = aug, image_size, seed
        self.mean = torch.tensor(aug.mean if aug.mean is not None else mean, dtype=torch.float32)
        self.std = torch.tensor(aug.std if aug.std is not None else std, dtype=torch.float32)

    def draws(self, indices: torch.Tensor, epoch: int, view: int) -> torch.Tensor:
        """(B, GEOM_DRAWS + PHOTO_DRAWS) float64 uniforms of one view of these samples."""
        stream = STREAM_VIEW1 if view == 0 else STREAM_VIEW2
        return keyed_uniform(sample_keys(self.seed, epoch, indices, stream), GEOM_DRAWS + PHOTO_DRAWS)

    def geometry(self, indices: torch.Tensor, epoch: int, sizes: torch.Tensor) -> tuple[ViewGeometry, ViewGeometry]:
        """Boxes of both views; ``sizes`` is (B, 2) source (height, width)."""
        return tuple(self._geometry(self.draws(indices, epoch, v), sizes) for v in (0, 1))

    def _geometry(self, u: torch.Tensor, sizes: torch.Tensor) -> ViewGeometry:
        a = self.aug
        return sample_geometry(u[:, :GEOM_DRAWS], sizes[:, 0], sizes[:, 1], a.crop_scale, a.crop_ratio, a.flip_p)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        if len(mean) != x.shape[1]:
            raise ValueError(f"normalisation has {len(mean)} channels but the images have {x.shape[1]}")
        return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    def __call__(self, images: ImageBatch, indices, epoch: int = 0,
                 geoms: Optional[tuple[ViewGeometry, ViewGeometry]] = None) -> TwoViews:
        """images: uint8 (B, C, H, W) or a list of (C, H, W); indices: (B,) sample indices.

        Given ``geoms``, those boxes are used instead of sampled ones (photometric draws unchanged)."""
        indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        sizes = image_sizes(images)
        views, used = [], []
        for v in (0, 1):
            u = self.draws(indices, epoch, v)
            g = self._geometry(u, sizes) if geoms is None else geoms[v]
            photo = sample_photometric(u[:, GEOM_DRAWS:], self.aug, v, self.size)
            views.append(self.normalise(apply_photometric(crop_views(images, g, self.size), photo)))
            used.append(g)
        return TwoViews(views[0], views[1], used[0], used[1])
