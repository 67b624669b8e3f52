"""The embedded ``shapes`` dataset: procedural colour images whose class is a shape.

Every image holds one object of one of ten shapes. Its colour, texture,
background, position, size, rotation and pixel noise are random, so that the
class is a matter of *shape*, not of pixel values: raw-pixel k-NN stays far
below what a person gets (README, "Datasets"). Each image also has a per-pixel
mask (0 = background, class + 1 = object), which the dense probe uses.

Everything is a pure function of ``(seed, index)`` through keyed randomness
(``simlab.seeding``), rendered for a whole batch at once in torch at twice the
output resolution and average-pooled (anti-aliased edges). No file is read or
written. The design follows the procedural set described in FEASIBILITY.md.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .seeding import STREAM_CONTENT, keyed_normal, keyed_uniform, sample_keys

CLASSES = (
    "circle", "square", "triangle", "cross", "ring",
    "star", "ellipse", "diamond", "L-shape", "bar",
)

_SUPERSAMPLE = 2  # _pool assumes 2
_MAX_CLUTTER = 6
_NOISE_GRID = 8
_COLOUR_TRIES = 8
_MIN_CONTRAST = 0.45  # RGB distance between object colour and mean background colour

# Uniform draws per image, by purpose (offsets into one keyed vector).
_N_OBJ = 6            # class-free object pose: cx, cy, size, angle, stretch, texture kind
_N_COLOUR = 3 * _COLOUR_TRIES + 3 + 3    # candidates, second colour, stripe (freq, angle, phase)
_N_NOISE = _NOISE_GRID * _NOISE_GRID
_N_BG = 1 + 3 + 3 + 1 + 1 + _MAX_CLUTTER * 8 + 2  # kind, 2 colours, direction, count, rects, noise offset and sigma
_N_DISTRACT = 1 + 7 * 4                   # count, then (class, cx, cy, size, angle, colour x2) per distractor


class ShapesBatch(NamedTuple):
    images: torch.Tensor  # (B, 3, S, S) uint8
    labels: torch.Tensor  # (B,) int64
    masks: torch.Tensor   # (B, S, S) uint8: 0 background, class + 1 object


def _shape_test(k: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside test of shape class ``k`` at object-frame points (u, v), shape spanning ~[-1, 1]."""
    au, av = u.abs(), v.abs()
    if k == 0:  # circle
        return u * u + v * v <= 0.85 ** 2
    if k == 1:  # square
        return torch.maximum(au, av) <= 0.75
    if k == 2:  # equilateral triangle, inradius 0.5, outward edge normals at 90, 210 and 330 degrees
        inside = v <= 0.5
        for phi in (7 * math.pi / 6, 11 * math.pi / 6):
            inside &= (u * math.cos(phi) + v * math.sin(phi)) <= 0.5
        return inside
    if k == 3:  # plus-shaped cross
        return ((au <= 0.25) & (av <= 0.9)) | ((av <= 0.25) & (au <= 0.9))
    if k == 4:  # ring
        r2 = u * u + v * v
        return (r2 >= 0.5 ** 2) & (r2 <= 0.9 ** 2)
    if k == 5:  # five-pointed star: fold the angle into one spike and test the edge
        # from the outer vertex (1, 0) to the inner vertex at angle pi/5
        r = torch.sqrt(u * u + v * v)
        psi = torch.remainder(torch.atan2(v, u) + math.pi / 2, 2 * math.pi / 5) - math.pi / 5
        x, y = r * torch.cos(psi), (r * torch.sin(psi)).abs()
        ix, iy = 0.42 * math.cos(math.pi / 5), 0.42 * math.sin(math.pi / 5)
        return (x - 1.0) * iy - y * (ix - 1.0) <= 0
    if k == 6:  # ellipse
        return (u / 0.95) ** 2 + (v / 0.45) ** 2 <= 1
    if k == 7:  # elongated diamond
        return au / 0.95 + av / 0.45 <= 1
    if k == 8:  # L-shape
        return (au <= 0.7) & (((v >= 0.3) & (v <= 0.7)) | ((u <= -0.3) & (av <= 0.7)))
    if k == 9:  # thin bar
        return (au <= 0.95) & (av <= 0.15)
    raise ValueError(f"unknown shape class {k}")


