"""The pixel-geometry check of the views, runnable on any device (SIM_SPEC.md section 2, pitfall 1).

An image whose pixels hold their own source coordinates goes through the real two-view
transform (photometric ops off) on the device under test; the centre of every view-2 patch is
then read back from the pixels and located in view 1's patch grid, and compared with what
``relative_coords`` says. ``tests/test_views.py`` states the same check for its tests; this copy
returns the error instead of asserting, so the GPU check (``simlab.bench.gpu``) can report it
for CUDA and its dry run for the CPU.
"""

from __future__ import annotations

import torch

from ..config import AugConfig
from ..views import GEOM_DRAWS, TwoViewTransform, ViewGeometry, relative_coords, sample_geometry

H, W, S, P = 60, 80, 32, 4  # source size, view size, patch size
G = S // P

NO_PHOTO = AugConfig(jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0),
                     mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def coordinate_image(h: int = H, w: int = W) -> torch.Tensor:
    """(3, h, w) float: pixel (i, j) holds (i + 0.5, j + 0.5, 0), its centre's source coordinates."""
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([yy, xx, torch.zeros_like(yy)])


def make_views(g1: ViewGeometry, g2: ViewGeometry, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Both views (B, 3, S, S) of coordinate images, made by the real transform on ``device``, on the CPU."""
    B = len(g1.top)
    images = coordinate_image()[None].expand(B, -1, -1, -1).contiguous().to(device)
    out = TwoViewTransform(NO_PHOTO, S, (0, 0, 0), (1, 1, 1))(images, torch.arange(B), geoms=(g1, g2))
    return out.view1.cpu(), out.view2.cpu()


def pixel_truth(view1: torch.Tensor, view2: torch.Tensor, g1: ViewGeometry,
                g2: ViewGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each view-2 patch centre lands in view 1's patch grid, read from the pixels alone.

    Returns (B, N, 2) positions and a (B, N) validity mask: patches touching pixels whose source
    footprint reaches the image border (where sampling clamps) are left out.
    """
    B = view1.shape[0]
    out = torch.full((B, G * G, 2), float("nan"))
    rows, cols = torch.meshgrid(torch.arange(S, dtype=torch.float64), torch.arange(S, dtype=torch.float64),
                                indexing="ij")
    for b in range(B):
        def usable(view, g):
            y, x = view[b, 0].double(), view[b, 1].double()
            my = float(g.height[b]) / S + 1.0  # footprint of one view pixel in source pixels, plus margin
            mx = float(g.width[b]) / S + 1.0
            return (y > my) & (y < H - my) & (x > mx) & (x < W - mx)

        # view 1 is affine per axis: fit source y against its row, x against its column
        ok1 = usable(view1, g1)
        if int(ok1.sum()) < 2:
            continue
        ay = torch.linalg.lstsq(torch.stack([rows[ok1], torch.ones_like(rows[ok1])], 1),
                                view1[b, 0].double()[ok1][:, None]).solution[:, 0]
        ax = torch.linalg.lstsq(torch.stack([cols[ok1], torch.ones_like(cols[ok1])], 1),
                                view1[b, 1].double()[ok1][:, None]).solution[:, 0]
        ok2 = usable(view2, g2)
        for r in range(G):
            for c in range(G):
                sl = (slice(r * P, (r + 1) * P), slice(c * P, (c + 1) * P))
                if not bool(ok2[sl].all()):
                    continue
                sy, sx = view2[b, 0][sl].double().mean(), view2[b, 1][sl].double().mean()  # patch centre, in source
                a = (sy - ay[1]) / ay[0]  # view-1 pixel index (centre of pixel k at k)
                bb = (sx - ax[1]) / ax[0]
                out[b, r * G + c] = torch.stack([(a + 0.5) / P - 0.5, (bb + 0.5) / P - 0.5]).float()
    return out, ~out[..., 0].isnan()


def _geom(rows) -> ViewGeometry:
    t = torch.tensor(rows, dtype=torch.float32)
    return ViewGeometry(t[:, 0], t[:, 1], t[:, 2], t[:, 3], t[:, 4].bool())


def geometry_cases(per_flip: int = 6, seed: int = 0) -> list[tuple[ViewGeometry, ViewGeometry]]:
    """Pairs of geometries: random boxes under each of the four flip combinations, plus the hand-made
    cases of the tests (non-square, upsampled, and non-overlapping boxes)."""
    cases = []
    for k, flips in enumerate([(False, False), (True, False), (False, True), (True, True)]):
        u = torch.rand(2 * per_flip, GEOM_DRAWS, generator=torch.Generator().manual_seed(seed * 10 + k),
                       dtype=torch.float64)
        g1 = sample_geometry(u[:per_flip], H, W, (0.2, 1.0))._replace(flipped=torch.full((per_flip,), flips[0]))
        g2 = sample_geometry(u[per_flip:], H, W, (0.2, 1.0))._replace(flipped=torch.full((per_flip,), flips[1]))
        cases.append((g1, g2))
    # top, left, height, width, flipped
    cases.append((_geom([[5.3, 7.1, 40.2, 22.7, 0], [10.0, 20.0, 12.5, 9.0, 1], [2.0, 3.0, 30.0, 60.0, 1]]),
                  _geom([[12.0, 15.5, 20.3, 50.1, 1], [11.0, 21.5, 9.0, 13.0, 0], [20.0, 10.0, 33.0, 20.0, 0]])))
    cases.append((_geom([[20.0, 30.0, 10.0, 12.0, 0], [20.0, 30.0, 8.0, 8.0, 1]]),  # smaller than 32 px: upsampled
                  _geom([[22.0, 31.0, 7.0, 9.0, 1], [21.0, 33.0, 9.5, 6.0, 1]])))
    cases.append((_geom([[3.0, 3.0, 20.0, 25.0, 0], [35.0, 50.0, 20.0, 25.0, 1]]),  # no overlap at all
                  _geom([[33.0, 48.0, 22.0, 28.0, 1], [3.0, 3.0, 15.0, 20.0, 0]])))
    return cases


def geometry_error(device="cpu", per_flip: int = 6, seed: int = 0) -> dict:
    """The largest distance, in patches, between where ``relative_coords`` puts a view-2 patch centre and
    where the pixels of views made on ``device`` put it, over :func:`geometry_cases`.

    Returns ``{"max_error_patches": float, "checked_patches": int, "checked_fraction": float}``;
    the tests hold the CPU to under 0.02 patch (a misplaced half-pixel is 0.125 patch here).
    """
    worst, checked, total = 0.0, 0, 0
    for g1, g2 in geometry_cases(per_flip, seed):
        v1, v2 = make_views(g1, g2, device)
        truth, valid = pixel_truth(v1, v2, g1, g2)
        rc = relative_coords(g1, g2, G)
        if valid.any():
            worst = max(worst, float((rc - truth)[valid].abs().max()))
        checked += int(valid.sum())
        total += valid.numel()
    return {"max_error_patches": worst, "checked_patches": checked, "checked_fraction": checked / max(total, 1)}
