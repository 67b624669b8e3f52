"""Figures (matplotlib, imported only here): view pairs with their geometry, sample grids, curves.

The dense side's figures (predictions, attention, correspondences, evidence) are in
:mod:`simlab.dense_viz`.

The view-pair figure is SiM's input made visible: the source image with both
crop boxes, the masked online view with every target-view patch centre placed
where ``relative_coords`` puts it, and the target view with the same centres
in the same colours, so a reader can check the correspondence by eye.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .views import ViewGeometry, overlap_fraction, relative_coords, relative_tuple

BOX_COLOURS = ("#ff7f0e", "#17becf")  # view 1 (online, masked), view 2 (target)


def _pyplot():
    import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
    return plt


def to_display(x: torch.Tensor, mean: Optional[Sequence[float]] = None,
               std: Optional[Sequence[float]] = None) -> np.ndarray:
    """(C, H, W) image (uint8, or float normalised with mean/std) -> (H, W, 3) float in [0, 1]."""
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        x = x.float() / 255
    elif mean is not None:
        x = x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    x = x.clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.permute(1, 2, 0).numpy()


def geometry_text(g1: ViewGeometry, g2: ViewGeometry, i: int = 0) -> str:
    """The relative tuple of sample ``i``, as the official dataset returns it, plus the overlap."""
    r = relative_tuple(g1, g2, i)
    return (f"Δi={r['di']:+.2f}  Δj={r['dj']:+.2f}  sh={r['sh']:.2f}  sw={r['sw']:.2f}  "
            f"flip={'yes' if r['flip'] else 'no'}  overlap={r['overlap']:.0%}")


def plot_view_pair(image: torch.Tensor, g1: ViewGeometry, g2: ViewGeometry, view1: torch.Tensor,
                   view2: torch.Tensor, grid: int, mask: Optional[torch.Tensor] = None,
                   mean=None, std=None, i: int = 0, axes=None, title: Optional[str] = None):
    """Draw sample ``i`` of a view pair on three axes (created if not given); returns the figure.

    image: (C, H, W) uint8 source; g1, g2: batched geometries; view1, view2:
    (C, S, S) normalised views of sample ``i``; mask: (grid*grid,) bool for view 1.

    Each box is labelled with the share of the image it covers (after any clipping to the image's
    edge, so what the label says is what is drawn). View 2's patch centres are coloured by their
    (row, col) in view 2 with a 2-D colour map (blue top-left, red top-right, green bottom-left, yellow
    bottom-right), so a flip, which swaps left and right, changes the colours along a row.

    Called again with the axes of an earlier call, it updates that figure's artists in place instead
    of drawing anew (no new ticks, no new layout): the explorer's redraw, several times cheaper.
    """
    plt = _pyplot()
    from matplotlib.patches import Rectangle
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.9))
    fig = axes[0].figure
    S = view1.shape[-1]
    patch = S / grid
    H, W = image.shape[-2:]

    boxes = [tuple(float(t[i]) for t in g[:4]) for g in (g1, g2)]  # (top, left, h, w) each
    labels = [f"view {v}{' (flipped)' if bool(g.flipped[i]) else ''}: {h * w / (H * W):.0%} of the image"
              for v, g, (_, _, h, w) in zip((1, 2), (g1, g2), boxes)]
    # view 1's label in its top-left corner, view 2's in its bottom-right one: apart even when the
    # two boxes share a corner (or are the same box)
    anchors = [(left + 1, top + 1, "left", "top") for top, left, _, _ in boxes[:1]] + \
              [(left + w - 1, top + h - 1, "right", "bottom") for top, left, h, w in boxes[1:]]
    coords = relative_coords(g1.select(slice(i, i + 1)), g2.select(slice(i, i + 1)), grid)[0]  # (N, 2)
    dots = np.stack([(coords[:, 1].numpy() + 0.5) * patch, (coords[:, 0].numpy() + 0.5) * patch], 1)  # (N, 2) x, y
    shade = np.zeros((grid, grid, 4))
    if mask is not None:
        shade[mask.reshape(grid, grid).cpu().numpy()] = (0, 0, 0, 0.55)
    n_masked = int(mask.sum()) if mask is not None else 0
    view1_title = f"view 1 (online): {n_masked}/{grid * grid} patches masked;\ndots = view-2 patch centres"

    drawn = getattr(fig, "_simlab_view_pair", None)
    if drawn is not None and drawn["axes"] == list(axes) and drawn["shape"] == (grid, S, H, W) \
            and drawn["source"] in axes[0].images:  # (not cleared since)
        drawn["source"].set_data(to_display(image))
        for rect, text, (top, left, h, w), label, (x, y, _, _) in zip(drawn["rects"], drawn["texts"], boxes,
                                                                      labels, anchors):
            rect.set_bounds(left, top, w, h)
            text.set_position((x, y))
            text.set_text(label)
        drawn["view1"].set_data(to_display(view1, mean, std))
        drawn["shade"].set_data(shade)
        drawn["dots"].set_offsets(dots)
        drawn["view2"].set_data(to_display(view2, mean, std))
        axes[1].set_title(view1_title, fontsize=9)
        fig.suptitle(title or geometry_text(g1, g2, i), fontsize=9)
        return fig

    ax = axes[0]
    source = ax.imshow(to_display(image), interpolation="nearest", extent=(0, W, H, 0))
    rects, texts = [], []
    for (top, left, h, w), colour, label, (x, y, ha, va) in zip(boxes, BOX_COLOURS, labels, anchors):
        rects.append(ax.add_patch(Rectangle((left, top), w, h, fill=False, lw=2, ec=colour)))
        texts.append(ax.text(x, y, label, color="white", fontsize=7, ha=ha, va=va,
                             bbox=dict(facecolor=colour, alpha=0.8, pad=1, lw=0)))
    ax.set_title("source and crop boxes", fontsize=9)

    # bilinear between four corner colours over view 2's (row, col)
    corners = np.array([[[0.15, 0.35, 0.95], [0.90, 0.15, 0.20]],    # top-left blue, top-right red
                        [[0.10, 0.70, 0.30], [0.95, 0.85, 0.10]]])   # bottom-left green, bottom-right yellow
    t = np.linspace(0, 1, grid)
    rr, cc = np.meshgrid(t, t, indexing="ij")
    rr, cc = rr.reshape(-1, 1), cc.reshape(-1, 1)
    colours = ((1 - rr) * (1 - cc) * corners[0, 0] + (1 - rr) * cc * corners[0, 1]
               + rr * (1 - cc) * corners[1, 0] + rr * cc * corners[1, 1])  # (N, 3), row-major like coords
    ax = axes[1]
    view1_image = ax.imshow(to_display(view1, mean, std), interpolation="nearest", extent=(0, S, S, 0))
    shade_image = ax.imshow(shade, interpolation="nearest", extent=(0, S, S, 0))
    scatter = ax.scatter(dots[:, 0], dots[:, 1], c=colours, s=20, edgecolors="white", linewidths=0.4)
    ax.set_xlim(0, S), ax.set_ylim(S, 0)
    ax.set_title(view1_title, fontsize=9)

    ax = axes[2]
    view2_image = ax.imshow(to_display(view2, mean, std), interpolation="nearest", extent=(0, S, S, 0))
    centres = (np.arange(grid) + 0.5) * patch
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    ax.scatter(xx.ravel(), yy.ravel(), c=colours, s=20, edgecolors="white", linewidths=0.4)
    ax.set_title("view 2 (target): its patch centres,\ncoloured by (row, col)", fontsize=9)
    for a in axes[1:]:
        a.set_xticks(np.arange(0, S + 1e-6, patch)), a.set_yticks(np.arange(0, S + 1e-6, patch))
        a.set_xticklabels([]), a.set_yticklabels([])
        a.grid(True, color="white", lw=0.3, alpha=0.5)
    axes[0].set_xticks([]), axes[0].set_yticks([])
    fig.suptitle(title or geometry_text(g1, g2, i), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig._simlab_view_pair = {"axes": list(axes), "shape": (grid, S, H, W), "source": source, "rects": rects,
                             "texts": texts, "view1": view1_image, "shade": shade_image, "dots": scatter,
                             "view2": view2_image}
    return fig


def plot_samples(images: torch.Tensor, masks: Optional[torch.Tensor] = None, labels=None,
                 class_names: Optional[Sequence[str]] = None, columns: int = 10):
    """A grid of images, each with its mask below it when masks are given; returns the figure."""
    plt = _pyplot()
    n = len(images)
    rows = (n + columns - 1) // columns
    per = 2 if masks is not None else 1
    fig, axes = plt.subplots(rows * per, columns, figsize=(columns * 1.1, rows * per * 1.15), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k in range(n):
        r, c = divmod(k, columns)
        ax = axes[r * per, c]
        ax.imshow(to_display(images[k]), interpolation="nearest")
        if labels is not None:
            name = class_names[int(labels[k])] if class_names else str(int(labels[k]))
            ax.set_title(name, fontsize=7)
        if masks is not None:
            axes[r * per + 1, c].imshow(masks[k].cpu().numpy(), cmap="tab20", vmin=0, vmax=19,
                                        interpolation="nearest")
    fig.tight_layout()
    return fig


VAR_PARTS = ("position", "image", "rest")


def plot_metrics(records: Sequence[dict], keys=("loss", "pos", "neg", "target_var", "encoder_var", "encoder_rankme",
                                                "target_rank", "pred_rank", "images_per_s")):
    """Curves of a run's metrics.jsonl records against the step; returns the figure.

    ``target_var`` and ``encoder_var`` draw the three variance shares of the target tokens and of the
    encoder's patch tokens (grid position, image identity, neither) in one panel each."""
    plt = _pyplot()
    present = lambda k: any(k in r or f"{k}_position" in r for r in records)  # noqa: E731
    keys = [k for k in keys if present(k)]
    cols = min(3, max(len(keys), 1))
    rows = max(1, (len(keys) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    steps = [r["step"] for r in records]
    marker = "o" if len(records) <= 3 else None  # a short run's few points must show, not empty axes
    for ax, key in zip(axes.ravel(), keys):
        if key.endswith("_var"):
            for part in VAR_PARTS:
                ax.plot(steps, [r.get(f"{key}_{part}", float("nan")) for r in records], lw=1.5, label=part,
                        marker=marker)
            ax.set_ylim(0, 1)
            ax.legend(fontsize=7)
            ax.set_title(f"{key.replace('_var', '')} tokens: variance share by", fontsize=9)
        else:
            ax.plot(steps, [r.get(key, float("nan")) for r in records], lw=1.5, marker=marker)
            ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_claim(summary: dict, metrics=("linear", "knn", "fg_bg_miou", "class_miou")):
    """Bars of the claim table (mean ± std over seeds), one panel per metric; returns the figure."""
    from .claim import LABELS
    plt = _pyplot()
    rows = list(summary)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.0), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes[0], metrics):
        means = [summary[r][key][0] if key in summary[r] else float("nan") for r in rows]
        stds = [summary[r][key][1] if key in summary[r] else 0.0 for r in rows]
        if len(rows) > len(colours):  # the ablations' table has more rows than the default cycle
            colours = [plt.get_cmap("tab20")(i % 20) for i in range(len(rows))]
        ax.bar(range(len(rows)), means, yerr=stds, capsize=3, color=colours[:len(rows)])
        ax.set_xticks(range(len(rows)), rows, rotation=35, ha="right", fontsize=8)
        ax.set_title(LABELS.get(key, key), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        finite = [m for m in means if m == m]
        if finite:
            ax.set_ylim(min(finite) * 0.9, max(m + s for m, s in zip(means, stds) if m == m) * 1.05)
    fig.tight_layout()
    return fig


def plot_differences(differences: list, metrics=("linear", "knn", "fg_bg_miou", "class_miou")):
    """A forest plot of the claim's differences (``claim.json["differences"]``): one panel per probe,
    one line per pair ("a − b"), its seed-mean difference with the 95 % bootstrap interval; a pair
    whose interval excludes 0 is drawn solid, one that contains it hollow and grey."""
    from .claim import LABELS
    plt = _pyplot()
    names = [f"{d['a']} − {d['b']}" for d in differences]
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics) + 2.4, 0.32 * len(names) + 1.2),
                             sharey=True, squeeze=False)
    y = np.arange(len(names))[::-1]
    for ax, key in zip(axes[0], metrics):
        for yi, d in zip(y, differences):
            if key not in d:
                continue
            diff, low, high = d[key]
            separable = low > 0 or high < 0
            colour = ("tab:green" if diff > 0 else "tab:red") if separable else "grey"
            ax.errorbar(diff, yi, xerr=[[diff - low], [high - diff]], fmt="o", ms=4, capsize=2, color=colour,
                        mfc=colour if separable else "white")
        ax.axvline(0, c="k", lw=0.8)
        ax.set_title(LABELS.get(key, key), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(plt.MaxNLocator(5))
    axes[0][0].set_yticks(y, names, fontsize=7)
    fig.suptitle("difference of seed means with its 95 % bootstrap interval (seeds and test images); "
                 "filled: the interval excludes 0", fontsize=8)
    fig.tight_layout()
    return fig


def plot_claim_curves(curves: dict, metrics=("linear", "knn", "fg_bg_miou", "class_miou")):
    """Learning curves of the claim (``claim.json["curves"]``): one column per probe, against training
    steps (top) and training FLOPs (bottom); each row's mean over seeds with its ± std band, every curve
    starting from the random-init encoder at step 0 (drawn as a dotted line)."""
    from .claim import LABELS
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(metrics), figsize=(3.4 * len(metrics), 5.6), squeeze=False)
    floor = {e["step"]: e for e in curves.get("random init", [])}.get(0, {})
    for col, key in enumerate(metrics):
        for row, (x_key, x_label, scale) in enumerate((("step", "training steps", 1.0),
                                                        ("train_gflop", "training TFLOP", 1e-3))):
            ax = axes[row][col]
            for name, entries in curves.items():
                if name == "random init":
                    continue
                pts = [e for e in entries if key in e]
                if floor.get(key):
                    pts = [{x_key: 0.0, key: floor[key]}] + pts
                x = np.array([e[x_key] * scale for e in pts])
                mean = np.array([e[key][0] for e in pts])
                std = np.array([e[key][1] for e in pts])
                ax.plot(x, mean, marker="o", ms=3, lw=1.3, label=name)
                ax.fill_between(x, mean - std, mean + std, alpha=0.15)
            if floor.get(key):
                ax.axhline(floor[key][0], ls=":", c="grey", lw=1.0, label="random init")
            ax.set_title(LABELS.get(key, key), fontsize=9)
            ax.set_xlabel(x_label, fontsize=8)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_geometry_stats(g1: ViewGeometry, g2: ViewGeometry):
    """Histograms over a batch of view pairs: overlap (share of view 2 inside view 1), area ratio
    view 2 / view 1 (log scale) and relative flip; returns the figure."""
    plt = _pyplot()
    overlap = overlap_fraction(g1, g2).numpy()
    area = ((g2.height * g2.width) / (g1.height * g1.width)).numpy()
    flip = (g1.flipped != g2.flipped).float().mean().item()
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 2.6))
    axes[0].hist(overlap, bins=20, range=(0, 1), color=BOX_COLOURS[1])
    axes[0].set_title(f"overlap (mean {overlap.mean():.0%}, none in {(overlap == 0).mean():.0%})", fontsize=9)
    axes[1].hist(np.log2(area), bins=30, color=BOX_COLOURS[0])
    axes[1].set_title("area ratio view 2 / view 1 (log2)", fontsize=9)
    axes[2].bar(["same", "mirrored"], [1 - flip, flip], color=["grey", BOX_COLOURS[1]])
    axes[2].set_title("relative flip", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_compare(runs: dict, keys=("loss", "knn", "target_var_position", "encoder_rankme")):
    """Several runs' metrics curves overlaid, one panel per key; ``runs``: {label: metrics records}."""
    plt = _pyplot()
    keys = [k for k in keys if any(k in r for recs in runs.values() for r in recs)]
    cols = min(3, max(len(keys), 1))
    rows = max(1, (len(keys) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.ravel(), keys):
        for label, recs in runs.items():
            pts = [(r["step"], r[key]) for r in recs if key in r]
            if pts:
                ax.plot(*zip(*pts), lw=1.4, marker="o" if len(pts) <= 3 else None, label=label)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * (len(labels) // 4), 1, 1))
    return fig


def plot_sweep(summary: Sequence[dict], grid_keys: Sequence[str], metrics: Sequence[str]):
    """A sweep's metrics (mean ± std over seeds) against its first grid key, one line per combination
    of the other keys, one panel per metric."""
    plt = _pyplot()
    first, rest = grid_keys[0], list(grid_keys[1:])
    xs = list(dict.fromkeys(str(s[first]) for s in summary))
    cols = min(len(metrics), 4)  # rows of at most four panels, so the figure stays readable
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    lines: dict[tuple, list[dict]] = {}
    for s in summary:
        lines.setdefault(tuple(s[k] for k in rest), []).append(s)
    for ax, m in zip(axes.flat, metrics):
        for key, group in lines.items():
            pts = sorted(((xs.index(str(s[first])), s.get(m), s.get(f"{m}_std", 0.0)) for s in group if m in s))
            if pts:
                x, y, e = zip(*pts)
                label = ", ".join(f"{k}={v}" for k, v in zip(rest, key)) or m
                ax.errorbar(x, y, yerr=e, marker="o", capsize=3, lw=1.3, label=label)
        ax.set_xticks(range(len(xs)), xs, fontsize=8)
        ax.set_xlabel(first, fontsize=8)
        ax.set_title(m, fontsize=9)
        ax.grid(alpha=0.3)
    if rest:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
