"""Probe and dense-evidence results as text: every number beside its floor.

Used by ``simlab probe``, ``04_probes`` and ``03_dense_features``. A reader
should never meet a learned number without the rule that needs no learning
next to it (DESIGN.md convention 13), nor an unconverged fit without being told.
"""

from __future__ import annotations

import statistics

REGIONS = ("all", "visible", "masked", "outside")


def _pct(v) -> str:
    return "–" if v is None or v != v else f"{100 * v:.1f} %"


def _num(v) -> str:
    return "–" if v is None or v != v else f"{v:.3f}"


def probe_text(res: dict) -> str:
    """The result of :func:`simlab.probes.probe_checkpoint` as a plain-text report."""
    floors = res.get("floors", {})
    chance = floors.get("chance", {}).get("accuracy")
    lines = [f"{res['encoder']} encoder of {res['checkpoint']} (sha256 {res['sha256'][:12]}...)",
             f"{res['dataset']}: {res['train_size']} train / {res['test_size']} test images, pool {res['pool']}, "
             f"{res['seconds']:.0f} s", "",
             f"{'global probe':<22}{'encoder':>10}{'chance':>10}"]
    note = "" if res.get("linear_converged", True) else "   (L-BFGS did not converge: read with care)"
    lines.append(f"{'k-NN (k=20, T=0.07)':<22}{_pct(res.get('knn')):>10}{_pct(chance):>10}")
    lines.append(f"{'linear':<22}{_pct(res.get('linear')):>10}{_pct(chance):>10}{note}")
    for n in (1, 5, 10):
        if f"few_shot_{n}" in res:
            lines.append(f"{f'{n}-shot':<22}{_pct(res[f'few_shot_{n}']):>10}{_pct(chance):>10}")
    if "class_miou" in res:
        dense_floors = [k for k in floors if k != "chance"]
        lines += ["", f"{'dense probe':<22}{'encoder':>10}" + "".join(f"{k:>18}" for k in dense_floors)]
        for key, label in (("fg_bg_miou", "fg/bg mIoU"), ("fg_iou", "fg IoU"), ("class_miou", "class mIoU")):
            if key in res:
                lines.append(f"{label:<22}{_num(res[key]):>10}"
                             + "".join(f"{_num(floors[k].get(key)):>18}" for k in dense_floors))
        if not res.get("dense_converged", True):
            lines.append("  (a dense fit did not converge in its iterations: read with care)")
    if "dense_evidence" in res:
        lines += ["", evidence_text(res["dense_evidence"])]
    return "\n".join(lines)


def evidence_text(ev: dict) -> str:
    """:func:`simlab.dense.dense_evidence`'s report: predictions, correspondences and decomposition."""
    lines = [f"decoder predictions on {ev['pairs']} held-out view pairs (content-blind rule fitted on "
             f"{ev['fit_pairs']} other images; loss = pos + {ev['neg_weight']} x neg, as in training)",
             f"{'predictor':<46}{'loss':>7}{'pos':>7}{'neg':>7}" + "".join(f"{'cos ' + r:>13}" for r in REGIONS)]
    for name, regions in ev["predictions"].items():
        a = regions["all"]
        lines.append(f"{name:<46}{a['loss']:>7.3f}{a['pos']:>7.3f}{a['neg']:>7.3f}"
                     + "".join(f"{regions[r]['cosine']:>13.3f}" for r in REGIONS))
    c = ev["correspondences"]
    lines += ["", f"correspondences within {c['tolerance']} patch of the geometric truth ({c['pairs']} pairs): "
              + ", ".join(f"{k} {_pct(c[k])}" for k in ("encoder", "random-init encoder", "same grid index",
                                                         "random patch"))]
    lines += ["", "share of token variance explained by view-2 grid position / image identity / neither:"]
    for name, d in ev["decomposition"].items():
        lines.append(f"  {name + ' tokens':<30}{_pct(d['position']):>9} /{_pct(d['image']):>8} /{_pct(d['rest']):>8}")
    return "\n".join(lines)


