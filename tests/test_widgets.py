"""The view-geometry explorer driven headless: sliders moved and buttons pressed from Python, the figure
and the printed geometry checked against pixel geometry worked out here by hand."""

import re

import pytest
import torch

pytest.importorskip("ipywidgets")

from simlab.views import relative_coords  # noqa: E402
from simlab.widgets import ViewGeometryExplorer, box_from_controls, controls_from_box  # noqa: E402


@pytest.fixture(scope="module")
def explorer():
    return ViewGeometryExplorer("shapes", index=3, source_size=64, view_size=32, patch_size=4, stats_batch=64)


def printed(explorer) -> dict:
    """The numbers of the explorer's text, parsed back."""
    text = explorer.text.value
    out = {k: float(v) for k, v in re.findall(r"(Δi|Δj|sh|sw)=([+-]?[\d.]+)", text)}
    out["flip"] = re.search(r"flip=(yes|no)", text).group(1) == "yes"
    out["corners"] = {name: (float(r), float(c)) for name, r, c in
                      re.findall(r"([a-z-]+) → \(([-\d.]+), ([-\d.]+)\)", text)}
    return out


def box(explorer, v):
    s = explorer.sliders
    return box_from_controls(s[f"scale{v}"].value, s[f"ratio{v}"].value, s[f"y{v}"].value, s[f"x{v}"].value,
                             explorer.H, explorer.W)


def centre_in_view1(b1, flip1, b2, flip2, r, c, size=32, grid=8):
    """Pixel geometry, one point: view-2 patch (r, c)'s centre -> source pixel -> view-1 patch units."""
    p = size / grid
    y, x = (r + 0.5) * p, (c + 0.5) * p  # view-2 pixel coordinates
    if flip2:
        x = size - x
    t2, l2, h2, w2 = b2
    sy, sx = t2 + y * h2 / size, l2 + x * w2 / size  # source pixel
    t1, l1, h1, w1 = b1
    y1, x1 = (sy - t1) * size / h1, (sx - l1) * size / w1  # view-1 pixel
    if flip1:
        x1 = size - x1
    return y1 / p - 0.5, x1 / p - 0.5


def check_against_pixel_geometry(explorer):
    s = explorer.sliders
    b1, b2 = box(explorer, 1), box(explorer, 2)
    got = printed(explorer)
    assert got["Δi"] == pytest.approx((b2[0] - b1[0]) / b1[2], abs=6e-4)
    assert got["Δj"] == pytest.approx((b2[1] - b1[1]) / b1[3], abs=6e-4)
    assert got["sh"] == pytest.approx(b2[2] / b1[2], abs=6e-4)
    assert got["sw"] == pytest.approx(b2[3] / b1[3], abs=6e-4)
    assert got["flip"] == (s["flip1"].value != s["flip2"].value)
    for name, (r, c) in {"top-left": (0, 0), "top-right": (0, 7), "bottom-left": (7, 0),
                         "bottom-right": (7, 7)}.items():
        want = centre_in_view1(b1, s["flip1"].value, b2, s["flip2"].value, r, c)
        assert got["corners"][name] == pytest.approx(want, abs=6e-3), name
    # and the printed corners are relative_coords' own values for those patches
    coords = relative_coords(*explorer.geometry(), 8)[0]
    assert got["corners"]["bottom-right"] == pytest.approx(tuple(coords[63].tolist()), abs=6e-3)


def test_sliders_redraw_the_figure_and_the_printed_geometry_follows_pixel_geometry(explorer):
    check_against_pixel_geometry(explorer)
    before_png, before_text, redraws = explorer.figure_png, explorer.text.value, explorer.redraws
    explorer.sliders["x2"].value = 0.05
    explorer.sliders["scale1"].value = 0.35
    assert explorer.redraws == redraws + 2
    assert explorer.figure_png != before_png and explorer.image_widget.value == explorer.figure_png
    assert explorer.text.value != before_text
    check_against_pixel_geometry(explorer)
    flip_before = printed(explorer)["flip"]
    explorer.sliders["flip1"].value = not explorer.sliders["flip1"].value
    assert printed(explorer)["flip"] != flip_before
    check_against_pixel_geometry(explorer)


def test_mask_slider_and_new_mask_button(explorer):
    explorer.sliders["mask_ratio"].value = 0.25
    assert int(explorer.mask().sum()) == round(0.25 * 64)
    first, png = explorer.mask().clone(), explorer.figure_png
    explorer.new_mask.click()
    assert int(explorer.mask().sum()) == 16 and not torch.equal(explorer.mask(), first)
    assert explorer.figure_png != png
    explorer.sliders["mask_ratio"].value = 0.0
    assert not explorer.mask().any()


def test_resample_draws_the_augmentations_own_geometry(explorer):
    redraws = explorer.redraws
    explorer.resample.click()
    assert explorer.redraws == redraws + 1  # the sliders move without a redraw each
    sizes = torch.tensor([[explorer.H, explorer.W]], dtype=torch.float64)
    want = explorer.transform.geometry(torch.tensor([explorer.draw]), 0, sizes)
    for got_g, want_g in zip(explorer.geometry(), want):
        for a, b in zip(got_g[:4], want_g[:4]):
            assert float(a[0]) == pytest.approx(float(b[0]), abs=1e-3)
        assert bool(got_g.flipped[0]) == bool(want_g.flipped[0])
    check_against_pixel_geometry(explorer)


def test_box_controls_round_trip():
    for scale, ratio, y, x in ((0.5, 1.3, 0.2, 0.9), (0.08, 0.75, 1.0, 0.0), (1.0, 1.0, 0.5, 0.5)):
        b = box_from_controls(scale, ratio, y, x, 64, 48)
        assert b[2] <= 64 and b[3] <= 48 and b[0] >= 0 and b[1] >= 0
        if b[2] < 64 and b[3] < 48:
            assert controls_from_box(*b, 64, 48) == pytest.approx((scale, ratio, y, x))
