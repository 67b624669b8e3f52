"""Multi-process training on CPU with gloo: N ranks compute what one process computes, and fail fast.

Every run here is a real ``torchrun`` (``python -m torch.distributed.run``) of
``simlab pretrain`` with the ``tiny`` preset. Equivalence is within float
tolerance, not bitwise: the ranks sum BatchNorm statistics, the loss's F and
the gradients in another order than one process does (and DDP averages
gradients that one process gets as one mean), so results differ in the last
bits, and AdamW carries those differences on.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import split_invariant

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--set", "log_every=1", "--set", "num_workers=0"]
# Tolerances, measured and then given a margin. Losses agree to ~1e-7 (relative), parameters to
# ~2e-8 and BatchNorm running variances (of size ~3) to ~5e-7 after 6 steps, except parameters whose
# exact gradient is zero (see split_invariant): their rounding noise becomes AdamW updates of up to lr
# per step, so two runs differ there by up to ~1e-3 (lr 1e-3); they get a bound of lr x steps.
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 5e-6


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SIMLAB_FAULT"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    return env


def torchrun(args, nproc=2, extra_launcher=(), timeout=120, **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           *extra_launcher, "-m", "simlab", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(**env), cwd=ROOT)


def single(args, timeout=120, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simlab", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(**env), cwd=ROOT)


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def final_state(run: Path) -> dict:
    path = sorted((run / "checkpoints").glob("*.pt"))[-1]
    return torch.load(path, weights_only=True)["model"]


def checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("*.pt"))


def largest_difference(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


def assert_same_run(a: Path, b: Path, steps: int = 6, lr: float = 1e-3, objective: str = "sim") -> float:
    la, lb = losses(a), losses(b)
    assert len(la) == len(lb)
    assert torch.allclose(torch.tensor(la), torch.tensor(lb), rtol=LOSS_RTOL, atol=0), (la, lb)
    (ea, ia), (eb, ib) = split_invariant(final_state(a), objective), split_invariant(final_state(b), objective)
    worst = largest_difference(ea, eb)
    assert worst < WEIGHT_ATOL, worst
    assert largest_difference(ia, ib) <= lr * steps
    return worst


def test_global_batchnorm_equals_one_batchnorm_over_all_ranks():
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests" / "workers" / "global_bn.py")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env(), cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    diffs = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    assert set(diffs) >= {"output", "input_grad", "weight_grad", "running_var"}
    assert max(diffs.values()) < 1e-5


# CI time: MAE has no collective beyond DDP's and UniGrad-ID none beyond SiM's F (SiM's case covers
# both), so they are opt-in; ID with MoCo v3's InfoNCE gathers every rank's keys as its negatives
@pytest.mark.parametrize("objective, extra", [("sim", []), pytest.param("mae", [], marks=pytest.mark.slow),
                                              ("id", ["--set", "id_loss=infonce"]),
                                              pytest.param("id", [], marks=pytest.mark.slow)],
                         ids=["sim", "mae", "id-infonce", "id-unigrad"])
def test_two_processes_compute_what_one_process_computes(tmp_path, objective, extra):
    args = [*TINY, "--steps", "6", "--set", f"objective={objective}", *extra]
    one = single(["pretrain", *args, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = torchrun(["pretrain", *args, "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr
    assert "FutureWarning" not in two.stderr, two.stderr  # no deprecated collective warns on every rank
    worst = assert_same_run(tmp_path / "one", tmp_path / "two", objective=objective)
    print(f"{objective}: largest weight difference between 1 and 2 processes after 6 steps: {worst:.2e}")
    # rank 0 alone wrote the run folder
    assert (tmp_path / "two" / "COMPLETE").exists()
    assert len(losses(tmp_path / "two")) == 6


@pytest.mark.parametrize("overrides", [["decoder_norm=ln", "neg_weight=0"],
                                       pytest.param(["objective=mae"], marks=pytest.mark.slow)],
                         ids=["sim-layernorm", "mae"])
def test_accumulation_equals_the_large_batch(tmp_path, overrides):
    """Without batch statistics (LayerNorm ablation, lambda = 0; or MAE) two micro-batches of 8 are one batch of 16."""
    sets = [x for o in overrides for x in ("--set", o)]
    for name, accum in (("big", 1), ("accum", 2)):
        out = single(["pretrain", *TINY, *sets, "--steps", "5", "--set", f"accum_steps={accum}",
                      "--out", str(tmp_path / name)])
        assert out.returncode == 0, out.stderr
    assert_same_run(tmp_path / "big", tmp_path / "accum", steps=5)


def test_accumulation_with_batchnorm_runs_on_two_ranks(tmp_path):
    out = torchrun(["pretrain", *TINY, "--steps", "3", "--set", "accum_steps=2", "--out", str(tmp_path / "r")])
    assert out.returncode == 0, out.stderr
    assert len(losses(tmp_path / "r")) == 3
    bad = single(["pretrain", *TINY, "--steps", "3", "--set", "accum_steps=3", "--out", str(tmp_path / "b")])
    assert bad.returncode == 2 and "accum_steps" in bad.stderr


@pytest.mark.parametrize("kind", ["raise", pytest.param("nan", marks=pytest.mark.slow)])  # CI time: one default
def test_a_fault_on_one_rank_stops_every_rank_quickly(tmp_path, kind):
    run = tmp_path / "run"
    start = time.monotonic()
    out = torchrun(["pretrain", *TINY, "--steps", "30", "--set", "checkpoint_every=1",
                    "--set", "keep_checkpoints=100", "--out", str(run)], SIMLAB_FAULT=f"1:3:{kind}")
    elapsed = time.monotonic() - start
    assert out.returncode != 0
    assert elapsed < 60, elapsed
    text = out.stdout + out.stderr
    if kind == "raise":
        assert "injected fault on rank 1 at step 3" in text and "Traceback" in text
    else:
        assert "non-finite" in text and "step 3" in text
    # steps 0..2 finished (checkpoints 1..3); nothing was written for the failing step or after it
    assert checkpoint_steps(run) and max(checkpoint_steps(run)) <= 3
    assert not (run / "COMPLETE").exists()


def test_sigterm_saves_the_last_finished_step_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", *TINY, "--steps", "100000", "--set", "checkpoint_every=100000", "--out", str(run)]
    proc = subprocess.Popen([sys.executable, "-m", "simlab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)  # the promise: out within 30 s of the signal
    assert proc.returncode == 143, err
    steps = checkpoint_steps(run)
    assert len(steps) == 1 and 5 <= steps[0] < 100000
    assert f"SIGTERM: saved step {steps[0]} and stopped" in out
    ckpt = torch.load(run / "checkpoints" / f"ckpt_{steps[0]:08d}.pt", weights_only=True)
    assert ckpt["step"] == steps[0]
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    # the same command resumes from it
    again = subprocess.Popen([sys.executable, "-m", "simlab", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(metrics.read_text().splitlines()) <= steps[0] + 2:
        time.sleep(0.2)
    again.send_signal(signal.SIGTERM)
    out2, err2 = again.communicate(timeout=60)
    assert again.returncode == 143, err2
    assert f"resuming {run} from step {steps[0]}" in out2
    assert max(checkpoint_steps(run)) > steps[0] + 2


def test_torchrun_restart_after_a_killed_rank_resumes_and_finishes(tmp_path):
    args = [*TINY, "--steps", "10", "--set", "checkpoint_every=2"]
    reference = torchrun(["pretrain", *args, "--out", str(tmp_path / "ref")])
    assert reference.returncode == 0, reference.stderr
    out = torchrun(["pretrain", *args, "--out", str(tmp_path / "run")], extra_launcher=("--max-restarts", "1"),
                   SIMLAB_FAULT="1:5:kill")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "run" / "COMPLETE").exists()
    assert "resuming" in out.stdout + out.stderr
    # the resumed run ends where the uninterrupted one does
    (ea, ia), (eb, ib) = split_invariant(final_state(tmp_path / "ref")), split_invariant(final_state(tmp_path / "run"))
    assert largest_difference(ea, eb) < WEIGHT_ATOL
    assert largest_difference(ia, ib) <= 1e-3 * 10
