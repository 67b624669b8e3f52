"""Reliability: nothing lost on a kill or a full disk, corruption detected, exact resume after SIGKILL,
non-finite values stopped, and no checkpoint runs code. Tiny preset, CPU, deterministic algorithms."""

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from simlab import checkpoint_io as ckpt_module  # the writer and its fault hooks live there
from simlab.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, load_encoder, save_atomic
from simlab.cli import main
from simlab.config import ConfigError, apply_overrides
from simlab.presets import preset
from simlab.train import NonFiniteError, pretrain

ROOT = Path(__file__).resolve().parent.parent
QUIET = dict(log=lambda *_: None)


def tiny(*overrides):
    return apply_overrides(preset("tiny"), ["steps=20", "checkpoint_every=10", "keep_checkpoints=5", *overrides])


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*tmp*")]


def fail_save_of(monkeypatch, name: str, after_bytes: int) -> None:
    """Make the checkpoint writer die after ``after_bytes`` bytes, for the file ``name`` only."""
    real = ckpt_module.save_atomic

    def save(obj, path):
        if Path(path).name == name:
            monkeypatch.setattr(ckpt_module, "_FAIL_AFTER_BYTES", after_bytes)
        try:
            return real(obj, path)
        finally:
            monkeypatch.setattr(ckpt_module, "_FAIL_AFTER_BYTES", None)

    monkeypatch.setattr(ckpt_module, "save_atomic", save)


# --------------------------------------------------------------------------- 1. atomic checkpoints
@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("reference")
    pretrain(tiny(), run, **QUIET)
    return run


# 5 positions by default; 20 more, spread over the whole file, under -m slow
_FRACTIONS = [0.0, 0.02, 0.4, 0.8, 0.999]
_SLOW_FRACTIONS = [pytest.param((k + 0.5) / 20, marks=pytest.mark.slow) for k in range(20)]


