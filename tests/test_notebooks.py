"""The notebooks: committed clean, parameters declared once and validated, executed through papermill."""

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simlab.cli import main
from simlab.notebooks import NOTEBOOK_DIR, PARAMETERS, ParameterError, defaults, injected_names, validate

NAMES = sorted(PARAMETERS)


def cells(name):
    return json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean_with_one_literal_parameters_cell(name):
    nb = cells(name)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]
    lines = "".join(tagged[0]["source"]).splitlines()
    names = []
    for line in lines:
        assert "  # " in line, f"{name}: every parameter has a comment: {line!r}"
        node = ast.parse(line).body[0]
        assert isinstance(node, ast.Assign)
        ast.literal_eval(node.value)  # literals only
        names.append(node.targets[0].id)
    assert names == list(PARAMETERS[name]) or set(names) == set(PARAMETERS[name])
    validate(name, defaults(name))  # the defaults pass their own validation
    # the next cell validates them before anything else runs
    assert f'check_parameters("{name}", globals())' in "".join(code[1]["source"])


@pytest.mark.parametrize("name", NAMES)
def test_papermill_reads_every_parameter_and_its_help(name):
    import papermill
    found = papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))
    assert set(found) == set(PARAMETERS[name])
    assert all(p["help"] for p in found.values())


@pytest.mark.parametrize("change, message", [
    ({"stepz": 3}, "unknown parameter 'stepz' (did you mean 'steps'?): 02_pretrain has no such parameter"),
    ({"steps": "3"}, "'steps': must be int"),
    ({"steps": 0}, "'steps': must be >= 1"),
    ({"epochs": math.nan}, "'epochs': must be finite"),
    ({"preset": "huge"}, "'preset': unknown preset"),
    ({"dataset": "nope"}, "'dataset': dataset: unknown dataset"),
    ({"overrides": ["lr=abc"]}, "'overrides': lr: expected a number"),
    ({"overrides": "lr=1"}, "'overrides': must be a list of str"),
])
def test_bad_parameters_fail_naming_the_parameter(change, message):
    values = {**defaults("02_pretrain"), **change}
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        validate("02_pretrain", values, injected=change)


def test_injected_names_are_read_from_papermills_cell():
    history = ["x = 1", "# Parameters\nsteps = 4\nstepz = 3\n", "params = check(...)"]
    assert injected_names(history) == ["steps", "stepz"]
    assert injected_names(["a = 1"]) == []


def parameters_source(name: str) -> str:
    return "".join(next(c for c in cells(name)["cells"] if "parameters" in c["metadata"].get("tags", []))["source"])


def edited_run(name: str, old: str, new: str) -> dict:
    """The kernel's namespace after a user edited the parameters cell in JupyterLab (``old`` -> ``new``)
    and ran it, then the validation cell: the globals, and IPython's ``In`` history."""
    source = parameters_source(name).replace(old, new)
    assert source != parameters_source(name)
    namespace = {}
    exec(source, namespace)
    namespace.pop("__builtins__")
    validation = f'params = check_parameters("{name}", globals())'
    namespace["In"] = ["", "import os", source, validation]
    return namespace


@pytest.mark.parametrize("name, old, new, message", [
    ("01_view_geometry", "mask_ratio = 0.6", "mask_ratoi = 0.6",
     "unknown parameter 'mask_ratoi' (did you mean 'mask_ratio'?)"),
    ("02_pretrain", "steps = None", "step = 5", "unknown parameter 'step' (did you mean 'steps'?)"),
    ("05_finetune", "random_init = True", "randominit = True",
     "unknown parameter 'randominit' (did you mean 'random_init'?)"),
])
def test_a_typo_in_the_parameters_cell_itself_fails_with_the_closest_name(name, old, new, message):
    """A user's edit in JupyterLab, where papermill injects nothing: the cell's own names are checked."""
    from simlab.notebooks import check_parameters
    with pytest.raises(ParameterError) as err:
        check_parameters(name, edited_run(name, old, new))
    assert str(err.value).startswith(message)


