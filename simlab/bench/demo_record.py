"""``make demo``'s own record (``python -m simlab.bench demo``): its wall time per part and its encoder
beside the random-init one, read from a finished demo folder.

The demo writes ``demo_times.json`` (each part's wall time) and ``probes.json`` (04_probes' rows: the
demo run and a random-init encoder, and any other checkpoint 04 was given); this keeps the numbers the
README quotes, with the hardware, the run's length and each probe's margin over random init. A folder
that is not finished (no ``COMPLETE``) is first run to the end as ``make demo`` runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..dense import CONTENT_BLIND, CONTENT_BLIND_SHRUNK, READOUT
from ..report import FOUR_PROBES

# the demo's acceptance: the four probes above random init, and the decoder below the content-blind loss
PROBES = tuple(k for k, _, _ in FOUR_PROBES)
DENSE_FLOORS = (CONTENT_BLIND, CONTENT_BLIND_SHRUNK)
# the decoder's loss is recorded beside these, the matched-token readout (a reference) where scored
DENSE_REFERENCES = (*DENSE_FLOORS, READOUT)


def _row(r: dict) -> dict:
    out = {k: r[k] for k in (*PROBES, "seconds") if k in r}
    if r.get("random_init_seed") is not None:
        out["seed"] = r["random_init_seed"]
    preds = r.get("dense_evidence", {}).get("predictions", {})
    if preds:
        out["decoder_loss"] = preds["decoder"]["all"]["loss"]
        out.update({name: preds[name]["all"]["loss"] for name in DENSE_REFERENCES if name in preds})
        # the cosine is blind to the shrinkage SiM's negative term rewards (README "Every number beside its floor")
        out["decoder_cosine"] = preds["decoder"]["all"]["cosine"]
        out["content_blind_cosine"] = preds[CONTENT_BLIND]["all"]["cosine"]
        # learned correspondences within one patch of the geometric truth, beside their floors
        out["correspondences"] = r["dense_evidence"]["correspondences"]
    return out


def record_demo(out="runs/demo") -> dict:
    """The demo folder ``out`` summarised (run first where it is not finished)."""
    from ..presets import saved_config
    out = Path(out)
    if not (out / "COMPLETE").exists():
        from ..demo import run
        run(out)
    times = json.loads((out / "demo_times.json").read_text())
    rows = json.loads((out / "probes.json").read_text())
    cfg = saved_config(out / "train")
    train = cfg.train
    by_role = {}  # the demo run, its random-init floor, and any other checkpoint by its row name
    for r in rows:
        ours = Path(r["checkpoint"]).resolve().is_relative_to((out / "train").resolve())
        by_role["random init" if r["encoder"] == "random-init" else "demo" if ours else r["row"]] = _row(r)
    demo, floor = by_role["demo"], by_role["random init"]
    margins = {k: round(demo[k] - floor[k], 6) for k in PROBES}
    margins.update({f"decoder - {name}": round(demo["decoder_loss"] - demo[name], 6)
                    for name in DENSE_REFERENCES if name in demo})
    return {"command": "make demo", "steps": train.steps, "batch_size": train.batch_size,
            "ema_start": train.ema_start, "seed": cfg.seed,
            "probe_sizes": [rows[0]["train_size"], rows[0]["test_size"]], "encoders_probed": len(rows),
            "seconds": {k: round(v, 1) for k, v in times.items()}, "probes": by_role, "margins": margins}