def evidence_markdown(res: dict) -> str:
    """The README's evidence table for one probed SiM checkpoint: each dense number with its floors
    (generated from the committed result file, so the README cannot drift from it)."""
    from .dense import CONTENT_BLIND, CONTENT_BLIND_SHRUNK, READOUT
    ev, floors = res["dense_evidence"], res["floors"]
    p, c = ev["predictions"], ev["correspondences"]
    dense_floors = [k for k in floors if k != "chance"]
    rows = [("SiM loss on held-out pairs (↓)", f"{p['decoder']['all']['loss']:.3f}",
             f"position mean {p[CONTENT_BLIND]['all']['loss']:.3f}; loss-optimal position "
             f"mean {p[CONTENT_BLIND_SHRUNK]['all']['loss']:.3f}")]
    if READOUT in p:  # the content a linear read of the token under each patch recovers: a reference, no floor
        rows.append(("SiM loss over visible view-1 patches (↓)", f"{p['decoder']['visible']['loss']:.3f}",
                     f"loss-optimal position mean {p[CONTENT_BLIND_SHRUNK]['visible']['loss']:.3f}; reference "
                     f"with content, not a floor: matched-token readout {p[READOUT]['visible']['loss']:.3f}"))
    rows += [("cosine(prediction, target) (↑)", f"{p['decoder']['all']['cosine']:.3f}",
              f"position mean {p[CONTENT_BLIND]['all']['cosine']:.3f}"),
             ("cosine over masked view-1 patches", f"{p['decoder']['masked']['cosine']:.3f}",
              f"position mean {p[CONTENT_BLIND]['masked']['cosine']:.3f}"),
             ("correspondences within 1 patch", _pct(c["encoder"]),
              f"random-init encoder {_pct(c['random-init encoder'])}; same grid index "
              f"{_pct(c['same grid index'])}; random patch {_pct(c['random patch'])}")]
    for key, label in (("fg_bg_miou", "dense probe fg/bg mIoU"), ("class_miou", "dense probe class mIoU")):
        rows.append((label, _num(res[key]), "; ".join(f"{k} {_num(floors[k][key])}" for k in dense_floors)))
    rows.append(("linear probe", _pct(res["linear"]), f"chance {_pct(floors['chance']['accuracy'])}"))
    d = ev["decomposition"]
    share = lambda who: f"{_pct(d[who]['position'])} / {_pct(d[who]['image'])} / {_pct(d[who]['rest'])}"  # noqa: E731
    rows.append(("token variance: position / image / rest", f"target {share('target')}; encoder {share('encoder')}",
                 f"random-init encoder {share('random-init encoder')}"))
    lines = ["| measure | the checkpoint | floors (no learning) |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {f} |" for a, b, f in rows]
    return "\n".join(lines)