@pytest.mark.parametrize("fraction", _FRACTIONS + _SLOW_FRACTIONS)
def test_a_writer_dying_mid_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, reference_run, fraction):
    size = (reference_run / "checkpoints" / "ckpt_00000020.pt").stat().st_size
    fail_save_of(monkeypatch, "ckpt_00000020.pt", int(fraction * size))
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"ckpt_00000020.pt: could not write the checkpoint .*No space left"):
        pretrain(tiny(), run, **QUIET)
    assert [p.name for p in list_checkpoints(run)] == ["ckpt_00000010.pt"]  # no partial file has a final name
    assert no_temporary_files(run)
    monkeypatch.undo()
    messages = []
    pretrain(tiny(), run, log=messages.append)  # the resume loads the previous good checkpoint
    assert any("resuming" in m and "step 10" in m for m in messages)
    a, b = (load_checkpoint(list_checkpoints(r)[0]) for r in (reference_run, run))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_sigkill_during_a_large_save_never_leaves_a_partial_file(tmp_path):
    """A real SIGKILL of a child process that is writing 400 MB checkpoints over an existing one."""
    target = tmp_path / "big.pt"
    save_atomic({"format": "simlab-checkpoint", "schema": ckpt_module.SCHEMA, "x": torch.ones(10)}, target)
    script = (f"import torch; from simlab.checkpoint import save_atomic, SCHEMA\n"
              f"x = torch.randn(100_000_000)\nprint('ready', flush=True)\n"
              f"while True: save_atomic({{'format': 'simlab-checkpoint', 'schema': SCHEMA, 'x': x}}, {str(target)!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".big.pt.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # well inside a write of 400 MB
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    loaded = load_checkpoint(target)  # whole and matching its digest: either the old file or a new one
    assert loaded["x"].numel() in (10, 100_000_000)
    assert list(tmp_path.glob(".big.pt.tmp-*")), "the kill landed mid-write (the temporary file stayed behind)"


# --------------------------------------------------------------------------- 2. corruption detected
@pytest.mark.parametrize("damage", ["truncate_half", "truncate_tail", "flip_byte", "zero_bytes", "not_a_checkpoint"])
def test_damaged_checkpoints_raise_one_clear_error_naming_the_file(tmp_path, reference_run, damage):
    path = tmp_path / "ckpt.pt"
    good = (reference_run / "checkpoints" / "ckpt_00000020.pt").read_bytes()
    data = {"truncate_half": good[:len(good) // 2], "truncate_tail": good[:-100],
            "flip_byte": good[:len(good) // 3] + bytes([good[len(good) // 3] ^ 0x01]) + good[len(good) // 3 + 1:],
            "zero_bytes": b"", "not_a_checkpoint": b"hello, I am a text file\n"}[damage]
    path.write_bytes(data)
    if damage == "flip_byte":  # the digest written beside every checkpoint catches what torch.load would not
        (tmp_path / "ckpt.pt.sha256").write_bytes((reference_run / "checkpoints" / "ckpt_00000020.pt.sha256")
                                                  .read_bytes())
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=str(path)):
        load_encoder(path)


def test_resume_falls_back_to_the_newest_valid_checkpoint_and_says_so(tmp_path):
    run = tmp_path / "run"
    pretrain(tiny(), run, **QUIET)
    (run / "COMPLETE").unlink()
    newest = list_checkpoints(run)[0]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated after the fact
    messages = []
    pretrain(tiny(), run, log=messages.append)
    assert any("skipping checkpoint" in m and newest.name in m for m in messages)
    assert any("resuming" in m and "step 10" in m for m in messages)
    assert load_checkpoint(list_checkpoints(run)[0])["step"] == 20


# --------------------------------------------------------------------------- 3. exact resume after SIGKILL
def cli_pretrain(run: Path, workers: int, fault=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("SIMLAB_FAULT", None)
    if fault:
        env["SIMLAB_FAULT"] = fault
    cmd = [sys.executable, "-m", "simlab", "pretrain", "--preset", "tiny", "--out", str(run), "--steps", "40",
           "--set", "checkpoint_every=10", "--set", f"num_workers={workers}", "--set", "log_every=1"]
    # a session of its own, as a terminal's foreground job: the 'int' fault sends SIGINT to the whole
    # group (data workers included), as Ctrl-C does, and never to pytest
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
                          start_new_session=True)


# CI time: only the cases with loader workers run by default. SIGKILL's with workers covers the same
# resume path and Ctrl-C's the same save-and-stop as SIGTERM's (one handler), adding the workers' own
# signal handling; the single-process cases are opt-in (-m slow)
@pytest.mark.parametrize("stop, workers", [pytest.param("kill", 0, marks=pytest.mark.slow), ("kill", 2),
                                           pytest.param("term", 0, marks=pytest.mark.slow),
                                           pytest.param("int", 0, marks=pytest.mark.slow), ("int", 2)])
def test_a_killed_or_terminated_run_resumes_bitwise_equal_to_an_uninterrupted_one(tmp_path, stop, workers):
    whole = cli_pretrain(tmp_path / "whole", workers)
    assert whole.returncode == 0, whole.stderr
    # the signal arrives at step 13: after the step-10 checkpoint, mid-epoch (16 steps per epoch)
    stopped = cli_pretrain(tmp_path / "split", workers, fault=f"0:13:{stop}")
    if stop == "kill":
        assert stopped.returncode == -signal.SIGKILL
        resume_step = 10
    elif stop == "term":  # SIGTERM: step 13 finishes, is saved as step 14, and the run exits 143
        assert stopped.returncode == 143, stopped.stderr
        assert "SIGTERM: saved step 14 and stopped" in stopped.stdout
        resume_step = 14
    else:  # Ctrl-C: the same save and stop, exit 130, one line and no traceback
        assert stopped.returncode == 130, stopped.stderr
        assert stopped.stdout.strip().splitlines()[-1] == ("interrupted: saved step 14; run the same command "
                                                           "to resume")
        assert "Traceback" not in stopped.stderr and "KeyboardInterrupt" not in stopped.stderr
        resume_step = 14
    assert list_checkpoints(tmp_path / "split")[0].name == f"ckpt_{resume_step:08d}.pt"
    again = cli_pretrain(tmp_path / "split", workers)
    assert again.returncode == 0, again.stderr
    assert f"from step {resume_step}" in again.stdout + again.stderr
    a, b = (load_checkpoint(list_checkpoints(tmp_path / r)[0]) for r in ("whole", "split"))
    for k in a["model"]:  # online and target weights, BatchNorm statistics
        assert torch.equal(a["model"][k], b["model"][k]), k
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        assert all(torch.equal(va[n], vb[n]) for n in va), ka
    metrics = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in metrics]
    assert steps == list(range(1, 41)), "cut back to the checkpoint: no step logged twice"
    reference = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in metrics] == [r["loss"] for r in reference]


