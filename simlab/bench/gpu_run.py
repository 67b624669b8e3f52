"""The GPU check's pretraining run (``pretrain_run`` in ``bench/gpu_check.sh``'s JSON): a short SiM
pretraining killed part-way from the command line, resumed and finished by the ``02_pretrain``
notebook on the same folder, then probed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
RUN_TARGET_S = 120.0  # the notebook run's training time on the GPU

def _records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SIMLAB_FAULT"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**env, **extra}


def _notebook_text(path: Path) -> str:
    """Everything an executed notebook's cells printed (its stream outputs)."""
    nb = json.loads(path.read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", ())
                   if o.get("output_type") == "stream")


def pretrain_run(work: Path, device: torch.device, dry_run: bool, strict: bool) -> dict:
    """A short pretraining, killed and resumed: ``simlab pretrain`` in a subprocess, SIGKILLed (by
    ``SIMLAB_FAULT`` on rank 0) before step ``kill_at``; then the ``02_pretrain`` notebook under
    papermill on the same run folder and config, which must resume from the last checkpoint and
    complete (``simlab.train.pretrain`` in this process where papermill or a kernel is missing);
    images/s of the resumed part; then ``simlab probe`` on the finished run."""
    from ..notebooks import defaults, pretrain_config
    from ..presets import run_config
    from . import train_step_stats
    name = "tiny" if dry_run else "cifar-vit-s"
    fixed = ["progress=false", "knn_every=0"]
    if dry_run:
        steps, kill_at, every, log_every = 6, 3, 1, 1
    else:
        # the run's length from one measured step, so it trains for about RUN_TARGET_S; the
        # preset's 40-epoch warmup would outlast so short a run: warm up over 5 % of it instead
        fixed += ["warmup_epochs=none", "warmup_frac=0.05"]
        cfg = run_config(name, fixed, dataset="shapes")
        step_s = train_step_stats(cfg, cfg.train.batch_size, device, repeats=5, flops=False)["step_s"]
        steps = int(min(max(RUN_TARGET_S / step_s, 200), 20_000))
        kill_at = steps // 5
        every, log_every = max(kill_at // 2, 1), 20
    overrides = [*fixed, f"log_every={log_every}", f"checkpoint_every={every}"]
    params = {"preset": name, "dataset": "shapes", "steps": steps, "overrides": overrides}
    run_dir = work / "pretrain"
    train_dir = run_dir / "train"  # where 02_pretrain trains
    cfg = pretrain_config({**defaults("02_pretrain"), **params, "run_dir": str(run_dir)})
    out: dict = {"preset": name, "dataset": "shapes", "image_size": cfg.data.image_size, "steps": steps,
                 "batch_size": cfg.train.batch_size, "killed_before_step": kill_at}

    # 1. the same run from the command line, killed outright part-way
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "simlab", "pretrain", "--preset", name, "--dataset", "shapes", "--steps", str(steps),
           "--out", str(train_dir), *(x for o in overrides for x in ("--set", o))]
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env=_env(SIMLAB_FAULT=f"0:{kill_at}:kill"))
    out["killed_exit_code"] = killed.returncode  # -9: SIGKILL
    saved = sorted((train_dir / "checkpoints").glob("ckpt_*.pt")) if (train_dir / "checkpoints").exists() else []
    out["checkpoints_after_kill"] = [int(p.stem.split("_")[1]) for p in saved]
    if killed.returncode != -9:
        out["killed_stderr_tail"] = killed.stderr[-1500:]
    out["killed_run_s"] = time.perf_counter() - start

    # 2. the notebook on the same folder: it must resume and finish
    start = time.perf_counter()
    text = ""
    try:
        import ipykernel  # noqa: F401 - the kernel papermill starts needs it
        import papermill  # noqa: F401
    except ImportError as e:
        out["notebook"] = f"skipped: {e} (run bench/gpu_wheels.sh where PyPI is reachable, carry .whl/)"
    else:
        from ..notebooks import run_notebook
        try:
            text = _notebook_text(run_notebook("02_pretrain", run_dir, params, progress=False))
            out["notebook"] = "ran"
        except Exception as e:  # a missing kernel, or a failing cell: said, and the run done without it
            if strict:
                raise
            out["notebook"] = f"failed: {type(e).__name__}: {str(e)[:500]}"
    if out["notebook"] != "ran":
        from ..train import pretrain
        messages: list[str] = []
        pretrain(cfg, train_dir, log=messages.append)
        text = "\n".join(messages)
    out["resumed_run_s"] = time.perf_counter() - start
    found = re.search(r"resuming .* from step (\d+)", text)
    records = _records(train_dir)
    resumed = int(found.group(1)) if found else None
    out.update(resumed_from_step=resumed, last_logged_step=records[-1]["step"] if records else None,
               complete=(train_dir / "COMPLETE").exists())
    out["resumes_after_kill"] = (killed.returncode == -9 and resumed is not None and 0 < resumed <= kill_at
                                 and out["complete"] and out["last_logged_step"] == steps)
    # images/s of the resumed part; its first window holds the start-up
    after = [r["images_per_s"] for r in records if "images_per_s" in r and r["step"] > (resumed or 0)]
    out["images_per_s"] = statistics.median(after[1:] or after) if after else None
    out["final_loss"] = records[-1]["loss"] if records else None

    # 3. simlab probe on the run folder (its newest checkpoint), small sizes
    from ..cli import main as simlab_main
    probe_json = work / "probe.json"
    # train images, test images, dense view pairs: small, as the dense probe fits a logistic regression
    # on every train image's 64 patch tokens (on the host)
    sizes = ("60", "30", "16") if dry_run else ("1000", "500", "256")
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the command's table; the JSON file is what counts
        code = simlab_main(["probe", "--checkpoint", str(train_dir), "--train-size", sizes[0],
                            "--test-size", sizes[1], "--dense-pairs", sizes[2], "--out", str(probe_json)])
    out["probe_s"] = time.perf_counter() - start
    out["probe"] = json.loads(probe_json.read_text()) if code == 0 and probe_json.exists() else f"failed: exit {code}"
    return out
