"""The ipywidgets explorer of SiM's view geometry, live.

:class:`ViewGeometryExplorer` puts sliders on each view's crop (area scale,
aspect ratio, position) and flip, and on the mask ratio, and redraws the
view-pair figure of :func:`simlab.viz.plot_view_pair`: the source with both
boxes, the masked view 1 with every view-2 patch centre where
:func:`simlab.views.relative_coords` puts it, and view 2. The relative tuple
(offsets, scale ratios, flip) and the overlap are printed once, above it, with
notes where a slider cannot do what it says (a box clipped by the image's edge,
a position with no room to move).

The figure is rendered with Agg into an ``ipywidgets.Image`` (no ipympl
needed), so it redraws the same in JupyterLab, in a headless test and in a
browser. Everything a test needs is reachable from Python: change
``explorer.sliders[...]``, call ``explorer.resample.click()``, read
``explorer.text.value`` and ``explorer.figure_png``.

:class:`simlab.live_curves.LiveCurves` (live training curves) is importable from here too.
"""

from __future__ import annotations

import html
import math
import time
from typing import Optional

import torch

from . import viz
from .config import AugConfig
from .data import build_dataset
from .live_curves import LiveCurves, _png
from .masking import block_mask
from .views import TwoViewTransform, ViewGeometry, relative_coords, relative_tuple

# LiveCurves stays importable from here (notebooks 00 and 02 take it from simlab.widgets)
__all__ = ["box_from_controls", "controls_from_box", "geometry_summary", "slider_notes", "summary_html", "COLOUR_KEY",
           "ViewGeometryExplorer", "LiveCurves"]

def box_from_controls(scale: float, ratio: float, y: float, x: float, height: float, width: float
                      ) -> tuple[float, float, float, float]:
    """(top, left, h, w) of a box covering ``scale`` of the image area with aspect ``ratio`` = w / h,
    shrunk to fit, and placed at fractions ``y``, ``x`` of the room left around it."""
    area = scale * height * width
    w = min(math.sqrt(area * ratio), width)
    h = min(math.sqrt(area / ratio), height)
    return (height - h) * y, (width - w) * x, h, w


def controls_from_box(top: float, left: float, h: float, w: float, height: float, width: float
                      ) -> tuple[float, float, float, float]:
    """The inverse of :func:`box_from_controls` for a box that fits: (scale, ratio, y, x)."""
    y = top / (height - h) if height - h > 1e-9 else 0.5
    x = left / (width - w) if width - w > 1e-9 else 0.5
    return h * w / (height * width), w / h, y, x


def geometry_summary(g1: ViewGeometry, g2: ViewGeometry, grid: int) -> dict:
    """The numbers the explorer prints for sample 0: the official code's relative tuple, the overlap,
    and where view 2's corner patches land in view 1's grid (from :func:`relative_coords`), rounded to
    the 4 and 3 decimals worth reading (the float32 geometry carries no more)."""
    coords = relative_coords(g1.select(slice(0, 1)), g2.select(slice(0, 1)), grid)[0]  # (N, 2)
    corners = {"top-left": 0, "top-right": grid - 1, "bottom-left": grid * (grid - 1), "bottom-right": grid * grid - 1}
    rel = {k: round(float(v), 4) if isinstance(v, float) else v for k, v in relative_tuple(g1, g2, 0).items()}
    return {**rel, "corners": {name: tuple(round(float(v), 3) for v in coords[i]) for name, i in corners.items()}}


def slider_notes(controls: dict, height: float, width: float) -> list[str]:
    """What the crop sliders of one view cannot do at their current values, in words.

    ``controls`` holds ``scale``, ``ratio``, ``y``, ``x`` (as :func:`box_from_controls` takes them). A box
    at a large scale and a far-from-square ratio is clipped by the image's edge, so it covers less than
    the scale asks; a box as wide (tall) as the image has no room to move, so x (y) changes nothing."""
    _, _, h, w = box_from_controls(controls["scale"], controls["ratio"], controls["y"], controls["x"], height,
                                   width)
    notes = []
    area = h * w / (height * width)
    if area < controls["scale"] - 5e-3:
        notes.append(f"covers {area:.0%} of the image, not the {controls['scale']:.0%} its scale asks: at ratio "
                     f"{controls['ratio']:.2f} the box is clipped by the image's edge")
    for axis, side, room in (("x", "width", width - w), ("y", "height", height - h)):
        if room < 1e-6:
            notes.append(f"{axis} changes nothing: the box spans the image's {side}, so it has no room to move")
    return notes