# --------------------------------------------------------------------------- 5. non-finite values
@pytest.fixture(scope="module")
def reference_run_5(tmp_path_factory):
    run = tmp_path_factory.mktemp("reference5")
    pretrain(tiny("checkpoint_every=5"), run, **QUIET)
    return run


@pytest.mark.parametrize("kind, term", [("nan", "loss"), ("inf", "loss"), ("grad_nan", "grad_norm")])
def test_a_non_finite_loss_or_gradient_stops_before_the_optimizer_step(tmp_path, monkeypatch, reference_run_5,
                                                                      kind, term):
    monkeypatch.setenv("SIMLAB_FAULT", f"0:7:{kind}")
    run = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=rf"step 7: non-finite {term}"):
        pretrain(tiny("checkpoint_every=5"), run, **QUIET)
    newest = load_checkpoint(list_checkpoints(run)[0])
    assert newest["step"] == 5 and not (run / "COMPLETE").exists()
    monkeypatch.delenv("SIMLAB_FAULT")
    # nothing of the poisoned step reached the weights: resumed, the run ends exactly like a clean one
    pretrain(tiny("checkpoint_every=5"), run, **QUIET)
    a, b = (load_checkpoint(list_checkpoints(r)[0]) for r in (run, reference_run_5))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


# --------------------------------------------------------------------------- 7. safe loading
class Canary:
    """Unpickling this would create a file: the proof that a load ran code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("form", ["zip", "pickle"])
def test_a_checkpoint_whose_pickle_runs_code_is_refused_and_the_code_never_runs(tmp_path, form):
    canary = tmp_path / "canary"
    path = tmp_path / "checkpoints" / "ckpt_00000010.pt"
    path.parent.mkdir()
    payload = {"format": "simlab-checkpoint", "schema": ckpt_module.SCHEMA, "model": Canary(canary)}
    if form == "zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    for load in (load_checkpoint, load_encoder):
        with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
            load(path)
    messages = []  # auto-resume skips it (and trains from scratch) rather than loading it
    pretrain(tiny("steps=2"), tmp_path, log=messages.append)
    assert any("skipping checkpoint" in m for m in messages)
    assert main(["probe", "--checkpoint", str(path), "--train-size", "20", "--test-size", "10"]) == 2
    assert not canary.exists()


# --------------------------------------------------------------------------- 9. disk trouble
def test_a_full_disk_or_read_only_folder_at_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    pretrain(tiny(), run, **QUIET)
    (run / "COMPLETE").unlink()
    for p in list_checkpoints(run)[:1]:  # as if stopped after the step-10 checkpoint
        p.unlink()
        p.with_name(p.name + ".sha256").unlink()

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(ckpt_module, "_open_tmp", read_only)
    args = ["pretrain", "--preset", "tiny", "--out", str(run), "--steps", "20", "--set", "checkpoint_every=10",
            "--set", "keep_checkpoints=5"]
    assert main(args) == 2
    assert "Read-only file system" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr(ckpt_module, "_FAIL_AFTER_BYTES", 5000)
    assert main(args) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert load_checkpoint(list_checkpoints(run)[0])["step"] == 10 and no_temporary_files(run)


# --------------------------------------------------------------------------- 10. consistent reruns
def test_rerunning_a_finished_run_does_nothing_and_a_redefined_one_shows_the_difference(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", "--preset", "tiny", "--out", str(run), "--steps", "4"]
    assert main(args) == 0
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert main(args) == 0 and "nothing to do" in capsys.readouterr().out
    assert main([*args, "--set", "log_every=2", "--set", "num_workers=1"]) == 0  # execution-only fields
    assert "nothing to do" in capsys.readouterr().out
    # a finished run rerun with another definition is refused, each difference shown; a longer one
    # is refused with the reason (its schedules ended at its own length)
    assert main([*args, "--set", "neg_weight=0.1"]) == 2
    err = capsys.readouterr().err
    assert "is a finished run defined differently" in err
    assert "neg_weight: the run has 0.02, this command has 0.1" in err
    assert main([*args[:-1], "8"]) == 2
    err = capsys.readouterr().err
    assert "steps:" in err and "finished run of 4 steps; this command asks for 8" in err and "new --out" in err
    assert main([*args[:-1], "2"]) == 2
    assert "steps: the run has 4, this command has 2" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    (run / "COMPLETE").unlink()
    with pytest.raises(ConfigError, match=r"mask_kind: checkpoint has 'block', this command has 'random'"):
        pretrain(apply_overrides(preset("tiny"), ["steps=4", "mask_kind=random"]), run, **QUIET)
