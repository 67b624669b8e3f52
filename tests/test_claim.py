"""The claim harness end to end at toy size (the real run is opt-in: python -m simlab.bench claim)."""

import json

import pytest

from conftest import require_data
from simlab.bench import main as bench_main
from simlab.claim import METRICS, markdown_table
from simlab.data import FASHION_MNIST_DIR


def test_claim_harness_runs_every_row_and_resumes_from_its_caches(tmp_path, capsys):
    assert bench_main(["claim", "--quick", "--out", str(tmp_path), "--json"]) == 0
    out = tmp_path / "shapes"  # the default dataset, in its own folder
    report = json.loads((out / "claim.json").read_text())
    floors = {"chance", "position only", "all background"}
    assert set(report["summary"]) == {"sim", "mae", "id", "random init", "raw pixels"} | floors
    for row, stats in report["summary"].items():
        for key in METRICS:
            assert row in floors or 0.0 <= stats[key][0] <= 1.0, (row, key)
    # each floor row carries what it is a floor of: chance the global probes, the others the dense one
    assert set(report["summary"]["chance"]) == {"linear", "knn", "few_shot_5"}
    assert {"fg_bg_miou", "class_miou"} <= set(report["summary"]["position only"])
    assert report["summary"]["all background"]["fg_iou"][0] == 0.0
    for objective in ("sim", "mae", "id"):
        assert report["summary"][objective]["train_gflop"][0] > 0
        assert (out / f"{objective}_seed0" / "COMPLETE").exists()
    # equal training for every objective: the same steps and batch
    assert {r["row"]: round(r["train_gflop"] / r["gflop_per_image"]) for r in report["runs"] if "train_gflop" in r} == \
        {"sim": 4 * 16, "mae": 4 * 16, "id": 4 * 16}
    assert (out / "claim.png").stat().st_size > 10_000  # the figure of the table
    first = report["summary"]
    capsys.readouterr()
    assert bench_main(["claim", "--quick", "--out", str(tmp_path)]) == 0  # everything cached: same numbers
    again = json.loads((out / "claim.json").read_text())["summary"]
    assert again == first
    table = markdown_table(again)
    assert table.count("\n") == 1 + len(first) and "raw pixels" in table


@pytest.mark.slow  # CI time (~40 s): Fashion-MNIST's loader and probes have their own default tests
def test_claim_on_fashion_mnist_pretrains_and_probes_the_real_set(tmp_path, capsys):
    require_data(FASHION_MNIST_DIR.exists(), "install it with 'sudo apt-get install dataset-fashion-mnist'")
    assert bench_main(["claim", "--quick", "--out", str(tmp_path), "--datasets", "fashion-mnist",
                       "--objective", "sim"]) == 0
    report = json.loads((tmp_path / "fashion-mnist" / "claim.json").read_text())
    assert set(report["summary"]) == {"sim", "random init", "raw pixels", "chance", "position only",
                                      "all background"}
    config = json.loads((tmp_path / "fashion-mnist" / "sim_seed0" / "config.json").read_text())
    assert config["data"]["dataset"] == "fashion-mnist"
    # Fashion-MNIST's thresholded masks give the dense probe its foreground labels
    assert 0.0 < report["summary"]["sim"]["fg_bg_miou"][0] <= 1.0
    assert not (tmp_path / "shapes").exists()


def test_logged_train_seconds_counts_each_step_once_across_a_resume(tmp_path):
    from simlab.claim import logged_train_seconds
    log = tmp_path / "metrics.jsonl"
    # 8 images per step; steps 0-30 at 80 img/s, then a crash, a resume from step 20 that re-logs 30
    # (replayed, not counted again) and goes on to 40 at 40 img/s
    records = [(10, 80.0), (20, 80.0), (30, 80.0), (30, 40.0), (40, 40.0)]
    log.write_text("".join(json.dumps({"step": s, "images_per_s": ips}) + "\n" for s, ips in records)
                   + json.dumps({"step": 40, "knn": 0.5}) + "\n")
    assert logged_train_seconds(log, batch_size=8) == 3 * 10 * 8 / 80 + 10 * 8 / 40
