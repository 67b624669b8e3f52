"""The notebooks: committed clean, parameters declared once and validated, executed through papermill."""

import ast
import json
import math
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
    ({"stepz": 3}, "'stepz': 02_pretrain has no such parameter"),
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
    with pytest.raises(ParameterError, match=message.replace("(", r"\(")):
        validate("02_pretrain", values, injected=change)


def test_injected_names_are_read_from_papermills_cell():
    history = ["x = 1", "# Parameters\nsteps = 4\nstepz = 3\n", "params = check(...)"]
    assert injected_names(history) == ["steps", "stepz"]
    assert injected_names(["a = 1"]) == []


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


def test_a_failing_cell_keeps_its_error_and_exits_non_zero(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["notebook", "03_dense_features", "--out", str(run), "--quiet",
                 "-p", "checkpoint", str(tmp_path / "missing.pt")]) == 1
    assert "CheckpointError" in capsys.readouterr().err
    executed = json.loads((run / "03_dense_features.ipynb").read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert len(errors) == 1 and "no such checkpoint" in errors[0]["evalue"]
    assert not (run / "COMPLETE").exists()


def test_tour_runs_under_papermill_with_tiny_parameters(tmp_path):
    run = tmp_path / "tour"
    assert main(["notebook", "00_tour", "--out", str(run), "--quiet", "-p", "preset", "tiny", "-p", "steps", "6",
                 "-p", "baseline_steps", "4", "-p", "probe_train", "200", "-p", "probe_test", "100"]) == 0
    assert (run / "COMPLETE").exists()
    for fig in ("tour_samples", "tour_view_pair", "tour_masks", "tour_dense", "tour_probes"):
        assert (run / f"{fig}.png").stat().st_size > 5_000, fig
    for objective in ("sim", "mae", "id"):
        assert (run / "train" / objective / "COMPLETE").exists()
    executed = json.loads((run / "00_tour.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "| random init |" in text and "| sim |" in text  # the probe table was printed


def test_demo_runs_the_notebook_chain_into_one_folder(tmp_path):
    from simlab import demo, load_encoder
    out = tmp_path / "demo"
    demo.run(out, pretrain_steps=3, probe_sizes=(300, 100))
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
    assert [r["encoder"] for r in probes] == ["pretrained", "pretrained", "random-init"]
    assert Path(probes[0]["checkpoint"]) == ckpt and probes[0]["train_size"] == 300
    times = json.loads((out / "demo_times.json").read_text())
    assert times["total"] >= times["02_pretrain"] > 0


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