def test_the_parameters_cell_history_is_read_as_run():
    from simlab.notebooks import check_parameters, parameter_cell_names
    spec = PARAMETERS["02_pretrain"]
    source = parameters_source("02_pretrain")
    validation = 'params = check_parameters("02_pretrain", globals())'
    # papermill: the parameters cell, its injected cell, then the validation cell
    assert parameter_cell_names("02_pretrain", ["", source, "# Parameters\nsteps = 4\n", validation]) == \
        [*spec, "steps"]
    with pytest.raises(ParameterError, match="unknown parameter 'stepz'"):
        check_parameters("02_pretrain", {**defaults("02_pretrain"),
                                         "In": ["", source, "# Parameters\nstepz = 4\n", validation]})
    # a cell that is not a parameters cell is not read: a helper assignment, or code that does more
    for before in ("x = 5", "steps = compute()\nprint(steps)", "import os"):
        assert parameter_cell_names("02_pretrain", ["", before, validation]) == []
    # the validation cell rerun alone reads nothing new; plain Python (no In) reads nothing
    assert parameter_cell_names("02_pretrain", ["", source, validation, validation]) == []
    assert check_parameters("02_pretrain", defaults("02_pretrain"))["seed"] == 0


def test_a_parameter_error_renders_as_one_line_in_ipython():
    err = ParameterError("parameter 'steps': must be >= 1")
    lines = err._render_traceback_()
    assert len(lines) == 1 and lines[0].endswith("ParameterError\x1b[0m: parameter 'steps': must be >= 1")


def test_cli_rejects_a_bad_parameter_before_starting_a_kernel(tmp_path, capsys):
    assert main(["notebook", "02_pretrain", "--out", str(tmp_path), "-p", "steps", "nan"]) == 2
    assert "parameter 'steps'" in capsys.readouterr().err
    assert not (tmp_path / "02_pretrain.ipynb").exists()


def test_plain_papermill_with_an_unknown_parameter_fails_in_the_validation_cell(tmp_path):
    """papermill itself only warns; the notebook's second cell turns it into an error naming it."""
    out = tmp_path / "out.ipynb"
    res = subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOK_DIR / "01_view_geometry.ipynb"), str(out),
                          "-p", "mask_ration", "0.3", "-k", "python3", "--cwd", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode != 0
    assert "mask_ration" in res.stderr and "has no such parameter" in res.stderr
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "ParameterError"
    assert "did you mean 'mask_ratio'?" in errors[0]["evalue"]
    assert len(errors[0]["traceback"]) == 1  # the reason alone, no traceback through simlab's code


