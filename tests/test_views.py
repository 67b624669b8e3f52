"""Views against explicit pixel geometry (SIM_SPEC.md section 2 and pitfall 1)."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF

from simlab.augment import (adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation,
                            gaussian_blur, grey, sample_photometric, solarize, PHOTO_DRAWS)
from simlab.config import AugConfig
from simlab.pos_embed import grid_coords
from simlab.views import (GEOM_DRAWS, TwoViewTransform, ViewGeometry, overlap_fraction, relative_coords,
                          relative_scales, sample_geometry)

# the check's pieces live in the package (simlab.bench.geometry), so the GPU check runs the same maths
from simlab.bench.geometry import G, H, W, make_views, pixel_truth

# the geometry holds wherever the views are made: the loader's CPU and, where there is one, the GPU
# (device-side augmentation runs the same transform there)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def geom(rows):
    t = torch.tensor(rows, dtype=torch.float32)
    return ViewGeometry(t[:, 0], t[:, 1], t[:, 2], t[:, 3], t[:, 4].bool())


def check(g1, g2, min_valid=0.3, device="cpu"):
    v1, v2 = make_views(g1, g2, device=device)
    truth, valid = pixel_truth(v1, v2, g1, g2)
    assert valid.float().mean() >= min_valid, "too few patches could be checked"
    rc = relative_coords(g1, g2, G)
    err = (rc - truth)[valid].abs().max().item()
    assert err < 0.02, f"relative_coords is off the pixels by {err:.4f} patch"  # well under 0.1 patch


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("flips", [(False, False), (True, False), (False, True), (True, True)])
def test_random_boxes_every_flip_combination(flips, device):
    u = torch.rand(24, GEOM_DRAWS, generator=torch.Generator().manual_seed(sum(flips) * 10 + flips[0]),
                   dtype=torch.float64)
    g1 = sample_geometry(u[:12], H, W, (0.2, 1.0))
    g2 = sample_geometry(u[12:], H, W, (0.2, 1.0))
    g1 = g1._replace(flipped=torch.full((12,), flips[0]))
    g2 = g2._replace(flipped=torch.full((12,), flips[1]))
    check(g1, g2, device=device)


@pytest.mark.parametrize("device", DEVICES)
def test_non_square_upsampled_and_non_overlapping_boxes(device):
    # top, left, height, width, flipped
    check(geom([[5.3, 7.1, 40.2, 22.7, 0], [10.0, 20.0, 12.5, 9.0, 1], [2.0, 3.0, 30.0, 60.0, 1]]),
          geom([[12.0, 15.5, 20.3, 50.1, 1], [11.0, 21.5, 9.0, 13.0, 0], [20.0, 10.0, 33.0, 20.0, 0]]), device=device)
    # boxes smaller than the 32-px output: upsampling
    check(geom([[20.0, 30.0, 10.0, 12.0, 0], [20.0, 30.0, 8.0, 8.0, 1]]),
          geom([[22.0, 31.0, 7.0, 9.0, 1], [21.0, 33.0, 9.5, 6.0, 1]]), device=device)
    # views that do not overlap at all: coordinates leave the grid, and still match the pixels
    g1, g2 = geom([[3.0, 3.0, 20.0, 25.0, 0], [35.0, 50.0, 20.0, 25.0, 1]]), \
        geom([[33.0, 48.0, 22.0, 28.0, 1], [3.0, 3.0, 15.0, 20.0, 0]])
    assert torch.all(overlap_fraction(g1, g2) == 0)
    rc = relative_coords(g1, g2, G)
    assert (rc.abs() > G).any()
    check(g1, g2, device=device)


def test_identical_geometries_give_the_integer_grid():
    u = torch.rand(50, GEOM_DRAWS, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = sample_geometry(u, H, W)
    rc = relative_coords(g, g, G)
    assert torch.allclose(rc, grid_coords(G).expand(50, -1, -1), atol=1e-5)
    assert torch.equal(relative_scales(g, g), torch.zeros(50, 2))
    assert torch.allclose(overlap_fraction(g, g), torch.ones(50))


def test_flip_mirrors_the_column_and_scale_doubles_the_spacing():
    g1 = geom([[10.0, 10.0, 30.0, 30.0, 0]])
    g2 = geom([[10.0, 10.0, 30.0, 30.0, 1]])
    rc = relative_coords(g1, g2, G)[0].view(G, G, 2)
    assert torch.allclose(rc[..., 1], (G - 1) - grid_coords(G).view(G, G, 2)[..., 1], atol=1e-5)
    assert torch.allclose(rc[..., 0], grid_coords(G).view(G, G, 2)[..., 0], atol=1e-5)
    big = geom([[10.0, 10.0, 60.0, 60.0, 0]])
    rc2 = relative_coords(g1, big, G)[0].view(G, G, 2)
    spacing1 = relative_coords(g1, g1, G)[0].view(G, G, 2).diff(dim=1)[..., 1]
    assert torch.allclose(rc2.diff(dim=1)[..., 1], 2 * spacing1, atol=1e-5)
    assert torch.allclose(relative_scales(g1, big), torch.full((1, 2), math.log(2.0)))


def test_sampled_boxes_follow_random_resized_crop():
    u = torch.rand(4000, GEOM_DRAWS, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g = sample_geometry(u, 375, 500, (0.08, 1.0), (3 / 4, 4 / 3))
    assert (g.top >= 0).all() and (g.left >= 0).all()
    assert (g.top + g.height <= 375 + 1e-3).all() and (g.left + g.width <= 500 + 1e-3).all()
    frac = g.height * g.width / (375 * 500)
    assert frac.min() >= 0.08 - 1e-4 and frac.max() <= 1 + 1e-4
    ratio = g.width / g.height
    assert ratio.min() >= 3 / 4 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
    assert abs(g.flipped.float().mean().item() - 0.5) < 0.03
    # a tall image whose allowed boxes rarely fit falls back to a centred, ratio-clipped crop
    tall = sample_geometry(u[:100], 1000, 10, (0.99, 1.0), (3 / 4, 4 / 3))
    assert torch.allclose(tall.width, torch.full((100,), 10.0)) and torch.allclose(tall.height, torch.full((100,), 40 / 3))


def test_transform_is_deterministic_per_sample():
    from simlab.data import build_dataset
    images = build_dataset("shapes", size=16).tensors()["images"]
    tf = TwoViewTransform(AugConfig(), 32, (0.5,) * 3, (0.25,) * 3, seed=5)
    whole = tf(images, torch.arange(16), epoch=3)
    part = tf(images[5:9], torch.arange(5, 9), epoch=3)
    assert torch.allclose(whole.view1[5:9], part.view1, atol=1e-6)
    assert torch.allclose(whole.view2[5:9], part.view2, atol=1e-6)
    other_epoch = tf(images, torch.arange(16), epoch=4)
    assert not torch.allclose(whole.view1, other_epoch.view1)
    # a list of images of any size goes through the same path
    listed = tf(list(images[5:9]), torch.arange(5, 9), epoch=3)
    assert torch.allclose(listed.view1, part.view1, atol=1e-6)


def test_photometric_ops_match_torchvision_per_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 24, 24, generator=g)
    f = torch.tensor([0.6, 0.8, 1.0, 1.2, 1.4, 0.9])
    h = torch.tensor([-0.1, -0.05, 0.0, 0.03, 0.1, 0.5])
    sigma = torch.tensor([0.1, 0.4, 0.8, 1.2, 1.6, 2.0])
    radius = math.ceil(3 * 2.0)
    mine = {
        "brightness": adjust_brightness(x, f), "contrast": adjust_contrast(x, f),
        "saturation": adjust_saturation(x, f), "hue": adjust_hue(x, h), "blur": gaussian_blur(x, sigma),
    }
    for i in range(6):
        ref = {
            "brightness": TF.adjust_brightness(x[i], float(f[i])),
            "contrast": TF.adjust_contrast(x[i], float(f[i])),
            "saturation": TF.adjust_saturation(x[i], float(f[i])),
            "hue": TF.adjust_hue(x[i], float(h[i])),
            "blur": TF.gaussian_blur(x[i], [2 * radius + 1] * 2, [float(sigma[i])] * 2),
        }
        for name, r in ref.items():
            err = (mine[name][i] - r).abs().max().item()
            assert err < 1e-5, f"{name}: off torchvision by {err}"
    assert torch.equal(solarize(x), TF.solarize(x, 128 / 255))
    assert torch.allclose(grey(x), TF.rgb_to_grayscale(x), atol=1e-6)


def test_the_views_are_asymmetric_as_in_sim():
    u = torch.rand(20000, PHOTO_DRAWS, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    aug = AugConfig()
    v1, v2 = sample_photometric(u, aug, 0, 224), sample_photometric(u, aug, 1, 224)
    assert v1.blur.all() and not v1.solarize.any()
    assert abs(v2.blur.float().mean() - 0.1) < 0.01 and abs(v2.solarize.float().mean() - 0.2) < 0.01
    assert abs(v1.jitter.float().mean() - 0.8) < 0.01 and abs(v1.grayscale.float().mean() - 0.2) < 0.01
    assert v1.sigma.min() >= 0.1 and v1.sigma.max() <= 2.0  # SiM's range at 224 px
    small = sample_photometric(u, aug, 0, 32)
    assert small.sigma.max() <= 2.0 * 32 / 224 + 1e-6  # scaled with the image size
    assert v1.hue.abs().max() <= 0.1 and v1.saturation.min() >= 0.8 and v1.brightness.min() >= 0.6


def test_grey_images_keep_one_channel():
    x = torch.randint(0, 255, (4, 1, 28, 28), dtype=torch.uint8)
    tf = TwoViewTransform(AugConfig(jitter_p=1.0), 32, (0.3,), (0.35,))
    out = tf(x, torch.arange(4))
    assert out.view1.shape == (4, 1, 32, 32) and torch.isfinite(out.view1).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_photometric_ops_on_the_device_match_the_cpu():
    device = "cuda"
    from simlab.augment import apply_photometric
    x = torch.rand(12, 3, 20, 20, generator=torch.Generator().manual_seed(3))
    u = torch.rand(12, PHOTO_DRAWS, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for view in (0, 1):
        p = sample_photometric(u, AugConfig(jitter_p=1.0), view, 20)
        cpu = apply_photometric(x, p)
        assert torch.allclose(apply_photometric(x.to(device), p).cpu(), cpu, atol=1e-5)
