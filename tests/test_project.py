"""The package as users meet it: light import, pinned installs, CLI, demo, benchmarks."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("matplotlib", "papermill", "ipywidgets", "jupyter_client", "nbformat", "IPython")


def test_import_simlab_pulls_in_no_notebook_or_plotting_package():
    code = ("import sys, simlab, simlab.bench, simlab.views, simlab.data, simlab.masking, simlab.pos_embed, "
            "simlab.cli; print(' '.join(m for m in %r if m in sys.modules))" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_install_files_pin_torch_and_torchvision_exactly_and_agree():
    pyproject = (ROOT / "pyproject.toml").read_text()
    env = (ROOT / "environment.yml").read_text()
    for pin in ("torch==2.14.1", "torchvision==0.29.1"):
        assert f'"{pin}"' in pyproject and f"- {pin}" in env
    assert re.search(r'requires-python = ">=3.10"', pyproject)
    assert "-e .[dev]" in env


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme.split("\n## ")[0], "the README opens with its test command"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    from simlab import demo
    with pytest.raises(Exception):
        demo.view_pair_figures(tmp_path, "fashion-mnist", data_root=str(tmp_path / "none"))
    assert main(["demo", "--out", str(tmp_path), "--data-root", str(tmp_path / "none"), "--figures-only"]) == 0
    assert "skipping the Fashion-MNIST figure" in capsys.readouterr().out
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert "shapes_samples.png" in pngs and sum(p.startswith("view_pair_shapes_") for p in pngs) == 4
    assert all((tmp_path / p).stat().st_size > 10_000 for p in pngs)


def test_views_benchmark_prints_json_last():
    out = subprocess.run([sys.executable, "-m", "simlab.bench", "views", "--json", "--quick"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("pairs_per_s_32px", "pairs_per_s_224px", "decode_per_s_500x375", "shapes_images_per_s"):
        assert res[key] > 0
    assert res["hardware"]["threads"] == 1


def test_train_benchmark_counts_the_flop_of_every_objective():
    from simlab.bench import bench_train, flop_per_image
    from simlab.config import apply_overrides
    from simlab.presets import preset
    res = bench_train(quick=True, presets=["tiny"])["presets"]["tiny"]
    assert res["images_per_s"] > 0 and 0 < res["utilisation"] < 1.5
    flops = {o: flop_per_image(apply_overrides(preset("tiny"), [f"objective={o}"])) for o in ("sim", "mae", "id")}
    assert flops["sim"] == res["flop_per_image"]
    # SiM runs a decoder over every view-2 query and a full target pass: the dearest per image
    assert flops["sim"] > flops["id"] > 0 and flops["sim"] > flops["mae"] > 0