def _inside(cls: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Which points lie inside each row's shape: cls (B,), u and v (B, P) -> (B, P) bool.

    Each class's test runs only on the rows of that class.
    """
    out = torch.zeros_like(u, dtype=torch.bool)
    for k in cls.unique().tolist():
        rows = (cls == k).nonzero().squeeze(1)
        out[rows] = _shape_test(k, u[rows], v[rows])
    return out


def _object_frame(px, py, cx, cy, size, angle, stretch):
    """Pixel coordinates (1, P) into an object's frame (B, P), rotated and stretched."""
    dx, dy = px - cx[:, None], py - cy[:, None]
    cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    u = (cos * dx + sin * dy) / size[:, None]
    v = (-sin * dx + cos * dy) / size[:, None]
    return u / stretch[:, None], v * stretch[:, None]


def render(indices: torch.Tensor, image_size: int = 32, seed: int = 0,
           num_classes: int = 10, distractors: int = 0) -> ShapesBatch:
    """Render the images with the given indices.

    indices: (B,) int64. ``distractors`` is the maximum number of small extra
    objects of random shape drawn behind the main one (0 = none, the default);
    the mask labels each visible distractor pixel with the distractor's own
    class + 1, while the image label is the main object's class.
    """
    if not 1 <= num_classes <= len(CLASSES):
        raise ValueError(f"shapes: num_classes must be in 1..{len(CLASSES)}, got {num_classes}")
    if not 0 <= distractors <= 4:
        raise ValueError(f"shapes: distractors must be in 0..4, got {distractors}")
    indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
    B, S = indices.numel(), image_size
    R = S * _SUPERSAMPLE
    keys = sample_keys(seed, 0, indices, STREAM_CONTENT)
    u = keyed_uniform(keys, _N_OBJ + _N_COLOUR + _N_NOISE + _N_BG + _N_DISTRACT).float()
    obj, u = u[:, :_N_OBJ], u[:, _N_OBJ:]
    col, u = u[:, :_N_COLOUR], u[:, _N_COLOUR:]
    noise_grid, u = u[:, :_N_NOISE], u[:, _N_NOISE:]
    bg, dis = u[:, :_N_BG], u[:, _N_BG:]

    labels = indices % num_classes
    coords = (torch.arange(R, dtype=torch.float32) + 0.5) / R
    py, px = torch.meshgrid(coords, coords, indexing="ij")
    px, py = px.reshape(1, -1), py.reshape(1, -1)  # (1, P)

    # --- background: solid, linear gradient, or clutter of rectangles -------
    kind = (bg[:, 0] * 3).long()
    b1, b2 = bg[:, 1:4], bg[:, 4:7]
    image = b1[:, :, None].expand(B, 3, R * R).clone()  # (B, 3, P)
    graded = (kind == 1).nonzero().squeeze(1)
    direction = bg[graded, 7] * 2 * math.pi
    t = ((px - 0.5) * torch.cos(direction)[:, None] + (py - 0.5) * torch.sin(direction)[:, None]) * 1.4 + 0.5
    t = t.clamp(0, 1)[:, None]  # (b, 1, P)
    image[graded] = b1[graded, :, None] * (1 - t) + b2[graded, :, None] * t
    colour_sum = b1 + (kind == 1).float()[:, None] * (b2 - b1) * 0.5  # mean background colour
    clutter = (kind == 2).nonzero().squeeze(1)
    n_rects = 2 + (bg[clutter, 8] * 5).long().clamp(max=4)
    rects = bg[clutter, 9:9 + _MAX_CLUTTER * 8].reshape(-1, _MAX_CLUTTER, 8)
    sub = image[clutter]
    for k in range(_MAX_CLUTTER):
        rk = rects[:, k]
        hw, hh = 0.04 + 0.14 * rk[:, 2], 0.04 + 0.14 * rk[:, 3]
        thin = rk[:, 4] < 0.3  # 30 % of rectangles are thin bars, either way round
        hw = torch.where(thin & (rk[:, 5] < 0.5), 0.01 + 0.02 * rk[:, 2], hw)
        hh = torch.where(thin & (rk[:, 5] >= 0.5), 0.01 + 0.02 * rk[:, 3], hh)
        inside = ((px - rk[:, 0:1]).abs() <= hw[:, None]) & ((py - rk[:, 1:2]).abs() <= hh[:, None])
        inside &= (k < n_rects)[:, None]
        sub = torch.where(inside[:, None], rk[:, 5:8, None], sub)
    image[clutter] = sub
    colour_sum = torch.where((kind == 2)[:, None], b1, colour_sum)

    # Objects are drawn back to front; each keeps the set of pixels where it is
    # visible, and a view pixel takes an object's label where that object covers
    # more than half of its supersampled area.
    layers: list[tuple[torch.Tensor, torch.Tensor]] = []  # (visible (B, P) bool, label (B,))

    # --- distractors: small objects of random shape, behind the main one -----
    if distractors > 0:
        n_dis = (dis[:, 0] * (distractors + 1)).long()
        params = dis[:, 1:].reshape(B, 7, 4)  # (B, param, distractor)
        for k in range(distractors):
            p = params[:, :, k]
            dcls = (p[:, 0] * num_classes).long().clamp(max=num_classes - 1)
            du, dv = _object_frame(px, py, 0.1 + 0.8 * p[:, 1], 0.1 + 0.8 * p[:, 2],
                                   0.08 + 0.06 * p[:, 3], p[:, 4] * 2 * math.pi, torch.ones(B))
            inside = _inside(dcls, du, dv) & (k < n_dis)[:, None]
            dcol = torch.stack([p[:, 5], p[:, 6], 1 - p[:, 5]], 1)
            image = torch.where(inside[:, None], dcol[:, :, None], image)
            layers = [(vis & ~inside, lab) for vis, lab in layers] + [(inside, dcls + 1)]

    # --- main object -----------------------------------------------------------
    cx, cy = 0.35 + 0.3 * obj[:, 0], 0.35 + 0.3 * obj[:, 1]
    size = 0.22 + 0.16 * obj[:, 2]
    angle = obj[:, 3] * 2 * math.pi
    stretch = torch.exp((obj[:, 4] - 0.5) * 0.2)  # aspect <= 1.22: a circle never passes for an ellipse
    ou, ov = _object_frame(px, py, cx, cy, size, angle, stretch)
    inside = _inside(labels, ou, ov)  # (B, P)

    # object colour: the first candidate far enough from the background, else the farthest
    cand = col[:, :3 * _COLOUR_TRIES].reshape(B, _COLOUR_TRIES, 3)
    dist = (cand - colour_sum[:, None]).norm(dim=-1)  # (B, tries)
    ok = dist >= _MIN_CONTRAST
    first = torch.where(ok.any(1), ok.float().argmax(1), dist.argmax(1))
    c1 = cand[torch.arange(B), first]  # (B, 3)
    c2 = (c1 + (col[:, 3 * _COLOUR_TRIES:3 * _COLOUR_TRIES + 3] - 0.5) * 0.9).clamp(0, 1)
    fq, fa, fp = col[:, -3:].unbind(1)
    texture = (obj[:, 5] * 3).long()  # 0 solid, 1 stripes, 2 smooth value noise
    mix = torch.zeros(B, R * R)  # per pixel: 0 = first colour, 1 = second colour
    striped = (texture == 1).nonzero().squeeze(1)
    fq, fa, fp = col[striped, -3:].unbind(1)
    along = ou[striped] * torch.cos(fa * math.pi)[:, None] + ov[striped] * torch.sin(fa * math.pi)[:, None]
    mix[striped] = (torch.sin(along * math.pi * (3 + 6 * fq)[:, None] + fp[:, None] * 2 * math.pi) > 0).float()
    noisy = (texture == 2).nonzero().squeeze(1)
    grid = noise_grid[noisy].reshape(-1, 1, _NOISE_GRID, _NOISE_GRID)
    mix[noisy] = F.interpolate(grid, size=(R, R), mode="bilinear", align_corners=False).reshape(len(noisy), R * R)
    ocol = c1[:, :, None] + (c2 - c1)[:, :, None] * mix[:, None]  # (B, 3, P)
    image = torch.where(inside[:, None], ocol, image)
    layers = [(vis & ~inside, lab) for vis, lab in layers] + [(inside, labels + 1)]

    # --- anti-alias, mask by majority coverage, pixel noise --------------------
    image = _pool(image.reshape(B, 3, R, R))  # (B, 3, S, S)
    mask = torch.zeros(B, S, S, dtype=torch.uint8)
    for visible, lab in layers:
        cover = _pool(visible.reshape(B, 1, R, R).float())[:, 0]
        mask = torch.where(cover > 0.5, lab.to(torch.uint8)[:, None, None], mask)
    sigma = 0.06 * bg[:, -1]
    # Pixel noise: a window, at a keyed offset, into one fixed table of normals
    # (a gather instead of 3 S^2 fresh draws per image).
    table = _noise_table()
    start = (bg[:, -2] * (table.numel() - 3 * S * S)).long()
    noise = table[start[:, None] + torch.arange(3 * S * S)].reshape(B, 3, S, S)
    image = (image + sigma[:, None, None, None] * noise).clamp(0, 1)
    images = (image * 255).round().to(torch.uint8)
    return ShapesBatch(images, labels, mask)


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Average over 2x2 supersampling cells: (B, C, R, R) -> (B, C, R/2, R/2).

    Two strided adds: much faster on CPU than a mean over non-adjacent dims.
    """
    x = x[..., 0::2] + x[..., 1::2]
    return (x[..., 0::2, :] + x[..., 1::2, :]) * 0.25


@functools.lru_cache(maxsize=1)
def _noise_table() -> torch.Tensor:
    """2^20 standard normals, the same on every machine (keyed, not from a global RNG)."""
    return keyed_normal(np.arange(1, dtype=np.uint64), 1 << 20)[0].float()
