"""Probe and dense-evidence results as text: every number beside its floor.

Used by ``simlab probe``, ``04_probes`` and ``03_dense_features``. A reader
should never meet a learned number without the rule that needs no learning
next to it (DESIGN.md convention 13), nor an unconverged fit without being told.
"""

from __future__ import annotations

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
    ev, floors = res["dense_evidence"], res["floors"]
    p, c = ev["predictions"], ev["correspondences"]
    dense_floors = [k for k in floors if k != "chance"]
    rows = [("SiM loss on held-out pairs (↓)", f"{p['decoder']['all']['loss']:.3f}",
             f"position mean {p['position mean (content-blind)']['all']['loss']:.3f}; loss-optimal position "
             f"mean {p['position mean, loss-optimal (content-blind)']['all']['loss']:.3f}"),
            ("cosine(prediction, target) (↑)", f"{p['decoder']['all']['cosine']:.3f}",
             f"position mean {p['position mean (content-blind)']['all']['cosine']:.3f}"),
            ("cosine over masked view-1 patches", f"{p['decoder']['masked']['cosine']:.3f}",
             f"position mean {p['position mean (content-blind)']['masked']['cosine']:.3f}"),
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
                 ("blind_loss", "content-blind loss", False))


def sweep_markdown(report: dict) -> str:
    """A sweep's summary (``sweep.json``) as a markdown table: mean ± std over seeds per grid point, and
    the random-init floor as the last row where the sweep has one."""
    grid = list(report["spec"]["grid"])
    cols = [c for c in SWEEP_COLUMNS if any(c[0] in s for s in report["summary"])]
    lines = ["| " + " | ".join([*grid, "seeds", *(c[1] for c in cols)]) + " |",
             "|" + " --- |" * (len(grid) + 1 + len(cols))]
    def cells(entry: dict) -> list[str]:  # mean ± std over seeds, "–" where the entry lacks the metric
        out = []
        for key, _, pct in cols:
            m, sd = entry.get(key), entry.get(f"{key}_std", 0.0)
            out.append("–" if m is None else f"{100 * m:.1f} % ± {100 * sd:.1f}" if pct else f"{m:.3f} ± {sd:.3f}")
        return out

    for s in report["summary"]:
        lines.append("| " + " | ".join([*(f"`{s[k]}`" for k in grid), str(s["seeds"]), *cells(s)]) + " |")
    ri = report.get("random_init")
    if ri:  # the floor, on the same probe sizes: no decoder, so no decoder loss
        lines.append("| " + " | ".join(["random init", *("–" for _ in grid[1:]), str(len(ri["seeds"])), *cells(ri)])
                     + " |")
    return "\n".join(lines)


SPEEDRUN_PROBES = (("linear", "linear", True), ("knn", "k-NN", True), ("fg_bg_miou", "fg/bg mIoU", False),
                   ("class_miou", "class mIoU", False))


def speedrun_markdown(report: dict) -> str:
    """``bench/speedrun.json`` as the README's table: per objective and probe, the training seconds at
    which the probe first reached its threshold ("not in N s" where it never did) and the value at the
    run's last checkpoint, under a header row with the thresholds and the random-init encoder."""
    def value(v, pct):
        return _pct(v) if pct else _num(v)

    head = ["objective", "images/s"] + [f"{label} (≥ {value(report['thresholds'][k], pct)})"
                                        for k, label, pct in SPEEDRUN_PROBES]
    if "sim" in report["objectives"]:
        head.append("decoder loss < content-blind")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    ri = report["random_init"]
    lines.append("| random init | – | " + " | ".join(value(ri.get(k), pct) for k, _, pct in SPEEDRUN_PROBES)
                 + (" | – |" if "sim" in report["objectives"] else " |"))
    for objective, res in report["objectives"].items():
        last = res["curve"][-1]
        crossed = res["time_to_threshold_s"]

        def cell(key, shown):
            t = crossed.get(key)
            when = f"**{t:.0f} s**" if t is not None else f"not in {last['train_seconds']:.0f} s"
            return f"{when} ({shown})"

        cells = [cell(k, value(last.get(k), pct)) for k, _, pct in SPEEDRUN_PROBES]
        if "sim" in report["objectives"]:
            cells.append(cell("decoder_beats_content_blind",
                              f"{_num(last.get('decoder_loss'))} vs {_num(last.get('blind_loss'))}")
                         if objective == "sim" else "–")
        lines.append(f"| {objective} | {res['images_per_s']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