def id_baseline_markdown(res: dict) -> str:
    """The README's table of the ID-baseline diagnostics (bench/id_baseline.json)."""
    keys = ("knn", "linear", "few_shot_5", "fg_bg_miou", "class_miou")
    lines = ["| run | dataset | k-NN | linear | 5-shot | fg/bg mIoU | class mIoU |", "|" + " --- |" * 7]
    for name, r in res["runs"].items():
        cells = [_pct(r[k]) if k in ("knn", "linear", "few_shot_5") else _num(r[k]) for k in keys]
        lines.append(f"| `{name}` | {r['dataset']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def id_infonce_comparison(res: dict, ids: str = "fm_infonce", random_init: str = "fm_random") -> dict:
    """The README's prose on ID with InfoNCE against random init (bench/id_baseline.json): the mean
    over the runs named ``ids*`` (its seeds) beside the mean ± std of the ``random_init*`` runs."""
    import statistics
    ids = [r for name, r in res["runs"].items() if name.startswith(ids)]
    rnd = [r for name, r in res["runs"].items() if name.startswith(random_init)]

    def pair(key: str, pct: bool) -> str:
        scale, unit, digits = (100, " %", 1) if pct else (1, "", 3)
        a = statistics.mean(r[key] for r in ids) * scale
        b = [r[key] * scale for r in rnd]
        spread = f" ± {statistics.stdev(b):.{digits}f}" if len(b) > 1 else ""
        return f"{a:.{digits}f}{unit} against {statistics.mean(b):.{digits}f}{unit}{spread}"

    return {"knn": f"k-NN {pair('knn', True)}", "few_shot_5": f"5-shot {pair('few_shot_5', True)}",
            "class_miou": f"class mIoU {pair('class_miou', False)}", "linear": pair("linear", True),
            "fg_bg_miou": pair("fg_bg_miou", False), "id_seeds": len(ids), "random_seeds": len(rnd)}


SWEEP_COLUMNS = (("linear", "linear", True), ("knn", "k-NN", True), ("fg_bg_miou", "fg/bg mIoU", False),
                 ("class_miou", "class mIoU", False), ("decoder_loss", "decoder loss", False),
                 ("blind_loss", "content-blind loss", False),
                 ("blind_opt_loss", "loss-optimal content-blind loss", False),
                 ("readout_loss", "matched-token readout loss (reference)", False))


def sweep_markdown(report: dict) -> str:
    """A sweep's summary (``sweep.json``) as a markdown table: mean ± std over seeds per grid point, and
    the random-init floor as the last row where the sweep has one."""
    grid = list(report["spec"]["grid"])
    cols = [c for c in SWEEP_COLUMNS if any(c[0] in s for s in report["summary"])]
    head = grid or ["overrides"]  # a sweep of one point (no grid) is named by its fixed overrides
    lines = ["| " + " | ".join([*head, "seeds", *(c[1] for c in cols)]) + " |",
             "|" + " --- |" * (len(head) + 1 + len(cols))]
    def cells(entry: dict) -> list[str]:  # mean ± std over seeds, "–" where the entry lacks the metric
        out = []
        for key, _, pct in cols:
            m, sd = entry.get(key), entry.get(f"{key}_std", 0.0)
            out.append("–" if m is None else f"{100 * m:.1f} % ± {100 * sd:.1f}" if pct else f"{m:.3f} ± {sd:.3f}")
        return out

    fixed = ", ".join(f"`{o}`" for o in report["spec"].get("overrides", [])) or "–"
    for s in report["summary"]:
        names = [f"`{s[k]}`" for k in grid] if grid else [fixed]
        lines.append("| " + " | ".join([*names, str(s["seeds"]), *cells(s)]) + " |")
    ri = report.get("random_init")
    if ri:  # the floor, on the same probe sizes: no decoder, so no decoder loss
        lines.append("| " + " | ".join(["random init", *("–" for _ in head[1:]), str(len(ri["seeds"])), *cells(ri)])
                     + " |")
    return "\n".join(lines)


# the four probes every demo-budget table reads, as (key, label, shown as a percentage)
FOUR_PROBES = (("linear", "linear", True), ("knn", "k-NN", True), ("fg_bg_miou", "fg/bg mIoU", False),
               ("class_miou", "class mIoU", False))


def seed_margins(report: dict) -> list[dict]:
    """Each finished run of a probed sweep beside the random-init encoder of its own seed: per probe the
    run's value minus that floor, and the decoder's loss minus the content-blind rule's (negative =
    the decoder predicts better than position alone), and minus the loss-optimal content-blind rule's
    where the sweep recorded it (the stricter floor). Seeds are paired because a random-init
    encoder's own probes move with its seed by about as much as training moves them."""
    floors = {f["seed"]: f for f in (report.get("random_init") or {}).get("per_seed", [])}
    grid = list(report["spec"]["grid"])
    fixed = ",".join(report["spec"].get("overrides", [])) or "preset"
    out = []
    for row in report["rows"]:
        floor = floors.get(row["seed"])
        if row.get("status") != "complete" or floor is None:
            continue
        # the grid point the seed belongs to, named as the sweep names its folders (without the seed)
        group = ",".join(f"{k}={row[k]}" for k in grid) if grid else fixed
        entry = {"point": row["point"], "group": group, "seed": row["seed"]}
        entry.update({k: row[k] - floor[k] for k, _, _ in FOUR_PROBES if k in row and k in floor})
        if "decoder_loss" in row and "blind_loss" in row:
            entry["decoder_vs_blind"] = row["decoder_loss"] - row["blind_loss"]
        if "decoder_loss" in row and "blind_opt_loss" in row:
            entry["decoder_vs_blind_opt"] = row["decoder_loss"] - row["blind_opt_loss"]
        if "decoder_loss" in row and "readout_loss" in row:  # positive: content at hand the decoder leaves
            entry["decoder_vs_readout"] = row["decoder_loss"] - row["readout_loss"]
        out.append(entry)
    return out


def seed_margins_markdown(report: dict) -> str:
    """:func:`seed_margins` as a table, one row per run, then per grid point the mean margin in units of
    its standard deviation over seeds and the seeds on the right side of the floor."""
    margins = seed_margins(report)
    head = ["run", *(f"{label} − random init" for _, label, _ in FOUR_PROBES), "decoder − content-blind loss"]
    keys = [k for k, _, _ in FOUR_PROBES] + ["decoder_vs_blind"]
    if any("decoder_vs_blind_opt" in m for m in margins):  # sweeps collected before it was recorded lack it
        head.append("decoder − loss-optimal content-blind loss")
        keys.append("decoder_vs_blind_opt")
    if any("decoder_vs_readout" in m for m in margins):
        head.append("decoder − matched-token readout loss (reference)")
        keys.append("decoder_vs_readout")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    pct = {k: p for k, _, p in FOUR_PROBES}

    def fmt(k, v):
        return "–" if v is None else f"{100 * v:+.1f} pts" if pct.get(k) else f"{v:+.3f}"
    for m in margins:
        lines.append(f"| `{m['point']}` | " + " | ".join(fmt(k, m.get(k)) for k in keys) + " |")
    for point in dict.fromkeys(m["group"] for m in margins):
        rows = [m for m in margins if m["group"] == point]
        cells = []
        for k in keys:
            vals = [m[k] for m in rows if k in m]
            if len(vals) < 2:
                cells.append("–")
                continue
            good = sum(v < 0 if k.startswith("decoder_vs") else v > 0 for v in vals)
            sd = statistics.stdev(vals)  # equal margins leave float dust, not a spread: no ratio then
            z = f"{statistics.mean(vals) / sd:+.1f} sd" if sd > 1e-9 else "–"
            cells.append(f"{z}, {good} of {len(vals)}")
        lines.append(f"| `{point}`: mean ÷ sd, seeds on the right side | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    """``7 min 3 s`` (or ``42 s``): a wall time as the README states it."""
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def demo_run_markdown(res: dict) -> str:
    """``bench/demo.json`` (``python -m simlab.bench demo``) as two tables: make demo's wall time per
    part, then its encoder beside the random-init one on every probe and its decoder beside both
    content-blind floors, with the margins."""
    t = res["seconds"]
    parts = [("figures", "static view figures"), ("01_view_geometry", "`01_view_geometry`"),
             ("02_pretrain", f"`02_pretrain` ({res['steps']} steps of {res['batch_size']})"),
             ("03_dense_features", "`03_dense_features`"),
             ("04_probes", f"`04_probes` ({res['probe_sizes'][0]:,} / {res['probe_sizes'][1]:,} images, "
                           f"{res['encoders_probed']} encoders)")]
    lines = ["| part | wall time |", "| --- | --- |"]
    lines += [f"| {label} | {_clock(t[k])} |" for k, label in parts if k in t]
    lines += [f"| **total** | **{_clock(t['total'])}** |", ""]
    from .dense import CONTENT_BLIND, CONTENT_BLIND_SHRUNK, READOUT
    demo, ri, m = res["probes"]["demo"], res["probes"]["random init"], res["margins"]
    readout = READOUT in demo  # records made before the readout reference existed lack it
    head = ["encoder", *(label for _, label, _ in FOUR_PROBES), "decoder loss", "content-blind loss",
            "loss-optimal content-blind loss", *(["matched-token readout loss"] if readout else []),
            "decoder cosine", "content-blind cosine"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    dense = [_num(demo.get(k)) for k in ("decoder_loss", CONTENT_BLIND, CONTENT_BLIND_SHRUNK,
                                         *([READOUT] if readout else []), "decoder_cosine", "content_blind_cosine")]
    lines.append(f"| demo (seed {res['seed']}) | " + " | ".join(
        [*(_pct(demo[k]) if pct else _num(demo[k]) for k, _, pct in FOUR_PROBES), *dense]) + " |")
    lines.append(f"| random init (seed {ri['seed']}) | " + " | ".join(
        [*(_pct(ri[k]) if pct else _num(ri[k]) for k, _, pct in FOUR_PROBES), *("–" for _ in dense)]) + " |")
    lines.append("| demo − floor | " + " | ".join(
        [*(f"{100 * m[k]:+.1f} pts" if pct else f"{m[k]:+.3f}" for k, _, pct in FOUR_PROBES),
         "", f"{m['decoder - ' + CONTENT_BLIND]:+.3f}", f"{m['decoder - ' + CONTENT_BLIND_SHRUNK]:+.3f}",
         *([f"{m['decoder - ' + READOUT]:+.3f}"] if readout else []),
         "", f"{demo['decoder_cosine'] - demo['content_blind_cosine']:+.3f}"]) + " |")
    return "\n".join(lines)


def speedrun_markdown(report: dict) -> str:
    """``bench/speedrun.json`` as the README's table: per objective and probe, the training seconds at
    which the probe first reached its threshold ("not in N s" where it never did) and the value at the
    run's last checkpoint, under a header row with the thresholds and the random-init encoder."""
    def value(v, pct):
        return _pct(v) if pct else _num(v)

    head = ["objective", "images/s"] + [f"{label} (≥ {value(report['thresholds'][k], pct)})"
                                        for k, label, pct in FOUR_PROBES]
    if "sim" in report["objectives"]:
        head.append("decoder loss < content-blind")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    ri = report["random_init"]
    lines.append("| random init | – | " + " | ".join(value(ri.get(k), pct) for k, _, pct in FOUR_PROBES)
                 + (" | – |" if "sim" in report["objectives"] else " |"))
    for objective, res in report["objectives"].items():
        last = res["curve"][-1]
        crossed = res["time_to_threshold_s"]

        def cell(key, shown):
            t = crossed.get(key)
            when = f"**{t:.0f} s**" if t is not None else f"not in {last['train_seconds']:.0f} s"
            return f"{when} ({shown})"

        cells = [cell(k, value(last.get(k), pct)) for k, _, pct in FOUR_PROBES]
        if "sim" in report["objectives"]:
            cells.append(cell("decoder_beats_content_blind",
                              f"{_num(last.get('decoder_loss'))} vs {_num(last.get('blind_loss'))}")
                         if objective == "sim" else "–")
        lines.append(f"| {objective} | {res['images_per_s']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dataset_markdown(res: dict) -> str:
    """``bench/dataset.json`` as the README's raw-pixel table: what `shapes` gives away without learning."""
    n = len(res["seeds"])
    return "\n".join([
        f"| raw-pixel baseline on `shapes` ({res['n_train'] // 1000}k train / {res['n_test'] // 1000}k test, 32 px) "
        f"| accuracy, {n} dataset seeds |", "| --- | --- |",
        f"| k-NN, k = 20, cosine | {_pct(res['raw_knn_acc_mean'])} ± {100 * res['raw_knn_acc_std']:.1f} |",
        f"| logistic regression on standardised pixels | {_pct(res['raw_logreg_acc_mean'])} ± "
        f"{100 * res['raw_logreg_acc_std']:.1f} (chance: 10 %) |"])


# What each preset is for (README "Presets") and what its model is (bench/README.md "train").
PRESET_PURPOSE = {
    "tiny": ("tests: 16 px, width 48, one block everywhere", "16 px, 4×4 grid, width 48, one block"),
    "demo": ("the README's quick run: `shapes` 32 px, 4 px patches (8×8 grid), width 128, depth 4",
             "32 px, 8×8 grid, width 128, depth 4"),
    "demo-500": ("`demo` before it moved to 700 steps and a decoder gain (500, EMA from 0.99, gain 1): the claim, ablations, speedrun and "
                 "budget sweeps ran it", "`demo`'s model"),
    "demo-long": ("the shipped checkpoint (`data/checkpoints/`): `demo` at batch 128 for 2,400 steps on 50k images",
                  "`demo`'s model"),
    "official-a": ("the benchmark configuration measured beside the official code (`bench/README.md`): 32 px, "
                   "width 192 × 6, decoder 192 with 2 + 4 BatchNorm blocks, 38 of 64 masked", "config A below"),
    "fashion-mnist": ("one GPU: 28 px grey, width 192, depth 6, 200 epochs", "28 px grey, width 192, depth 6"),
    "cifar-vit-s": ("one GPU: CIFAR-10 with ViT-S/4, 800 epochs", "32 px, ViT-S/4 (384 × 12), decoder 384"),
    "vit-b16-paper": ("the official recipe: ViT-B/16, 224 px, ImageNet, batch 4096, 1600 epochs",
                      "224 px, ViT-B/16 + 2 + 4 blocks at 768"),
}
TRAIN_IMAGES = {"imagefolder": 1_281_167, "cifar10": 50_000, "fashion-mnist": 60_000}  # an epoch, by dataset


def _measured(res: dict, name: str) -> dict | None:
    """A preset's row of ``bench/train.json``; ``demo-500`` and ``demo-long`` run ``demo``'s model at the batch
    measured."""
    presets = res["presets"]
    return presets.get(name) or (presets.get("demo") if name in ("demo-500", "demo-long") else None)


def _sig(x: float) -> str:
    """Three significant digits, thousands separated, never in exponent form."""
    import math
    return f"{x:,.{max(0, 2 - math.floor(math.log10(abs(x))))}f}" if x else "0"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "< 1 s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 \
        else f"{seconds / 3600:.1f} h"


def _flop(total: float) -> str:
    exp = len(str(int(total))) - 1
    superscript = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
    return f"{total / 10 ** exp:.1f}·10" + str(exp).translate(superscript)


def levers_markdown(res: dict) -> str:
    """``bench/levers.json`` as a table: each lever's time beside the plain path's, measured in one run."""
    def ms(v: float) -> str:
        return f"{1e3 * v:.2f} ms" if v < 1 else f"{v:.1f} s"
    step = res["step"]
    lines = ["| lever | plain | with the lever | plain ÷ lever | outputs |", "| --- | --- | --- | --- | --- |",
             f"| (the `{res['preset']}` step, batch {res['batch_size']}) | {ms(step['step_s'])} "
             f"({step['images_per_s']:.0f} images/s, {100 * step['utilisation']:.0f} % of the matmul peak) | | | |"]
    c = res.get("compile")
    if c:
        lines.append(f"| `torch.compile` (Inductor), steady step | {ms(step['step_s'])} | {ms(c['step_s'])} "
                     f"| {c['speedup']:.2f}× | not compared |")
        lines.append(f"| `torch.compile`, a {c['run_steps']}-step run with its compile | {c['run_eager_s']:.0f} s "
                     f"| {c['run_compiled_s']:.0f} s (first step {c['first_step_s']:.0f} s) "
                     f"| {c['run_eager_s'] / c['run_compiled_s']:.2f}× | |")
    g, a = res["gelu_tanh"], res["attention"]
    lines.append(f"| tanh GELU, forward + backward on {g['shape'][0]} × {g['shape'][1]} | {ms(g['plain_s'])} "
                 f"| {ms(g['lever_s'])} | {g['speedup']:.2f}× | max difference {g['max_abs_diff']:.1e} |")
    lines.append(f"| attention as `softmax(q kᵀ) v` instead of SDPA, forward + backward on "
                 f"{' × '.join(map(str, a['shape']))} | {ms(a['plain_s'])} (SDPA) | {ms(a['lever_s'])} "
                 f"| {a['speedup']:.2f}× | max difference {a['max_abs_diff']:.1e} |")
    o = res["adamw"]
    lines.append(f"| AdamW `foreach` instead of fused, {o['tensors']} tensors | {ms(o['fused_s'])} (fused) "
                 f"| {ms(o['foreach_s'])} | {o['fused_s'] / o['foreach_s']:.2f}× | not compared |")
    lines.append(f"| AdamW per tensor instead of fused | {ms(o['fused_s'])} (fused) | {ms(o['per_tensor_s'])} "
                 f"| {o['fused_s'] / o['per_tensor_s']:.2f}× | not compared |")
    return "\n".join(lines)


def presets_markdown(res: dict) -> str:
    """The README's presets table from ``bench/train.json``: each preset's measured step beside what a
    whole run costs at that rate (its images ÷ the measured images/s, at the measured batch), or its
    FLOP in all where that would take more than a day here."""
    from .presets import PRESETS, preset
    lines = ["| preset | purpose | batch (measured) | s/step | images/s | GFLOP/image | whole run at that rate |",
             "|" + " --- |" * 7]
    for name in PRESETS:
        cfg, m = preset(name), _measured(res, name)
        t = cfg.train
        if m is None:
            lines.append(f"| `{name}` | {PRESET_PURPOSE[name][0]} | {t.batch_size} | – | – | – | "
                         "not measured (GPU recipe) |")
            continue
        if t.steps:
            images, length = t.steps * t.batch_size, f"{t.steps:,} steps of {t.batch_size}"
        else:
            epoch = cfg.data.train_size or TRAIN_IMAGES[cfg.data.dataset]
            images, length = t.epochs * epoch, f"{t.epochs:,} epochs of {epoch:,}"
        seconds = images / m["images_per_s"]
        cost = _duration(seconds) if seconds < 86_400 else f"{_flop(images * m['flop_per_image'])} FLOP"
        lines.append(f"| `{name}` | {PRESET_PURPOSE[name][0]} | {m['batch_size']} | {_sig(m['step_s'])} | "
                     f"{_sig(m['images_per_s'])} | {_sig(m['flop_per_image'] / 1e9)} | {length}: {cost} |")
    return "\n".join(lines)


def train_markdown(res: dict) -> str:
    """``bench/train.json`` as bench/README.md's table: step, FLOP and utilisation of the same run's peak."""
    lines = ["| preset | what | batch | s/step | images/s | GFLOP/image | matmul peak | utilisation |",
             "|" + " --- |" * 8]
    for name, m in res["presets"].items():
        lines.append(f"| `{name}` | {PRESET_PURPOSE.get(name, ('', name))[1]} | {m['batch_size']} | "
                     f"{_sig(m['step_s'])} | {_sig(m['images_per_s'])} | {_sig(m['flop_per_image'] / 1e9)} | "
                     f"{m['matmul_peak_flops'] / 1e9:.0f} GFLOP/s | {100 * m['utilisation']:.0f} % |")
    return "\n".join(lines)


def views_markdown(res: dict) -> str:
    """``bench/views.json`` as bench/README.md's table: simlab's views beside the PIL reference."""
    rows = [("two-view pairs, 32 px", f"{_sig(res['pairs_per_s_32px'])} pairs/s",
             f"{_sig(res['reference_pairs_per_s_32px'])} pairs/s", f"**{res['ratio_32px']:.2g}×**"),
            ("two-view pairs, 224 px", f"{_sig(res['pairs_per_s_224px'])} pairs/s",
             f"{_sig(res['reference_pairs_per_s_224px'])} pairs/s", f"**{res['ratio_224px']:.2g}×**"),
            ("JPEG decode, 500×375", f"{_sig(res['decode_per_s_500x375'])} images/s", "", ""),
            ("two-view pairs, 224 px, decode included",
             f"{_sig(res['pairs_per_s_224px_with_decode'])} pairs/s", "", ""),
            ("`shapes` generation, 32 px", f"{_sig(res['shapes_images_per_s'])} images/s", "", "")]
    return "\n".join(["| measure | simlab | PIL reference | ratio |", "|" + " --- |" * 4]
                     + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows])


def official_markdown(res: dict) -> str:
    """``bench/official.json`` as bench/README.md's table: simlab's step beside the official code's."""
    off, cheap, ours = res["official_a"], res["official_a_cheap_loss"], res["simlab_official_a"]
    loss_share = 1 - cheap["flop_per_image"] / off["flop_per_image"]
    return "\n".join([
        "| | official | official, loss rewritten | simlab | simlab ÷ official |", "|" + " --- |" * 5,
        f"| config A, images/s | {off['images_per_s']:.1f} | {cheap['images_per_s']:.1f} | {ours['images_per_s']:.1f} "
        f"| **{res['ratio_official_a']:.2f}×** ({res['ratio_official_a_vs_cheap_loss']:.2f}× against the rewritten "
        "loss) |",
        f"| config A, GFLOP/image counted | {off['flop_per_image'] / 1e9:.2f} ({100 * loss_share:.0f} % in its "
        f"(M × M) loss matrix) | {cheap['flop_per_image'] / 1e9:.2f} | {ours['flop_per_image'] / 1e9:.2f} | |",
        f"| ViT-B/16, batch 8, images/s | {res['official_vit_b16_batch8']['images_per_s']:.2f} | | "
        f"{res['simlab_vit_b16_batch8']['images_per_s']:.2f} | {res['ratio_vit_b16_batch8']:.2f}× |"])


def probes_markdown(res: dict) -> str:
    """``bench/probes.json`` as bench/README.md's table: the k-NN probe beside scikit-learn's."""
    acc = lambda v: f"{100 * v:.2f} %"  # noqa: E731
    same = "equal" if res["same_accuracy_where_rules_coincide"] else "differ"
    return "\n".join([
        "| | time | accuracy |", "| --- | --- | --- |",
        f"| simlab, T = 0.07 (the probe's rule) | {res['knn_s']:.2f} s | {acc(res['knn_acc'])} |",
        f"| simlab, T = ∞ (majority of the {res['k']}) | {res['knn_uniform_s']:.2f} s | {acc(res['knn_uniform_acc'])} |",
        f"| scikit-learn, brute-force cosine | {res['sklearn_knn_s']:.2f} s | {acc(res['sklearn_knn_acc'])} |",
        f"| speed-up at the same rule | **{res['knn_speedup']:.1f}×** | {same} |",
        f"| linear probe (`linear_probe`: standardise, C from 4 values on a held-out fifth, L-BFGS) on "
        f"{res['linear_probe_train'] // 1000}k × {res['dim']} | {res['linear_probe_s']:.2f} s | "
        f"{acc(res['linear_probe_acc'])} |"] + blas_rows(res.get("logistic_blas_threads")))


def blas_rows(blas) -> list:
    """The probes table's rows for one logistic fit with BLAS on every thread and on one (absent
    from records made before it was measured)."""
    if not blas:
        return []
    label = f"one logistic fit, {blas['iterations']} L-BFGS steps on {blas['train'] // 1000}k × {blas['dim']}, BLAS on"
    same = "same predictions" if blas["same_predictions"] else "predictions differ"
    return [f"| {label} {blas['threads']} threads | {blas['seconds_all_threads']:.2f} s | |",
            f"| {label} 1 thread (the probes' setting) | {blas['seconds_one_thread']:.2f} s "
            f"(**{blas['speedup_one_thread']:.1f}×** faster) | {same} |"]


def scaling_markdown(res: dict) -> str:
    """``bench/scaling.json`` as bench/README.md's table: step time and peak memory along each sweep."""
    labels = {"image_size": ("image size (batch 64, mask 0.6)", lambda p: f"{p['image_size']}", " px"),
              "batch_size": ("batch (32 px, mask 0.6)", lambda p: f"{p['batch_size']}", ""),
              "mask_ratio": ("mask ratio (32 px, batch 128)", lambda p: f"{p['mask_ratio']:g}", "")}
    lines = ["| sweep | points | step s | peak MB |", "| --- | --- | --- | --- |"]
    for key, points in res["sweeps"].items():
        label, point, unit = labels[key]
        lines.append(f"| {label} | {' / '.join(point(p) for p in points)}{unit} | "
                     + " / ".join(f"{p['step_s']:.2f}" for p in points) + " | "
                     + " / ".join(f"{p['peak_memory_mb']:,.0f}" for p in points) + " |")
    return "\n".join(lines)


def targets_markdown(files: dict) -> str:
    """bench/README.md's targets table from the files that measured them (``{path: JSON}``): each
    target, its number, and whether it is met; the GPU target has no measurement file yet."""
    train, official = files["bench/train.json"]["presets"], files["bench/official.json"]
    views, probes = files["bench/views.json"], files["bench/probes.json"]
    met = lambda ok: "yes" if ok else "no: see below"  # noqa: E731
    ours = official["simlab_official_a"]
    ratio, cheap = official["ratio_official_a"], official["ratio_official_a_vs_cheap_loss"]
    a, demo = train["official-a"], train["demo"]
    rows = [
        ("`official-a` step ≥ 1.4× the official code's images/s, same machine, same hour",
         f"{ours['images_per_s']:.1f} against {official['official_a']['images_per_s']:.1f} images/s: **{ratio:.2f}×** "
         f"({cheap:.2f}× against the official code with only its loss rewritten, "
         f"{official['official_a_cheap_loss']['images_per_s']:.1f} images/s)", met(ratio >= 1.4)),
        ("`official-a` ≥ 0.7 of the fp32 matmul peak, useful FLOPs only",
         f"**{a['utilisation']:.2f}** ({a['flop_per_image'] / 1e9:.2f} GFLOP/image × {a['images_per_s']:.1f} "
         f"images/s ÷ {a['matmul_peak_flops'] / 1e9:.0f} GFLOP/s)", met(a["utilisation"] >= 0.7)),
        ("`demo` ≥ 0.7 of the peak", f"**{demo['utilisation']:.2f}**", met(demo["utilisation"] >= 0.7)),
        ("views at 224 px ≥ 1.5× the PIL reference per core",
         f"**{views['ratio_224px']:.2f}×** ({views['pairs_per_s_224px']:.1f} against "
         f"{views['reference_pairs_per_s_224px']:.1f} pairs/s)", met(views["ratio_224px"] >= 1.5)),
        ("k-NN ≥ 3× scikit-learn at 50k × 10k, same accuracy where the rules coincide",
         f"**{probes['knn_speedup']:.1f}×** ({probes['knn_s']:.1f} s against {probes['sklearn_knn_s']:.1f} s); "
         f"accuracies {'equal' if probes['same_accuracy_where_rules_coincide'] else 'differ'} "
         f"({100 * probes['knn_uniform_acc']:.2f} % against {100 * probes['sklearn_knn_acc']:.2f} %)",
         f"speed {'yes' if probes['knn_speedup'] >= 3 else 'no'}, accuracy "
         f"{'yes' if probes['same_accuracy_where_rules_coincide'] else 'no'}: see below"),
        ("GPU: `vit-b16-paper` at batch 128, bf16, ≥ 40 % MFU; device data path keeps up",
         "not measured yet on a GPU (no GPU run so far); `bench/gpu_check.sh --dry-run` runs the whole check "
         "on the CPU (tested)", "open"),
    ]
    return "\n".join(["| target | measured | met? |", "| --- | --- | --- |"]
                     + [f"| {t} | {m} | {ok} |" for t, m, ok in rows])
