"""The command line as people meet it: one-line errors with exit code 2 and nothing left behind, run
folders accepted wherever a checkpoint is, exports that refuse to overwrite, the help text, --version,
and Ctrl-C as one line with exit code 130."""

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import simlab
from simlab.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, resolve_checkpoint
from simlab.cli import build_parser, main
from simlab.notebooks import NOTEBOOK_DIR

ROOT = Path(__file__).resolve().parent.parent


def one_line(err: str) -> str:
    """The single error line a failing command printed on stderr, with no traceback (a progress line
    before it, such as probe's "[  0 s] loading ...", is not an error line)."""
    lines = [line for line in err.strip().splitlines() if not line.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("simlab ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished tiny run with two checkpoints (steps 2 and 4)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["pretrain", "--preset", "tiny", "--out", str(out), "--steps", "4",
                 "--set", "checkpoint_every=2", "--set", "keep_checkpoints=5", "--set", "progress=false"]) == 0
    return out


# --------------------------------------------------------------------------- run folders everywhere
def test_load_encoder_takes_a_run_folder_as_its_newest_checkpoint(run):
    newest = list_checkpoints(run)[0]
    assert newest.name == "ckpt_00000004.pt" and resolve_checkpoint(run) == newest
    a, b = simlab.load_encoder(run), simlab.load_encoder(newest)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_export_takes_a_run_folder_and_probe_too(run, tmp_path, capsys):
    out = tmp_path / "enc.safetensors"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert str(list_checkpoints(run)[0]) in capsys.readouterr().out  # says which checkpoint it took
    assert main(["probe", "--checkpoint", str(run), "--train-size", "20", "--test-size", "10",
                 "--out", str(tmp_path / "p.json")]) == 0
    import json
    assert json.loads((tmp_path / "p.json").read_text())["checkpoint"] == str(list_checkpoints(run)[0])


def test_a_folder_without_checkpoints_is_one_clear_error(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "no valid checkpoint in" in one_line(capsys.readouterr().err)
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        simlab.load_encoder(tmp_path)


# --------------------------------------------------------------------------- exports
@pytest.mark.parametrize("fmt", ["simlab", "timm", "checkpoint"])
def test_exports_are_ordinary_files_and_never_overwritten_without_force(run, tmp_path, capsys, fmt):
    out = tmp_path / f"out.{fmt}"
    args = ["export", "--checkpoint", str(run), "--out", str(out), "--format", fmt]
    assert main(args) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # 0644 under the usual umask, not 0600
    first = out.read_bytes()
    out.write_bytes(b"precious")
    capsys.readouterr()
    assert main(args) == 2
    assert "exists; pass --force" in one_line(capsys.readouterr().err)
    assert out.read_bytes() == b"precious"
    assert main([*args, "--force"]) == 0
    if fmt == "checkpoint":
        assert load_checkpoint(out)["step"] == 4
    else:  # the same tensors (safetensors may order its metadata differently from one write to the next)
        from safetensors.torch import load
        a, b = load(first), load(out.read_bytes())
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.glob(".*tmp*"))


