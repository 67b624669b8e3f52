"""Fine-tuning at scale on the CPU: two gloo ranks under ``torchrun`` (with two micro-batches each) and
one process with ``accum_steps=2`` compute what one process computes, and evaluation scores every
validation image once.

The ``tiny`` fine-tuning preset has no mixup, drop path, RandAugment or erasing, so nothing here
draws per rank; each image's crop and flip are keyed by (seed, step, index). Equivalence is within
float tolerance (DDP averages what one process gets as one mean), except for attention's key biases,
whose exact gradient is zero (softmax ignores them): AdamW turns their rounding noise into updates of
up to lr per step (tests/test_distributed.py measured the same for pretraining).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import split_invariant

from simlab import finetune as ft
from simlab.checkpoint import SHIPPED_CHECKPOINT, list_checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
STEPS, VAL = 4, 51  # 51 validation images: rank 0 scores 26, rank 1 25
SETTINGS = [f"steps={STEPS}", "train_size=64", f"val_size={VAL}", "batch_size=16", "log_every=1",
            "checkpoint_every=4", "num_workers=0"]
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 5e-6


def in_process(run: Path, *extra) -> dict:
    return ft.finetune(SHIPPED_CHECKPOINT, ft.finetune_config("tiny", [*SETTINGS, *extra]), run, log=lambda *_: None)


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def split_weights(run: Path) -> tuple[dict, dict]:
    """The final weights as (parameters with an exact gradient, attention key biases)."""
    return split_invariant(load_checkpoint(list_checkpoints(run)[0])["model"])


def assert_same_run(a: Path, b: Path) -> None:
    la, lb = losses(a), losses(b)
    assert len(la) == len(lb) == STEPS
    assert torch.allclose(torch.tensor(la), torch.tensor(lb), rtol=LOSS_RTOL, atol=0), (la, lb)
    (ea, ka), (eb, kb) = split_weights(a), split_weights(b)
    assert set(ea) == set(eb)
    worst = max((ea[k] - eb[k]).abs().max().item() for k in ea)
    assert worst < WEIGHT_ATOL, worst
    lr = ft.finetune_config("tiny", SETTINGS).peak_lr()
    assert max((ka[k] - kb[k]).abs().max().item() for k in ka) <= lr * STEPS


@pytest.fixture(scope="module")
def one(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("finetune") / "one"
    return run, in_process(run)


def test_accumulating_two_micro_batches_equals_the_whole_batch(one, tmp_path):
    run, whole = one
    accum = in_process(tmp_path / "accum", "accum_steps=2")
    assert_same_run(run, tmp_path / "accum")
    assert accum["evaluated"] == whole["evaluated"] == VAL
    assert abs(accum["top1"] - whole["top1"]) <= 1 / VAL + 1e-9


def test_two_ranks_fine_tune_as_one_process_and_score_each_image_once(one, tmp_path):
    run, whole = one
    env = {**{k: v for k, v in os.environ.items() if k != "SIMLAB_FAULT"}, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "simlab", "finetune", "--preset", "tiny", "--out", str(tmp_path / "two"),
           *(x for s in [*SETTINGS, "accum_steps=2"] for x in ("--set", s))]  # no_sync on the first micro-batch
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert_same_run(run, tmp_path / "two")
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["ranks"] == 2 and whole["ranks"] == 1
    assert two["evaluated"] == two["val_size"] == VAL  # the strided shards cover the set once
    assert abs(two["top1"] - whole["top1"]) <= 1 / VAL + 1e-9
    assert abs(two["top5"] - whole["top5"]) <= 1 / VAL + 1e-9
    # rank 0 alone wrote the run folder: one record per step, one checkpoint
    assert [json.loads(line)["step"] for line in (tmp_path / "two" / "metrics.jsonl").open()] == [1, 2, 3, 4]
    assert len(list_checkpoints(tmp_path / "two")) == 1 and (tmp_path / "two" / "COMPLETE").exists()
    # the results printed once, by rank 0, after its log lines (a second copy would not parse)
    assert json.loads(out.stdout[out.stdout.index("{"):])["ranks"] == 2
