"""Figures of a SiM model's dense side (matplotlib, imported only when drawing), floors drawn in.

Each figure puts the model next to the rule that needs no learning: the
content-blind prediction as one more PCA panel, the floors as bars beside the
decoder and the encoder, the decomposition of the tokens next to a random-init
encoder's. Patch grids are drawn with one cell per patch (extent 0..grid).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .viz import _pyplot, to_display

FLOOR_COLOUR, MODEL_COLOUR, ORACLE_COLOUR = "#9e9e9e", "#1f77b4", "#c5b0d5"
REGIONS = ("visible", "masked", "outside")


def _blank(axes) -> None:
    for ax in np.atleast_1d(axes).ravel():
        ax.set_xticks([]), ax.set_yticks([])


def plot_dense_features(pair, i: int, grid: int, mean, std, content_blind: Optional[torch.Tensor] = None):
    """One sample of a :class:`simlab.dense.DensePair`: the masked view 1, view 2, PCA colours of the
    predicted tokens, of the content-blind prediction (when given, (N, D)) and of the target tokens (one
    joint PCA, so equal colours mean equal features), and the per-patch cosine of prediction and target,
    each view-2 patch marked by its region (dot: over a visible view-1 patch, cross: over a masked
    one); patches outside view 1 are hatched."""
    from matplotlib.patches import Patch

    from .dense import MASKED, OUTSIDE, VISIBLE, pca_rgb
    plt = _pyplot()
    sets = [pair.pred[i]] + ([content_blind] if content_blind is not None else []) + [pair.target[i]]
    rgb = pca_rgb(*sets)
    titles = ["decoder's prediction"] + (["content-blind prediction\n(position mean)"] if content_blind is not None
                                          else []) + ["target tokens"]
    fig, axes = plt.subplots(1, 3 + len(sets), figsize=(3.0 * (3 + len(sets)), 3.5))
    axes[0].imshow(to_display(pair.view1[i], mean, std), extent=(0, grid, grid, 0), interpolation="nearest")
    shade = np.zeros((grid, grid, 4))
    shade[pair.mask[i].reshape(grid, grid).numpy()] = (0, 0, 0, 0.6)
    axes[0].imshow(shade, extent=(0, grid, grid, 0), interpolation="nearest")
    axes[0].set_title("view 1 (masked patches dark)", fontsize=9)
    axes[1].imshow(to_display(pair.view2[i], mean, std), extent=(0, grid, grid, 0), interpolation="nearest")
    axes[1].set_title("view 2 (the target's view)", fontsize=9)
    for ax, colours, title in zip(axes[2:], rgb, titles):
        ax.imshow(colours.reshape(grid, grid, 3).numpy(), extent=(0, grid, grid, 0), interpolation="nearest")
        ax.set_title(title + ("" if "\n" in title else "\n(joint PCA → RGB)"), fontsize=9)
    ax = axes[-1]
    regions = pair.regions[i].reshape(grid, grid).numpy()
    cos = np.ma.masked_where(regions == OUTSIDE, pair.cosine[i].reshape(grid, grid).numpy())
    lo = float(min(0.0, pair.cosine.min()))  # the scale spans the values, not -1..1
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad((1, 1, 1, 0))  # outside view 1: transparent, so the hatching behind shows
    ax.add_patch(plt.Rectangle((0, 0), grid, grid, facecolor="white", hatch="////", edgecolor="#bbbbbb", lw=0,
                               zorder=0.5))
    im = ax.imshow(cos, cmap=cmap, vmin=lo, vmax=1.0, extent=(0, grid, grid, 0), interpolation="nearest", zorder=1)
    rr, cc = np.nonzero(regions == VISIBLE)
    ax.scatter(cc + 0.5, rr + 0.5, marker="o", facecolors="white", edgecolors="black", s=22, linewidths=0.9, zorder=2)
    rr, cc = np.nonzero(regions == MASKED)
    ax.scatter(cc + 0.5, rr + 0.5, marker="x", c="black", s=22, linewidths=1.0, zorder=2)
    fig.colorbar(im, ax=ax, fraction=0.046, label="cosine")
    ax.set_title("cosine(prediction, target)", fontsize=9)
    ax.legend(handles=[plt.Line2D([], [], marker="o", ls="", mfc="white", mec="black", label="over visible"),
                       plt.Line2D([], [], marker="x", ls="", c="black", label="over masked"),
                       Patch(facecolor="white", edgecolor="#bbbbbb", hatch="////", label="outside view 1")],
              fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3, frameon=False)
    _blank(axes)
    fig.tight_layout()
    return fig


def plot_attention(view: torch.Tensor, attention: torch.Tensor, grid: int, mean, std, title: str = "view 2"):
    """A view and its cls token's attention over the patches, per head of the last block, on one
    colour scale with its bar. attention: (heads, 1 + N, 1 + N) for this view."""
    plt = _pyplot()
    heads = attention.shape[0]
    maps = attention[:, 0, 1:].reshape(heads, grid, grid).numpy()
    fig, axes = plt.subplots(1, heads + 1, figsize=(2.5 * (heads + 1) + 0.6, 2.7))
    axes[0].imshow(to_display(view, mean, std), interpolation="nearest")
    axes[0].set_title(title, fontsize=9)
    for h in range(heads):
        im = axes[h + 1].imshow(maps[h], cmap="magma", vmin=0, vmax=float(maps.max()), interpolation="nearest")
        axes[h + 1].set_title(f"head {h}: cls → patches", fontsize=9)
    fig.colorbar(im, ax=list(axes), fraction=0.02, label="attention weight")
    _blank(axes)
    return fig


def plot_correspondences(view1: torch.Tensor, view2: torch.Tensor, geometric: torch.Tensor, learned: torch.Tensor,
                         grid: int, mean, std, every: int = 2):
    """View 2 (left) and view 1 (right): each view-2 patch (dot) joined to its learned match in view 1
    (square), green where that lies within one patch of the geometric truth (ring), red elsewhere; a
    thin dotted line ties each wrong match to its truth. geometric, learned: (N,) view-1 patch
    indices (-1: outside view 1, not drawn)."""
    from matplotlib.patches import ConnectionPatch

    from .dense import patch_distance
    plt = _pyplot()
    close = patch_distance(geometric, learned, grid) <= 1
    fig, axes = plt.subplots(1, 2, figsize=(7.4, 4.0))
    axes[0].imshow(to_display(view2, mean, std), extent=(0, grid, grid, 0), interpolation="nearest")
    axes[1].imshow(to_display(view1, mean, std), extent=(0, grid, grid, 0), interpolation="nearest")
    axes[0].set_title("view 2: patches", fontsize=9)
    axes[1].set_title("view 1: learned match (■), truth (○)", fontsize=9)
    centre = lambda k: (k % grid + 0.5, k // grid + 0.5)  # noqa: E731
    for n in range(0, grid * grid, every):
        if geometric[n] < 0:
            continue
        colour = "#2ca02c" if close[n] else "#d62728"
        src, dst, truth = centre(n), centre(int(learned[n])), centre(int(geometric[n]))
        fig.add_artist(ConnectionPatch(src, dst, "data", "data", axesA=axes[0], axesB=axes[1], color=colour,
                                       lw=0.8, alpha=0.85))
        axes[0].plot(*src, "o", ms=3.5, color=colour)
        axes[1].plot(*dst, "s", ms=4, color=colour)
        axes[1].plot(*truth, "o", ms=7, mfc="none", mec="white", mew=1.0)
        if not close[n]:
            axes[1].plot([dst[0], truth[0]], [dst[1], truth[1]], ":", color="white", lw=0.8)
    shown = [n for n in range(0, grid * grid, every) if geometric[n] >= 0]
    share = float(close[shown].float().mean()) if shown else float("nan")
    fig.legend(handles=[plt.Line2D([], [], color="#2ca02c", label="within one patch of the truth"),
                        plt.Line2D([], [], color="#d62728", label="further away"),
                        plt.Line2D([], [], marker="o", ls="", mfc="none", mec="grey", label="geometric truth")],
               loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"{share:.0%} of the drawn matches land within one patch of the truth", fontsize=9)
    _blank(axes)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    return fig


def plot_dense_evidence(ev: dict):
    """:func:`simlab.dense.dense_evidence` in four panels, floors drawn beside the model: cosine and
    SiM loss per region for the decoder and every floor, correspondence agreement with its floors,
    and the variance shares of target, encoder and random-init tokens."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(19, 3.9), gridspec_kw={"width_ratios": [1.3, 1.3, 0.9, 0.9]})
    names = list(ev["predictions"])
    colour = lambda name: (MODEL_COLOUR if name == "decoder" else  # noqa: E731
                           ORACLE_COLOUR if "oracle" in name else FLOOR_COLOUR)
    hatch = lambda name: "//" if "loss-optimal" in name else ".." if "+" in name else ""  # noqa: E731
    width = 0.8 / len(names)
    for ax, key, label in ((axes[0], "cosine", "cosine(prediction, target) ↑"),
                           (axes[1], "loss", "SiM loss (pos + λ·neg) ↓")):
        for k, name in enumerate(names):
            values = [ev["predictions"][name][r][key] for r in ("all", *REGIONS)]
            ax.bar(np.arange(4) + (k - (len(names) - 1) / 2) * width, values, width, color=colour(name),
                   hatch=hatch(name), edgecolor="white", label=name)
        ax.set_xticks(range(4), ["all", *REGIONS], fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(names), fontsize=8, frameon=False)
    c = ev["correspondences"]
    keys = ("encoder", "random-init encoder", "same grid index", "random patch")
    axes[2].bar(range(4), [c[k] for k in keys], color=[MODEL_COLOUR] + [FLOOR_COLOUR] * 3)
    axes[2].set_xticks(range(4), keys, rotation=25, ha="right", fontsize=8)
    axes[2].set_ylim(0, 1)
    axes[2].set_title(f"learned match within {c['tolerance']} patch of the truth", fontsize=9)
    axes[2].grid(axis="y", alpha=0.3)
    parts = (("position", "#ff7f0e"), ("image", "#2ca02c"), ("rest", "#d9d9d9"))
    who = list(ev["decomposition"])
    bottom = np.zeros(len(who))
    for part, col in parts:
        vals = np.array([ev["decomposition"][w][part] for w in who])
        axes[3].bar(range(len(who)), vals, bottom=bottom, color=col, label=f"{part}")
        bottom += vals
    axes[3].set_xticks(range(len(who)), [w.replace(" encoder", "\nencoder") for w in who], fontsize=8)
    axes[3].set_ylim(0, 1)
    axes[3].set_title("token variance explained by", fontsize=9)
    axes[3].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle(f"{ev['pairs']} held-out view pairs; grey: rules that need no learning, "
                 "lilac: oracles that read the targets", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
