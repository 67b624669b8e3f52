"""The package as users meet it: light import, pinned installs, CLI, demo, benchmarks."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    for key in ("pairs_per_s_32px", "pairs_per_s_224px", "decode_per_s_500x375", "shapes_images_per_s",
                "reference_pairs_per_s_32px", "reference_pairs_per_s_224px"):
        assert res[key] > 0
    assert res["ratio_224px"] == pytest.approx(res["pairs_per_s_224px"] / res["reference_pairs_per_s_224px"])
    assert res["hardware"]["threads"] == 1


def test_pil_reference_makes_normalised_views_of_the_right_size():
    from PIL import Image

    from simlab.bench.reference import PILTwoViews
    from simlab.config import AugConfig
    image = Image.fromarray(torch.randint(0, 256, (50, 70, 3), dtype=torch.uint8).numpy())
    v1, v2 = PILTwoViews(AugConfig(), 32, (0.5,) * 3, (0.25,) * 3)(image)
    assert v1.shape == v2.shape == (3, 32, 32) and v1.min() >= -2.0 - 1e-6 and v1.max() <= 2.0 + 1e-6


def test_probes_benchmark_agrees_with_scikit_learn_where_the_rules_coincide():
    from simlab.bench.probes import bench_probes
    res = bench_probes(quick=True)
    assert res["knn_uniform_acc"] == res["sklearn_knn_acc"] and 0.3 < res["knn_acc"] < 1.0
    assert res["knn_speedup"] > 0 and res["linear_probe_s"] > 0


def test_gpu_check_dry_run_runs_the_whole_check_on_the_cpu():
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run"], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["dry_run"] and res["images_per_s"] > 0 and 0 < res["mfu"] < 1.5
    assert res["views_pairs_per_s"] > 0 and res["views_max_abs_diff_vs_cpu"] == 0.0
    assert not (ROOT / "bench" / "gpu.json").exists() or "dry_run" not in json.loads(
        (ROOT / "bench" / "gpu.json").read_text()) or not json.loads((ROOT / "bench" / "gpu.json").read_text())["dry_run"]


def test_scaling_benchmark_measures_each_sweep():
    from simlab.bench.scaling import bench_scaling
    # one sweep (each point is a fresh process of several seconds); the others run the same code
    res = bench_scaling(quick=True, device="cpu", plot=None, only=["mask_ratio"])
    assert list(res["sweeps"]) == ["mask_ratio"]
    for sweep, rows in res["sweeps"].items():
        assert len(rows) == 3 and len({r[sweep] for r in rows}) == 3
        assert all(r["step_s"] > 0 and r["peak_memory_mb"] >= 0 and r["process_peak_mb"] > r["peak_memory_mb"]
                   for r in rows)


def test_levers_benchmark_times_each_lever_beside_the_plain_op_it_would_replace():
    from simlab.bench.levers import bench_levers
    res = bench_levers(quick=True)
    assert res["preset"] == "tiny" and "compile" not in res  # compile is measured only at full size
    # tiny: 16 px, 4x4 grid, 10 of 16 masked (0.602) -> 6 visible + cls at width 48, 2 heads, MLP 192
    assert res["attention"]["shape"] == [16, 2, 7, 24] and res["gelu_tanh"]["shape"] == [16 * 7, 192]
    assert res["attention"]["max_abs_diff"] < 1e-5  # the explicit softmax form is the same function
    assert 1e-5 < res["gelu_tanh"]["max_abs_diff"] < 1e-2  # an approximation: close, not equal
    assert all(res[k]["plain_s"] > 0 and res[k]["lever_s"] > 0 for k in ("attention", "gelu_tanh"))
    assert all(res["adamw"][f"{k}_s"] > 0 for k in ("fused", "foreach", "per_tensor"))


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
