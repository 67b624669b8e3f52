"""Experiments at scale on tiny runs: the registry, relaunching a saved config, sweeps killed and rerun."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from simlab.checkpoint import list_checkpoints, load_checkpoint
from simlab.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _simlab(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "simlab", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """One finished run, one that failed on a non-finite loss, one killed and resumed to the end."""
    root = tmp_path_factory.mktemp("registry")
    assert main(["pretrain", "--preset", "tiny", "--out", str(root / "done"), "--steps", "10"]) == 0
    failed = _simlab("pretrain", "--preset", "tiny", "--out", str(root / "failed"), "--steps", "10",
                     env={"SIMLAB_FAULT": "0:7:nan"})
    assert failed.returncode == 3
    killed = _simlab("pretrain", "--preset", "tiny", "--out", str(root / "resumed"), "--steps", "30",
                     "--set", "checkpoint_every=10", "--set", "neg_weight=0.1", env={"SIMLAB_FAULT": "0:24:kill"})
    assert killed.returncode == -signal.SIGKILL
    assert main(["pretrain", "--preset", "tiny", "--out", str(root / "resumed"), "--steps", "30",
                 "--set", "checkpoint_every=10", "--set", "neg_weight=0.1"]) == 0
    assert main(["probe", "--checkpoint", str(root / "done"), "--train-size", "60", "--test-size", "30",
                 "--dense-pairs", "0", "--out", str(root / "done" / "probe.json")]) == 0
    return root


def test_registry_lists_each_run_with_its_status_changes_and_probes(three_runs, capsys):
    from simlab.registry import list_runs
    records = {Path(r["run"]).name: r for r in list_runs([three_runs])}
    assert set(records) == {"done", "failed", "resumed"}
    done, failed, resumed = records["done"], records["failed"], records["resumed"]
    assert done["status"] == "complete" and done["step"] == 10 and done["preset"] == "tiny"
    assert done["changed"] == {"steps": 10} and 0 <= done["probe.knn"] <= 1
    assert failed["status"].startswith("failed: NonFiniteError") and failed["step"] < 10
    assert resumed["status"] == "complete" and resumed["step"] == 30
    assert resumed["changed"] == {"steps": 30, "neg_weight": 0.1}
    # the resumed run logged each step once
    steps = [json.loads(line)["step"] for line in (three_runs / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))
    capsys.readouterr()
    assert main(["runs", str(three_runs)]) == 0
    table = capsys.readouterr().out
    assert "failed: NonFiniteError" in table and "neg_weight=0.1" in table
    assert main(["runs", str(three_runs), "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {Path(r["run"]).name for r in rows} == {"done", "failed", "resumed"}
    assert main(["runs", str(three_runs), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_compare_overlays_curves_and_prints_probes(three_runs, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert main(["compare", str(three_runs / "done"), str(three_runs / "resumed"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.stat().st_size > 10_000 and "| run |" in printed and "done" in printed


def test_relaunch_from_a_saved_config_repeats_the_first_steps_bitwise(three_runs, tmp_path):
    src = three_runs / "resumed"
    again = tmp_path / "again"
    assert main(["pretrain", "--config", str(src / "config.json"), "--out", str(again)]) == 0
    a = load_checkpoint(list_checkpoints(src)[-1])["model"]
    b = load_checkpoint(list_checkpoints(again)[-1])["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    first = lambda p: [json.loads(x)["loss"] for x in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert first(src) == first(again)
    assert json.loads((again / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    # --set changes a relaunched run: another definition, recorded as such
    changed = tmp_path / "changed"
    assert main(["pretrain", "--config", str(src), "--out", str(changed), "--set", "neg_weight=0.05"]) == 0
    assert json.loads((changed / "config.json").read_text())["model"]["neg_weight"] == 0.05


def test_sweep_killed_midway_and_rerun_trains_every_point_once(tmp_path):
    out = tmp_path / "sweep"
    # 2 values x 2 seeds = 4 points (each a training child process of a few seconds)
    args = ["sweep", "--preset", "tiny", "--grid", "query_pos=relative,absolute",
            "--seeds", "0", "1", "--steps", "6", "--out", str(out), "--set", "log_every=2"]
    proc = subprocess.Popen([sys.executable, "-m", "simlab", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("*/COMPLETE"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its training child die mid-way
    proc.wait()
    done_before = {p.parent.name for p in out.glob("*/COMPLETE")}
    assert 2 <= len(done_before) < 4
    mtimes = {name: (out / name / "COMPLETE").stat().st_mtime for name in done_before}
    rerun = _simlab(*args, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "4 points, " in rerun.stdout and f"{len(done_before)} done" in rerun.stdout
    report = json.loads((out / "sweep.json").read_text())
    assert report["done"] == report["points"] == 4
    assert all((out / name / "COMPLETE").stat().st_mtime == t for name, t in mtimes.items())  # not retrained
    for row in report["rows"]:
        steps = [json.loads(x)["step"] for x in (out / row["point"] / "metrics.jsonl").read_text().splitlines()]
        assert steps == [2, 4, 6], row["point"]  # every step logged once, resumed points included
        assert row["status"] == "complete"
    assert {r["query_pos"] for r in report["summary"]} == {"relative", "absolute"}
    assert (out / "sweep.csv").read_text().count("\n") == 5
    # a finished sweep reruns as a no-op; another grid on the same folder is refused
    assert _simlab(*args).returncode == 0
    other = _simlab(*[a if a != "query_pos=relative,absolute" else "neg_weight=0.3" for a in args])
    assert other.returncode == 2 and "holds another sweep" in other.stderr


def test_sweep_spec_file_and_point_errors_name_the_point(tmp_path):
    from simlab.config import ConfigError
    from simlab.sweep import SweepSpec, parse_grid, points
    assert parse_grid(["crop_scale=0.2,1|0.08,1", "neg_weight=0,0.1"]) == {
        "crop_scale": ["0.2,1", "0.08,1"], "neg_weight": ["0", "0.1"]}
    spec_file = tmp_path / "s.json"
    spec_file.write_text(json.dumps({"preset": "tiny", "grid": {"neg_weight": [0, 0.1]}, "seeds": [0, 1, 2]}))
    spec = SweepSpec.from_file(spec_file).validate()
    assert [p.name for p in points(spec)][:2] == ["neg_weight=0,seed=0", "neg_weight=0,seed=1"]
    with pytest.raises(ConfigError, match="sweep point mask_ratio=2,seed=0: mask_ratio"):
        SweepSpec("tiny", {"mask_ratio": ["2"]}).validate()


def test_speedrun_places_each_checkpoint_on_the_training_clock(tmp_path):
    from simlab.bench import main as bench_main
    assert bench_main(["speedrun", "--quick", "--out", str(tmp_path), "--json"]) == 0
    for objective in ("sim", "mae", "id"):
        curve = json.loads(next((tmp_path / objective).glob("speedrun_probe_00000006.json")).read_text())
        assert 0.0 <= curve["linear"] <= 1.0
    from simlab.bench.speedrun import run_speedrun
    report = run_speedrun(tmp_path, preset_name="tiny", steps=6, every=3, probe_sizes=(200, 100), dense_pairs=32,
                          log=lambda *_: None)  # everything cached: the same report, nothing retrained
    for objective, res in report["objectives"].items():
        times = [c["train_seconds"] for c in res["curve"]]
        assert [c["step"] for c in res["curve"]] == [3, 6] and 0 < times[0] < times[1], objective
        assert set(res["time_to_threshold_s"]) >= {"linear", "knn", "fg_bg_miou", "class_miou"}
    sim = report["objectives"]["sim"]["curve"][-1]
    assert sim["decoder_loss"] > 0 and sim["blind_loss"] > 0
    assert "decoder_beats_content_blind" in report["objectives"]["sim"]["time_to_threshold_s"]
    assert 0.0 <= report["random_init"]["knn"] <= 1.0
    from simlab.report import speedrun_markdown
    table = speedrun_markdown(report).splitlines()  # the README's table: one row per objective under the floor
    assert table[2].startswith("| random init |") and [r.split(" |")[0] for r in table[3:]] == ["| sim", "| mae", "| id"]
    assert all(("not in " in r) or (" s** (" in r) for r in table[3:])


def test_a_probed_sweep_probes_its_random_init_floor_on_the_same_sizes(tmp_path):
    from simlab.report import sweep_markdown
    from simlab.sweep import SweepSpec, run_sweep
    spec = SweepSpec("tiny", {"neg_weight": ["0.1"]}, seeds=[0], steps=2, probe=True, probe_train=64,
                     probe_test=32)
    report = run_sweep(spec, tmp_path, log=lambda *_: None)
    floor = json.loads((tmp_path / "random_init,seed=0.json").read_text())
    trained = json.loads((tmp_path / "neg_weight=0.1,seed=0" / "probe.json").read_text())
    assert floor["encoder"] == "random-init" and trained["encoder"] == "pretrained"
    assert floor["train_size"] == 64 and floor["test_size"] == 32
    ri = report["random_init"]
    assert ri["seeds"] == [0] and ri["linear"] == floor["linear"] and ri["knn_std"] == 0.0
    assert ri["per_seed"] == [{"seed": 0, **{k: floor[k] for k in ("linear", "knn", "few_shot_5", "fg_bg_miou",
                                                                    "class_miou")}}]
    assert "--random-init SEED --train-size 64 --test-size 32" in ri["command"]
    assert sweep_markdown(report).splitlines()[-1].startswith(f"| random init | 1 | {100 * floor['linear']:.1f} %")


def test_seed_margins_pair_each_run_with_its_own_seeds_random_init():
    from simlab.report import seed_margins, seed_margins_markdown
    report = {"spec": {"grid": {"x": ["1"]}}, "rows": [
        {"point": "x=1,seed=0", "x": "1", "seed": 0, "status": "complete", "linear": 0.20, "knn": 0.10, "fg_bg_miou": 0.8,
         "class_miou": 0.13, "decoder_loss": 0.85, "blind_loss": 0.90},
        {"point": "x=1,seed=1", "x": "1", "seed": 1, "status": "complete", "linear": 0.15, "knn": 0.14, "fg_bg_miou": 0.7,
         "class_miou": 0.12, "decoder_loss": 0.93, "blind_loss": 0.90},
        {"point": "x=1,seed=2", "x": "1", "seed": 2, "status": "failed"}],
        "random_init": {"per_seed": [
            {"seed": 0, "linear": 0.18, "knn": 0.12, "fg_bg_miou": 0.7, "class_miou": 0.11},
            {"seed": 1, "linear": 0.10, "knn": 0.13, "fg_bg_miou": 0.6, "class_miou": 0.12},
            {"seed": 2, "linear": 0.10, "knn": 0.13, "fg_bg_miou": 0.6, "class_miou": 0.12}]}}
    m = seed_margins(report)
    assert [r["seed"] for r in m] == [0, 1]  # the failed run has no margin
    assert m[0]["linear"] == pytest.approx(0.02) and m[1]["linear"] == pytest.approx(0.05)  # own seed's floor
    assert m[0]["knn"] == pytest.approx(-0.02) and m[0]["decoder_vs_blind"] == pytest.approx(-0.05)
    last = seed_margins_markdown(report).splitlines()[-1]
    # linear: mean 0.035, sd 0.0212 -> +1.6 sd, both seeds above; fg/bg: +0.1 in both seeds, no spread;
    # decoder: -0.05 and +0.03 -> mean -0.01, sd 0.0566 -> -0.2 sd, one seed below the blind rule
    cells = [c.strip() for c in last.strip("|").split("|")]
    assert cells[0] == "`x=1`: mean ÷ sd, seeds on the right side"
    assert cells[1:] == ["+1.6 sd, 2 of 2", "-0.2 sd, 1 of 2", "–, 2 of 2", "+0.7 sd, 1 of 2", "-0.2 sd, 1 of 2"]
