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


# --------------------------------------------------------------------------- what the explorer says
def test_the_tuple_is_printed_once_and_the_figure_title_is_the_colour_key(explorer):
    from simlab.widgets import COLOUR_KEY
    assert explorer.text.value.count("Δi=") == 1
    assert explorer.figure._suptitle.get_text() == COLOUR_KEY and "Δi" not in COLOUR_KEY


def test_a_clipped_box_is_labelled_with_the_area_it_covers_and_a_stuck_slider_says_why(explorer):
    s = explorer.sliders
    s["scale2"].value, s["ratio2"].value = 1.0, 1.87
    _, _, h, w = box(explorer, 2)
    area = h * w / (explorer.H * explorer.W)
    assert area < 0.8  # 1.00 asked, about three quarters drawn
    labels = [t.get_text() for t in explorer.axes[0].texts]
    assert any(label.startswith("view 2") and f"{area:.0%} of the image" in label for label in labels), labels
    assert "clipped by the image's edge" in explorer.text.value
    assert "x changes nothing: the box spans the image's width" in explorer.text.value
    png = explorer.figure_png
    s["x2"].value = 0.9 if s["x2"].value < 0.5 else 0.1  # no room: the same picture, and the note says why
    assert explorer.figure_png == png
    s["scale2"].value, s["ratio2"].value = 0.45, 1.0
    assert "note" not in explorer.text.value


def test_box_labels_stay_apart_when_the_boxes_share_a_corner(explorer):
    s = explorer.sliders
    for k in ("scale", "ratio", "y", "x"):  # view 2 exactly on view 1: every corner shared
        s[f"{k}2"].value = s[f"{k}1"].value
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(explorer.figure).get_renderer()  # the figure is closed: no canvas of its own
    first, second = (t.get_window_extent(renderer) for t in explorer.axes[0].texts)
    assert not first.overlaps(second)


def test_dot_colours_follow_row_and_column_so_a_flip_shows(explorer):
    import numpy as np
    g = explorer.grid
    colours = explorer.axes[2].collections[0].get_facecolors()[:, :3].reshape(g, g, 3)
    mirrored = colours[:, ::-1]
    # every dot differs from its mirror image across the vertical axis (except the middle column of an
    # odd grid), and every row from the next
    assert np.abs(colours - mirrored)[:, : g // 2].sum(-1).min() > 0.05
    assert np.abs(np.diff(colours, axis=0)).sum(-1).min() > 0.01


def test_redraws_update_the_figure_in_place(explorer):
    counts = [(len(a.images), len(a.patches), len(a.texts), len(a.collections)) for a in explorer.axes]
    for v in (0.1, 0.5, 0.9):
        explorer.sliders["y1"].value = v
    assert [(len(a.images), len(a.patches), len(a.texts), len(a.collections)) for a in explorer.axes] == counts


def test_summary_is_rounded_for_reading_and_sliders_say_how_they_update(explorer):
    summary = explorer.summary()
    floats = [v for v in summary.values() if isinstance(v, float)]
    floats += [c for corner in summary["corners"].values() for c in corner]
    assert floats and all(round(v, 4) == v for v in floats)
    assert len(str(summary)) < 260  # no 16-digit floats
    live = explorer.live
    assert live == (explorer.redraw_s <= explorer.LIVE_REDRAW_S)
    assert all(w.continuous_update == live for k, w in explorer.sliders.items() if not k.startswith("flip"))
    assert ("while dragged" if live else "on release") in explorer.update_note.value


def test_plot_view_pair_alone_titles_the_figure_with_the_tuple():
    from simlab import viz
    from simlab.views import ViewGeometry
    t = lambda *a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    g1 = ViewGeometry(t(0.0), t(0.0), t(64.0), t(64.0), torch.tensor([False]))
    g2 = ViewGeometry(t(8.0), t(16.0), t(32.0), t(32.0), torch.tensor([True]))
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    fig = viz.plot_view_pair(image, g1, g2, torch.zeros(3, 32, 32), torch.zeros(3, 32, 32), 8)
    assert fig._suptitle.get_text() == viz.geometry_text(g1, g2)
    assert [t.get_text() for t in fig.axes[0].texts] == ["view 1: 100% of the image",
                                                         "view 2 (flipped): 25% of the image"]
    viz._pyplot().close(fig)


@pytest.mark.parametrize("headless", [False, True])
def test_live_curves_redraw_while_watched_and_only_at_close_when_headless(monkeypatch, headless):
    """Headless (simlab notebook, papermill) nobody sees the intermediate figures and only the last one
    is saved, so the redraws between records are skipped; the figure from close() has every record."""
    import IPython.display

    from simlab.live_curves import LiveCurves

    class Handle:  # what display(..., display_id=True) returns inside a kernel (None outside one)
        def update(self, *args, **kwargs):
            pass
    monkeypatch.setattr(IPython.display, "display", lambda *args, **kwargs: Handle())
    monkeypatch.setenv("SIMLAB_HEADLESS", "1") if headless else monkeypatch.delenv("SIMLAB_HEADLESS", raising=False)
    curves = LiveCurves(every_s=0.0, total=3)
    drawn = []
    real_draw = curves.draw
    monkeypatch.setattr(curves, "draw", lambda: drawn.append(len(curves.records)) or real_draw())
    for step in (1, 2, 3):
        curves({"step": step, "loss": 1.0 / step, "pos": 0.5, "neg": 1.0, "images_per_s": 100.0})
    curves.close()
    assert drawn == ([3] if headless else [1, 2, 3, 3])
