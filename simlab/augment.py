"""SiM's photometric augmentation, batched, with per-sample parameters.

Follows ``DataAugmentationForSIM`` of the official code (SIM_SPEC.md section 4):
``RandomApply(ColorJitter(0.4, 0.4, 0.2, 0.1), p=0.8)``, ``RandomGrayscale(0.2)``,
``GaussianBlur`` (p = 1.0 on view 1, 0.1 on view 2), ``Solarize`` (p = 0 on view 1,
0.2 on view 2). The ops match torchvision's functional tensor ops (jitter in a
random order per sample, each step clamped to [0, 1]); they differ from the
official PIL pipeline in two documented ways: images stay float between ops
(no rounding to uint8 after each), and the blur is an exact separable Gaussian
(PIL's ``GaussianBlur`` approximates one with box filters).

Parameters are drawn from keyed uniforms (``simlab.seeding``), so a sample's
augmentation does not depend on its batch. Images are float (B, C, H, W) in
[0, 1]; C is 1 (grey: saturation, hue and grayscale are no-ops) or 3.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .config import AugConfig

PHOTO_DRAWS = 13  # uniforms per view consumed by sample_photometric

_GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


class PhotoParams(NamedTuple):
    """Per-sample photometric draws for one view; every field has leading dim B."""

    jitter: torch.Tensor      # (B,) bool: colour jitter applied
    brightness: torch.Tensor  # (B,) multiplicative factor
    contrast: torch.Tensor    # (B,) blend factor towards the mean grey
    saturation: torch.Tensor  # (B,) blend factor towards the grey image
    hue: torch.Tensor         # (B,) shift in turns, in [-hue, hue]
    order: torch.Tensor       # (B, 4) long: a permutation of (brightness, contrast, saturation, hue)
    grayscale: torch.Tensor   # (B,) bool
    blur: torch.Tensor        # (B,) bool
    sigma: torch.Tensor       # (B,) blur sigma in pixels
    solarize: torch.Tensor    # (B,) bool


def sample_photometric(u: torch.Tensor, aug: AugConfig, view: int, image_size: int) -> PhotoParams:
    """Map uniforms ``u`` (B, PHOTO_DRAWS) to parameters for view 0 (online) or 1 (target)."""
    def factor(x, strength):  # torchvision: uniform in [max(0, 1 - s), 1 + s]
        lo = max(0.0, 1.0 - strength)
        return lo + (1.0 + strength - lo) * x

    lo, hi = aug.sigma_range(image_size)
    return PhotoParams(
        jitter=u[:, 0] < aug.jitter_p,
        brightness=factor(u[:, 1], aug.brightness).float(),
        contrast=factor(u[:, 2], aug.contrast).float(),
        saturation=factor(u[:, 3], aug.saturation).float(),
        hue=((2 * u[:, 4] - 1) * aug.hue).float(),
        order=torch.argsort(u[:, 5:9], dim=1),
        grayscale=u[:, 9] < aug.grayscale_p,
        blur=u[:, 10] < aug.blur_p[view],
        sigma=(lo + (hi - lo) * u[:, 11]).float(),
        solarize=u[:, 12] < aug.solarize_p[view],
    )


def grey(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W) luma, as torchvision's rgb_to_grayscale."""
    if x.shape[1] == 1:
        return x
    w = x.new_tensor(_GREY).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f.view(-1, 1, 1, 1) * x + (1 - f.view(-1, 1, 1, 1)) * other).clamp(0, 1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, grey(x).mean(dim=(1, 2, 3), keepdim=True), f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return x if x.shape[1] == 1 else _blend(x, grey(x), f)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` turns (B,), as torchvision's HSV round trip does, in fewer passes.

    A hue rotation keeps each pixel's max and min channel (HSV's value and
    saturation), so only the hue is computed and the channels are rebuilt as
    ``max - (max - min) * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``
    for n = 5, 3, 1 (r, g, b): the closed form of HSV to RGB. Only arithmetic
    on float masks: on a CPU ``torch.where`` and ``max(dim)`` cost ~10x a multiply.
    """
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    inv = 1.0 / (delta + (delta == 0))  # grey pixels: delta 0, their hue term vanishes below
    is_r = (maxc == r).to(x.dtype)
    is_g = (maxc == g).to(x.dtype) * (1 - is_r)
    is_b = 1 - is_r - is_g
    # sextant position of the hue, in [-1, 5): r -> (g - b), g -> 2 + (b - r), b -> 4 + (r - g), over delta
    h6 = (is_r * (g - b) + is_g * (2 * delta + b - r) + is_b * (4 * delta + r - g)) * inv
    h6 = h6 + 6 * shift.to(x.dtype).view(-1, 1, 1)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = h6 + n
        k = k - 6 * torch.floor(k / 6)  # mod 6 (torch.remainder is ~4x slower on a CPU)
        out.append(maxc - delta * torch.minimum(k, 4 - k).clamp_(0, 1))
    return torch.stack(out, 1).clamp_(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample ``sigma`` (B,), reflect padding. The kernel reaches
    3 ``max_sigma`` (default: the largest sigma, read from ``sigma``; pass it to avoid a device sync)."""
    B, C, H, W = x.shape
    max_sigma = float(sigma.max()) if max_sigma is None else max_sigma
    radius = min(int(math.ceil(3 * max_sigma)), H - 1, W - 1)
    if radius < 1:
        radius = 1
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma.to(x.dtype)[:, None] ** 2))  # (B, K)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B*C, K)
    y = x.reshape(1, B * C, H, W)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=B * C)
    return y.reshape(B, C, H, W)


def solarize(x: torch.Tensor) -> torch.Tensor:
    """PIL's solarize at its default threshold 128: invert pixels at or above it (x -> 1 - x)."""
    m = (x >= 128 / 255).to(x.dtype)
    return x * (1 - m) + (1 - x) * m  # exact for m in {0, 1}; torch.where is ~10x slower on a CPU


_JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
_OP_FN = {"brightness": adjust_brightness, "contrast": adjust_contrast,
          "saturation": adjust_saturation, "hue": adjust_hue}


def _on_rows(x: torch.Tensor, rows: torch.Tensor, fn, *args) -> torch.Tensor:
    """Apply ``fn`` to the selected rows (a host bool mask (B,)) only, writing into ``x``; ``args``
    are per-sample host tensors. Rows are chosen on the host, so a GPU batch needs no sync here."""
    idx = rows.nonzero().squeeze(1)
    if idx.numel() == len(x):
        x.copy_(fn(x, *(a.to(x.device, non_blocking=True) for a in args)))
    elif idx.numel() > 0:
        dev_idx = idx.to(x.device, non_blocking=True)
        x[dev_idx] = fn(x[dev_idx], *(a[idx].to(x.device, non_blocking=True) for a in args))
    return x


def apply_photometric(x: torch.Tensor, p: PhotoParams) -> torch.Tensor:
    """Jitter (random order), grayscale, blur, solarize: (B, C, H, W) in [0, 1] -> same.

    ``p`` stays on the host (it is a few numbers per sample); the images may be on any device."""
    p = PhotoParams(*(t.cpu() for t in p))
    x = x.clone()  # the ops below write into their rows of x
    for position in range(4):
        for k, name in enumerate(_JITTER_OPS):
            rows = p.jitter & (p.order[:, position] == k)
            x = _on_rows(x, rows, _OP_FN[name], getattr(p, name))
    if x.shape[1] == 3:
        x = _on_rows(x, p.grayscale, lambda im: grey(im).expand(-1, 3, -1, -1))
    if p.blur.any():
        top = float(p.sigma[p.blur].max())
        x = _on_rows(x, p.blur, lambda im, sigma: gaussian_blur(im, sigma, top), p.sigma)
    x = _on_rows(x, p.solarize, solarize)
    return x