def summary_html(s: dict, notes: Optional[dict] = None) -> str:
    """The explorer's text: the relative tuple (printed here only, not in the figure's title), the
    corner patches, and any ``notes`` ({view: [sentences]}) on what a slider cannot do."""
    corners = "  ".join(f"{k} → ({r:.2f}, {c:.2f})" for k, (r, c) in s["corners"].items())
    lines = [f"Δi={s['di']:+.3f}  Δj={s['dj']:+.3f}  sh={s['sh']:.3f}  sw={s['sw']:.3f}  "
             f"flip={'yes' if s['flip'] else 'no'}  overlap={s['overlap']:.1%}",
             f"view-2 corner patches in view-1's grid (row, col): {corners}"]
    lines += [f"note, view {v}: {note}" for v, view_notes in (notes or {}).items() for note in view_notes]
    return "<pre>" + html.escape("\n".join(lines), quote=False) + "</pre>"


# Shown as the figure's title in the explorer: the colour key (the tuple is in the text above it).
COLOUR_KEY = ("dots: view 2's patch centres, coloured by their (row, col) in view 2: blue top-left, "
              "red top-right, green bottom-left, yellow bottom-right")


class ViewGeometryExplorer:
    """Sliders for two crops and a mask over one source image; the view pair redrawn on every change.

    dataset/index: the source image (``shapes`` renders at ``source_size``, a crop of it is resampled
    to ``view_size``); ``aug``: the augmentation whose random geometry "resample" draws and whose
    batch statistics the histograms show.

    The sliders redraw while dragged when a redraw, timed here at start-up, takes at most
    ``LIVE_REDRAW_S``; on a machine where it takes longer they redraw on release (a queue of stale
    redraws would make a drag lag), and the explorer says which.
    """

    LIVE_REDRAW_S = 0.3

    def __init__(self, dataset: str = "shapes", index: int = 0, source_size: int = 64, view_size: int = 32,
                 patch_size: int = 4, aug: Optional[AugConfig] = None, data_root=None, seed: int = 0,
                 stats_batch: int = 2048):
        import ipywidgets as W

        self.aug = aug or AugConfig(crop_scale=(0.2, 1.0))
        ds = build_dataset(dataset, "train", data_root, image_size=source_size, size=index + 1, seed=seed)
        self.image = ds[index]["image"]  # (C, H, W) uint8
        self.H, self.W = (float(s) for s in self.image.shape[-2:])
        self.view_size, self.grid = view_size, view_size // patch_size
        self.transform = TwoViewTransform(self.aug, view_size, ds.mean, ds.std, seed=seed)
        self.draw, self.mask_seed, self.redraws = 0, seed, 0
        self._hold = False

        def slider(desc, lo, hi, value, step=0.01, log=False):
            cls = W.FloatLogSlider if log else W.FloatSlider
            kw = dict(base=2, min=math.log2(lo), max=math.log2(hi)) if log else dict(min=lo, max=hi)
            return cls(value=value, step=step, description=desc, continuous_update=False,  # set below
                       style={"description_width": "70px"}, layout=W.Layout(width="300px"), **kw)

        self.sliders = {}
        for v, (scale, y, x) in ((1, (0.6, 0.2, 0.2)), (2, (0.45, 0.7, 0.6))):
            self.sliders[f"scale{v}"] = slider(f"v{v} scale", 0.05, 1.0, scale)
            self.sliders[f"ratio{v}"] = slider(f"v{v} ratio", 0.5, 2.0, 1.0, step=0.05, log=True)
            self.sliders[f"y{v}"] = slider(f"v{v} y", 0.0, 1.0, y)
            self.sliders[f"x{v}"] = slider(f"v{v} x", 0.0, 1.0, x)
            self.sliders[f"flip{v}"] = W.Checkbox(value=v == 2, description=f"v{v} flipped", indent=False)
        self.sliders["mask_ratio"] = slider("mask", 0.0, 0.9, 0.6, step=0.05)
        self.resample = W.Button(description="resample", tooltip="draw the augmentation's own random geometry",
                                 icon="random")
        self.new_mask = W.Button(description="new mask", icon="th")
        self.text = W.HTML()
        self.update_note = W.HTML()
        self.image_widget = W.Image(format="png")
        self.stats_widget = W.Image(format="png")
        for w in self.sliders.values():
            w.observe(lambda _change: self.redraw(), names="value")
        self.resample.on_click(lambda _b: self.resample_geometry())
        self.new_mask.on_click(lambda _b: self.resample_mask())

        plt = viz._pyplot()
        self.figure, self.axes = plt.subplots(1, 3, figsize=(10.5, 3.9))
        plt.close(self.figure)  # drawn into the Image widget, never shown by the inline backend
        self._stats(stats_batch)
        self.redraw()  # the first draw lays the figure out; later ones update it in place
        start = time.perf_counter()
        self.redraw()
        self.redraw_s = time.perf_counter() - start
        self.live = self.redraw_s <= self.LIVE_REDRAW_S
        for w in self.sliders.values():
            if hasattr(w, "continuous_update"):
                w.continuous_update = self.live
        self.update_note.value = (f"<i>sliders redraw {'while dragged' if self.live else 'on release'} "
                                  f"(a redraw takes {self.redraw_s:.2f} s here)</i>")
        col = lambda v: W.VBox([self.sliders[f"{k}{v}"] for k in ("scale", "ratio", "y", "x", "flip")])  # noqa: E731
        controls = W.HBox([col(1), col(2), W.VBox([self.sliders["mask_ratio"], self.resample, self.new_mask])])
        self.widget = W.VBox([controls, self.update_note, self.text, self.image_widget,
                              W.HTML("<b>over a batch of the augmentation's own draws:</b>"), self.stats_widget])

    # ------------------------------------------------------------------ state
    def geometry(self) -> tuple[ViewGeometry, ViewGeometry]:
        """The two boxes the sliders describe, as batched geometries of one sample."""
        out = []
        for v in (1, 2):
            s = self.sliders
            top, left, h, w = box_from_controls(s[f"scale{v}"].value, s[f"ratio{v}"].value, s[f"y{v}"].value,
                                                s[f"x{v}"].value, self.H, self.W)
            t = lambda a: torch.tensor([a], dtype=torch.float32)  # noqa: E731
            out.append(ViewGeometry(t(top), t(left), t(h), t(w), torch.tensor([bool(s[f"flip{v}"].value)])))
        return out[0], out[1]

    def mask(self) -> torch.Tensor:
        """(grid*grid,) bool, True = masked: a block mask at the slider's ratio."""
        n = round(self.sliders["mask_ratio"].value * self.grid ** 2)
        n = min(n, self.grid ** 2 - 1)
        if n == 0:
            return torch.zeros(self.grid ** 2, dtype=torch.bool)
        return block_mask(1, self.grid, n, generator=torch.Generator().manual_seed(self.mask_seed))[0]

    def summary(self) -> dict:
        """The relative tuple, overlap and corner patches of the current boxes, rounded for reading."""
        return geometry_summary(*self.geometry(), self.grid)

    def notes(self) -> dict[int, list[str]]:
        """{view: sentences} on what that view's sliders cannot do right now (see :func:`slider_notes`)."""
        out = {}
        for v in (1, 2):
            controls = {k: self.sliders[f"{k}{v}"].value for k in ("scale", "ratio", "y", "x")}
            found = slider_notes(controls, self.H, self.W)
            if found:
                out[v] = found
        return out

    # ------------------------------------------------------------------ actions
    def redraw(self) -> None:
        if self._hold:
            return
        g1, g2 = self.geometry()
        views = self.transform(self.image[None], [self.draw], geoms=(g1, g2))
        # the same axes each time: plot_view_pair updates its artists in place; the tuple goes in the
        # text above the figure, so the figure's title carries the dots' colour key instead
        viz.plot_view_pair(self.image, g1, g2, views.view1[0], views.view2[0], self.grid, self.mask(),
                           self.transform.mean.tolist(), self.transform.std.tolist(), axes=self.axes,
                           title=COLOUR_KEY)
        self.figure_png = _png(self.figure)
        self.image_widget.value = self.figure_png
        self.text.value = summary_html(self.summary(), self.notes())
        self.redraws += 1

    def set_geometry(self, g1: ViewGeometry, g2: ViewGeometry) -> None:
        """Move the sliders to two given boxes (sample 0 of each) and redraw once."""
        self._hold = True
        try:
            for v, g in ((1, g1), (2, g2)):
                scale, ratio, y, x = controls_from_box(*(float(t[0]) for t in g[:4]), self.H, self.W)
                for key, value in (("scale", scale), ("ratio", ratio), ("y", y), ("x", x)):
                    self.sliders[f"{key}{v}"].value = value
                self.sliders[f"flip{v}"].value = bool(g.flipped[0])
        finally:
            self._hold = False
        self.redraw()

    def resample_geometry(self) -> None:
        """Draw the next random geometry of the augmentation (the training data's own boxes)."""
        self.draw += 1
        sizes = torch.tensor([[self.H, self.W]], dtype=torch.float64)
        self.set_geometry(*self.transform.geometry(torch.tensor([self.draw]), 0, sizes))

    def resample_mask(self) -> None:
        self.mask_seed += 1
        self.redraw()

    def _stats(self, n: int) -> None:
        sizes = torch.tensor([[self.H, self.W]], dtype=torch.float64).expand(n, 2)
        g1, g2 = self.transform.geometry(torch.arange(n), 0, sizes)
        fig = viz.plot_geometry_stats(g1, g2)
        self.stats_widget.value = _png(fig)
        viz._pyplot().close(fig)

    def _ipython_display_(self):  # a notebook cell that ends with the explorer shows its widget
        from IPython.display import display
        display(self.widget)