# --------------------------------------------------------------------------- clean one-line errors
@pytest.mark.parametrize("content, says", [
    (b"hello, I am a text file\n", "not a PyTorch checkpoint file (it looks like text)"),
    (b"", "the file is empty"),
    ("half", "truncated or corrupt: the zip archive is incomplete"),
])
def test_a_bad_checkpoint_file_says_plainly_what_is_wrong(run, tmp_path, capsys, content, says):
    path = tmp_path / "bad.pt"
    good = list_checkpoints(run)[0].read_bytes()
    path.write_bytes(good[:len(good) // 2] if content == "half" else content)
    for command in (["export", "--out", str(tmp_path / "o.safetensors")],
                    ["probe", "--train-size", "20", "--test-size", "10"]):
        assert main([command[0], "--checkpoint", str(path), *command[1:]]) == 2
        line = one_line(capsys.readouterr().err)
        assert str(path) in line and says in line, line


def test_out_naming_a_file_is_one_line(tmp_path):
    """End to end, in a process of its own: exit code 2, one line, no traceback."""
    existing = tmp_path / "a_file"
    existing.write_text("keep me\n")
    for command in (["pretrain", "--preset", "tiny"], ["notebook", "01_view_geometry"]):
        res = subprocess.run([sys.executable, "-m", "simlab", *command, "--out", str(existing)],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert res.returncode == 2
        assert "exists and is not a folder" in one_line(res.stderr)
    assert existing.read_text() == "keep me\n"


def test_a_missing_dataset_root_leaves_no_run_folder_and_spares_an_existing_one(tmp_path, capsys):
    args = ["pretrain", "--preset", "tiny", "--dataset", "imagefolder", "--data-root", str(tmp_path / "nowhere")]
    out = tmp_path / "new_run"
    assert main([*args, "--out", str(out)]) == 2
    assert "nowhere" in one_line(capsys.readouterr().err)
    assert not out.exists()
    kept = tmp_path / "notes"  # a folder the user made, with something in it: only this command's files go
    kept.mkdir()
    (kept / "README").write_text("mine\n")
    assert main([*args, "--out", str(kept)]) == 2
    assert sorted(p.name for p in kept.iterdir()) == ["README"]


def test_a_changed_setting_on_a_finished_run_is_refused_without_touching_it(run, capsys):
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert main(["pretrain", "--preset", "tiny", "--out", str(run), "--steps", "4",
                 "--set", "checkpoint_every=2", "--set", "keep_checkpoints=5", "--set", "mask_kind=random"]) == 2
    assert "mask_kind: the run has 'block', this command has 'random'" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_an_unknown_setting_suggests_the_closest_and_lists_nothing_long(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--preset", "tiny", "--out", str(out), "--set", "neg_wieght=0.1"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "did you mean 'neg_weight'?" in line and len(line) < 80 + len(str(out))
    assert main(["pretrain", "--preset", "tiny", "--out", str(out), "--set", "aug.neg_weight=0.1"]) == 2
    assert "did you mean 'model.neg_weight'?" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- help and version
def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"simlab {simlab.__version__}"


def test_every_option_of_every_command_has_a_help_text():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    missing = [f"{name} {action.option_strings or action.dest}" for name, p in sub.choices.items()
               for action in p._actions if action.help is None]
    assert not missing, missing


def test_notebook_help_lists_the_notebooks_folder_and_demo_says_what_data_root_is():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    name_help = next(a.help for a in sub.choices["notebook"]._actions if a.dest == "name")
    shipped = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert "05_finetune" in shipped and all(n in name_help for n in shipped)
    root_help = next(a.help for a in sub.choices["demo"]._actions if a.dest == "data_root")
    assert "optional Fashion-MNIST" in root_help and "shapes" in root_help


# --------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_outside_the_training_loop_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    import simlab.train

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(simlab.train, "pretrain", interrupted)
    assert main(["pretrain", "--preset", "tiny", "--out", str(tmp_path / "run")]) == 130
    assert one_line(capsys.readouterr().err) == "simlab pretrain: interrupted"


def test_a_second_ctrl_c_stops_at_once():
    from simlab.signals import StopOnSignal as _StopOnSigterm
    before = signal.getsignal(signal.SIGINT)
    with _StopOnSigterm() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # the first: a request, honoured at the step boundary
        assert stop.requested and stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second: now
    assert signal.getsignal(signal.SIGINT) is before


def test_an_ignored_sigint_stays_ignored():
    """A background job starts with SIGINT ignored; training must not make it interruptible."""
    from simlab.signals import StopOnSignal as _StopOnSigterm
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _StopOnSigterm():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_stop_is_honoured_only_once_its_step_is_saved():
    """A signal landing between the save decision and the stop check (none was due) stops after the next
    step, which is saved, so 'saved step N' is always true; a rank that saves nothing stops at once."""
    from simlab.signals import StopOnSignal as _StopOnSigterm, Terminated
    said = []
    stop = _StopOnSigterm()
    assert not stop.checkpoint_due(5, 100, 10)
    stop.requested = True  # arrives now
    stop.stop_if_requested(5, said.append)  # step 5 was not saved: go on
    assert stop.checkpoint_due(6, 100, 10)
    with pytest.raises(Terminated) as stopped:
        stop.stop_if_requested(6, said.append)
    assert stopped.value.code == 143 and said == ["SIGTERM: saved step 6 and stopped; run the same command to resume"]
    other_rank = _StopOnSigterm()
    other_rank.requested = True
    with pytest.raises(Terminated):
        other_rank.stop_if_requested(5, said.append)