def test_ctrl_c_interrupts_the_cell_keeps_the_notebook_and_the_run_and_prints_one_line(tmp_path):
    """``simlab notebook`` under a terminal's Ctrl-C (SIGINT to its process group): the kernel's cell is
    interrupted (the pretraining in it saves its last step), the notebook so far is written, and the
    command prints one line and exits 130. Its kernel runs over IPC: no TCP-eavesdropping warning."""
    import os
    import signal
    import time
    out = tmp_path / "nb"
    proc = subprocess.Popen([sys.executable, "-m", "simlab", "notebook", "02_pretrain", "--out", str(out), "--quiet",
                             "-p", "preset", "tiny", "-p", "steps", "100000",
                             "-p", "overrides", '["log_every=1", "checkpoint_every=100000"]'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = out / "train" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:  # a failure must not leave the 100,000-step run and its kernel behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [f"simlab notebook: interrupted; the cells run so far are in "
                                        f"{out / '02_pretrain.ipynb'}"]
    executed = json.loads((out / "02_pretrain.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    step = int(text.split("interrupted: saved step ")[1].split(";")[0])
    assert [p.name for p in (out / "train" / "checkpoints").glob("*.pt")] == [f"ckpt_{step:08d}.pt"]
    assert not (out / "COMPLETE").exists()


def test_a_failing_cell_keeps_its_error_and_exits_non_zero(tmp_path, capfd, monkeypatch):
    # the kernel process writes a line of its own at start-up (as ipykernel logs do): it belongs in the
    # run's log, not on the terminal
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.stderr.write('kernel process line\\n')\n")
    monkeypatch.setenv("PYTHONPATH", f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    run = tmp_path / "run"
    assert main(["notebook", "03_dense_features", "--out", str(run), "--quiet",
                 "-p", "checkpoint", str(tmp_path / "missing.pt")]) == 1
    terminal = capfd.readouterr()
    assert "CheckpointError" in terminal.err
    assert "kernel process line" not in terminal.out + terminal.err
    assert "kernel process line" in (run / "03_dense_features.log").read_text()
    executed = json.loads((run / "03_dense_features.ipynb").read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert len(errors) == 1 and "no such checkpoint" in errors[0]["evalue"]
    assert not (run / "COMPLETE").exists()


def test_tour_runs_under_papermill_with_tiny_parameters(tmp_path):
    run = tmp_path / "tour"
    assert main(["notebook", "00_tour", "--out", str(run), "--quiet", "-p", "preset", "tiny", "-p", "steps", "6",
                 "-p", "baseline_steps", "4", "-p", "probe_train", "200", "-p", "probe_test", "100"]) == 0
    assert (run / "COMPLETE").exists()
    for fig in ("tour_samples", "tour_view_pair", "tour_masks", "tour_dense", "tour_evidence", "tour_probes"):
        assert (run / f"{fig}.png").stat().st_size > 5_000, fig
    for objective in ("sim", "mae", "id"):
        assert (run / "train" / objective / "COMPLETE").exists()
    executed = json.loads((run / "00_tour.ipynb").read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    text = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/markdown", ""))
                   for o in outputs)
    assert "| random init |" in text and "| sim |" in text  # the probe table was shown
    assert "| position only |" in text and "| chance |" in text  # beside its floors
    assert "position mean (content-blind)" in text and "absolute queries" in text  # evidence and exercise
    assert "mae step" in text and "probing id" in text  # the long waits say what runs
    # the status line of the live curves is text, never a raw dict
    assert not any("{'text/plain'" in "".join(o.get("data", {}).get("text/plain", "")) for o in outputs)
    # the tour benchmark's per-cell times (python -m simlab.bench tour) read papermill's own record
    from simlab.bench.notebook_times import cell_times
    times = cell_times(executed)
    code = [k for k, c in enumerate(executed["cells"]) if c["cell_type"] == "code"]
    assert [t["cell"] for t in times] == code and all(t["seconds"] >= 0 for t in times)
    assert times[code.index(next(k for k in code if "pretrain(cfg" in "".join(executed["cells"][k]["source"])))][
        "first_line"].startswith("from simlab.train import pretrain")


def test_demo_runs_the_notebook_chain_into_one_folder(tmp_path):
    from simlab import demo, load_encoder
    out = tmp_path / "demo"
    # 03 scores as many pairs as 04 would (its 100 test images), so that 04 can reuse them
    demo.run(out, pretrain_steps=3, probe_sizes=(200, 100), params={"03_dense_features": {"pairs": 100}})
    for name in ("01_view_geometry", "02_pretrain", "03_dense_features", "04_probes"):
        assert (out / f"{name}.ipynb").exists(), name
    assert (out / "COMPLETE").exists()
    ckpt = sorted((out / "train" / "checkpoints").glob("*.pt"))[-1]
    assert ckpt.name == "ckpt_00000003.pt"
    assert load_encoder(ckpt).config.model.target_centering  # the demo preset's deviation
    pngs = {p.name for p in out.glob("*.png")}
    for fig in ("shapes_samples.png", "view_geometry.png", "view_geometry_stats.png", "pretrain_metrics.png",
                "dense_shapes_0.png", "attention_shapes_0.png", "correspondences_shapes_0.png", "probes.png"):
        assert fig in pngs and (out / fig).stat().st_size > 5_000, fig
    probes = json.loads((out / "probes.json").read_text())
    assert [r["encoder"] for r in probes] == ["pretrained", "random-init"]  # the demo run and its floor
    assert Path(probes[0]["checkpoint"]) == ckpt and probes[0]["train_size"] == 200
    times = json.loads((out / "demo_times.json").read_text())
    assert times["total"] >= times["02_pretrain"] > 0
    # 04 reuses 03's dense evidence of the same checkpoint (same pairs, data and seed) instead of scoring
    # it again, and probes the floors once (the random-init row leaves them out)
    from simlab.probes import _cached_evidence, rounded
    ev03 = json.loads((out / "dense_evidence.json").read_text())
    assert ev03["checkpoint_sha256"] == probes[0]["sha256"] and ev03["pairs"] == 100
    assert probes[0]["dense_evidence"] == rounded({k: v for k, v in ev03.items()
                                                   if k not in ("checkpoint_sha256", "dataset", "seed")})
    assert _cached_evidence(out / "dense_evidence.json", "0" * 64, "shapes", 0, 100) is None  # another checkpoint
    assert _cached_evidence(out / "dense_evidence.json", probes[0]["sha256"], "shapes", 0, 64) is None  # other pairs
    assert "floors" in probes[0] and "floors" not in probes[1]
    executed = json.loads((out / "04_probes.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "held-out view pairs, from" in text
    # python -m simlab.bench demo: the README's record of make demo, read from this folder
    from simlab.bench.demo_record import record_demo
    rec = record_demo(out)
    assert (rec["steps"], rec["probe_sizes"]) == (3, [200, 100]) and set(rec["probes"]) == {"demo", "random init"}
    assert rec["probes"]["demo"]["linear"] == probes[0]["linear"]
    assert rec["probes"]["random init"]["knn"] == probes[1]["knn"]
    assert rec["margins"]["linear"] == pytest.approx(probes[0]["linear"] - probes[1]["linear"], abs=1e-6)
    assert rec["encoders_probed"] == 2
    blind = probes[0]["dense_evidence"]["predictions"]["position mean (content-blind)"]["all"]["loss"]
    assert rec["margins"]["decoder - position mean (content-blind)"] == pytest.approx(
        rec["probes"]["demo"]["decoder_loss"] - blind, abs=1e-6)
    assert rec["seconds"]["total"] == round(times["total"], 1)


@pytest.mark.slow  # a minute: the claim harness has its own test; the demo-chain test runs 04 itself
def test_probes_notebook_with_raw_pixels_and_a_claim_table(tmp_path):
    from simlab.bench import main as bench_main
    assert bench_main(["claim", "--quick", "--out", str(tmp_path / "claim"), "--objective", "sim"]) == 0
    run = tmp_path / "probes"
    assert main(["notebook", "04_probes", "--out", str(run), "--quiet", "-p", "random_init", "false",
                 "-p", "train_size", "200", "-p", "test_size", "100",
                 "-p", "claim_dir", str(tmp_path / "claim" / "shapes")]) == 0
    probes = json.loads((run / "probes.json").read_text())
    assert [r["encoder"] for r in probes] == ["pretrained"]  # the shipped checkpoint alone
    executed = json.loads((run / "04_probes.ipynb").read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "raw pixels on shapes" in text
    assert any("| sim |" in "".join(o.get("data", {}).get("text/markdown", "")) for o in outputs)  # the claim table


def test_finetune_notebook_runs_both_encoders_and_draws_the_curves(tmp_path):
    run = tmp_path / "ft"
    assert main(["notebook", "05_finetune", "--out", str(run), "--quiet", "-p", "preset", "tiny", "-p", "steps", "5",
                 "-p", "overrides", '["train_size=256", "val_size=64", "log_every=1"]']) == 0
    assert (run / "COMPLETE").exists() and (run / "finetune.png").stat().st_size > 5_000
    results = json.loads((run / "finetune.json").read_text())
    assert set(results) == {"pretrained", "random init"} and all(r["steps"] == 5 for r in results.values())
    executed = json.loads((run / "05_finetune.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "| pretrained |" in text and "| random init |" in text


def test_finetune_notebook_rejects_a_bad_override_naming_it(tmp_path, capsys):
    assert main(["notebook", "05_finetune", "--out", str(tmp_path), "-p", "overrides", '["layer_decay=2"]']) == 2
    assert "layer_decay" in capsys.readouterr().err


def test_notebook_streams_progress_and_survives_a_killed_kernel(tmp_path):
    import os
    import subprocess
    import sys
    run = tmp_path / "nb"
    args = [sys.executable, "-m", "simlab", "notebook", "02_pretrain", "--out", str(run), "-p", "preset", "tiny",
            "-p", "steps", "30", "-p", "overrides", "['log_every=5', 'checkpoint_every=10']"]
    died = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "SIMLAB_FAULT": "0:17:kill"})
    assert died.returncode == 1, died.stderr
    assert "kernel died" in died.stderr and "run the same command again" in died.stderr
    assert "Traceback" not in died.stderr
    # progress reached the terminal and the log as it happened, one line per log interval
    assert "step 5/30" in died.stdout and "step 15/30" in died.stdout and "\r" not in died.stdout
    log = (run / "02_pretrain.log").read_text()
    assert "step 15/30" in log and "the kernel died" in log
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout and "step 30/30" in again.stdout
    steps = [json.loads(x)["step"] for x in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]


def test_runs_notebook_lists_compares_and_shows_a_sweep(tmp_path):
    for name, steps in (("a", "4"), ("b", "6")):
        assert main(["pretrain", "--preset", "tiny", "--out", str(tmp_path / "runs" / name), "--steps", steps]) == 0
    sweep = tmp_path / "sweep"
    assert main(["sweep", "--preset", "tiny", "--grid", "neg_weight=0.02,0.1", "--steps", "2", "--out", str(sweep)]) == 0
    out = tmp_path / "nb"
    assert main(["notebook", "06_runs", "--out", str(out), "--quiet", "-p", "paths", f"['{tmp_path / 'runs'}']",
                 "-p", "sweep_dir", str(sweep)]) == 0
    executed = json.loads((out / "06_runs.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/markdown", ""))
                   for c in executed["cells"] for o in c.get("outputs", []))
    assert "complete" in text and "steps=6" in text and "2/2 points complete" in text and "neg_weight" in text
    assert (out / "compare.png").stat().st_size > 10_000
