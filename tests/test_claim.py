"""The claim harness end to end at toy size (the real run is opt-in: python -m simlab.bench claim)."""

import json

import pytest

from conftest import require_data
from simlab.bench import main as bench_main
from simlab.claim import METRICS, markdown_table
from simlab.data import FASHION_MNIST_DIR


def test_claim_harness_runs_both_budgets_with_curves_intervals_and_resumes(tmp_path, capsys, monkeypatch):
    # one equal-steps and one equal-FLOPs row keep CI short; the other rows share their code
    argv = ["claim", "--quick", "--out", str(tmp_path), "--arm", "sim", "--arm", "mae flops", "--json"]
    assert bench_main(argv) == 0
    out = tmp_path / "shapes"  # the default dataset, in its own folder
    report = json.loads((out / "claim.json").read_text())
    floors = {"chance", "position only", "all background"}
    assert set(report["summary"]) == {"sim", "mae flops", "random init", "raw pixels"} | floors
    for row, stats in report["summary"].items():
        for key in METRICS:
            assert row in floors or 0.0 <= stats[key][0] <= 1.0, (row, key)
    # each floor row carries what it is a floor of: chance the global probes, the others the dense one
    assert set(report["summary"]["chance"]) == {"linear", "knn", "few_shot_5"}
    assert {"fg_bg_miou", "class_miou"} <= set(report["summary"]["position only"])
    assert report["summary"]["all background"]["fg_iou"][0] == 0.0
    # the FLOPs row trains until it has spent SiM's training FLOPs (to the step), no further
    final = {r["row"]: r for r in report["runs"] if "train_gflop" in r}
    sim, mae = final["sim"], final["mae flops"]
    assert mae["step"] > sim["step"] and mae["gflop_per_image"] < sim["gflop_per_image"]
    assert abs(mae["train_gflop"] - sim["train_gflop"]) <= mae["train_gflop"] / mae["step"]
    # learning curves: random init at step 0, then each probed checkpoint, FLOPs growing with steps
    curves = report["curves"]
    assert [e["step"] for e in curves["random init"]] == [0]
    for row in ("sim", "mae flops"):
        steps = [e["step"] for e in curves[row]]
        assert len(steps) == 2 and steps == sorted(steps) and steps[-1] == final[row]["step"]
        assert curves[row][-1]["linear"][0] == report["summary"][row]["linear"][0]
    # every encoder row has a bootstrap interval around its own number
    for row in ("sim", "mae flops", "random init", "raw pixels"):
        for key in METRICS:
            low, high = report["intervals"][row][key]
            assert low <= report["summary"][row][key][0] <= high, (row, key)
    assert set(report["no_signal"]) <= set(METRICS)
    # differences: SiM against the other trained row, each trained row against random init
    diffs = {(d["a"], d["b"]): d for d in report["differences"]}
    assert set(diffs) == {("sim", "mae flops"), ("sim", "random init"), ("mae flops", "random init")}
    summary = report["summary"]
    for (a, b), d in diffs.items():
        diff, low, high = d["linear"]
        assert abs(diff - (summary[a]["linear"][0] - summary[b]["linear"][0])) < 1e-9 and low <= high
    for name in ("claim.png", "claim_curves.png", "claim_differences.png"):
        assert (out / name).stat().st_size > 10_000
    first = report["summary"]
    capsys.readouterr()
    assert bench_main(argv[:-1]) == 0  # everything cached: same numbers
    again = json.loads((out / "claim.json").read_text())
    assert again["summary"] == first and again["intervals"] == report["intervals"]
    table = markdown_table(again["summary"], intervals=again["intervals"], no_signal=again["no_signal"])
    assert table.count("\n") == 1 + len(first) and "raw pixels" in table
    assert table.count("[") == sum(len(again["intervals"][r]) for r in again["intervals"])
    # --fractions 1 probes the last checkpoints only; --save keeps the datasets another run saved
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "claim.json").write_text(json.dumps({"datasets": {"fashion-mnist": {"runs": []}}}))
    assert bench_main(argv[:-1] + ["--fractions", "1", "--save"]) == 0
    saved = json.loads((tmp_path / "bench" / "claim.json").read_text())
    assert list(saved["datasets"]) == ["fashion-mnist", "shapes"] and saved["datasets"]["fashion-mnist"] == {"runs": []}
    last = saved["datasets"]["shapes"]
    assert [e["step"] for e in last["curves"]["sim"]] == [final["sim"]["step"]] and last["summary"] == first
    for figure in ("claim_shapes.png", "claim_shapes_differences.png"):
        assert (tmp_path / "bench" / figure).stat().st_size > 10_000


def test_the_flops_rows_spend_sims_training_flops_to_the_step_grid():
    from simlab.claim import ARM_ORDER, ARMS, arm_config, claim_base
    from simlab.flops import flop_per_image
    # the tiny preset keeps FLOP counting cheap; the demo preset runs the same code (mae flops 1090, id flops 320)
    base = claim_base("tiny", 500)
    sim = arm_config("sim", base, 500, 0)
    budget = flop_per_image(sim) * 500
    for arm in ARM_ORDER:  # the claim's rows (the ablations need the demo's grid; all are equal-steps rows)
        spec = ARMS[arm]
        cfg = arm_config(arm, base, 500, 0)
        per_step = flop_per_image(cfg)
        spent = per_step * cfg.train.steps
        if spec["budget"] == "flops":
            # rounded to the metrics log's 10-step grid: at most 5 steps' FLOPs from SiM's budget
            assert abs(spent - budget) <= 5 * per_step, arm
            assert cfg.train.steps % 10 == 0 and cfg.train.steps != 500
            assert cfg.train.checkpoint_every % cfg.train.log_every == 0  # each checkpoint has its time
        else:
            assert cfg.train.steps == 500
    # the only row that departs from SiM's targets is the one labelled so
    assert not sim.model.target_centering and arm_config("sim centred", base, 500, 0).model.target_centering


def test_a_probe_no_row_lifts_above_its_floor_is_marked_as_carrying_no_signal():
    from simlab.claim import no_signal
    floors = {"chance": {"accuracy": 0.10}, "all background": {"fg_bg_miou": 0.45, "fg_iou": 0.0, "class_miou": 0.09}}
    intervals = {"a": {"knn": (0.11, 0.15), "few_shot_5": (0.09, 0.12), "linear": (0.08, 0.30),
                       "fg_bg_miou": (0.70, 0.72), "fg_iou": (0.4, 0.5), "class_miou": (0.08, 0.10)},
                 "b": {"knn": (0.05, 0.09), "few_shot_5": (0.095, 0.105), "linear": (0.101, 0.2)}}
    assert no_signal(intervals, floors) == ["few_shot_5", "class_miou"]


@pytest.mark.slow  # CI time (~40 s): Fashion-MNIST's loader and probes have their own default tests
def test_claim_on_fashion_mnist_pretrains_and_probes_the_real_set(tmp_path, capsys):
    require_data(FASHION_MNIST_DIR.exists(), "install it with 'sudo apt-get install dataset-fashion-mnist'")
    assert bench_main(["claim", "--quick", "--out", str(tmp_path), "--datasets", "fashion-mnist",
                       "--arm", "sim"]) == 0
    report = json.loads((tmp_path / "fashion-mnist" / "claim.json").read_text())
    assert set(report["summary"]) == {"sim", "random init", "raw pixels", "chance", "position only",
                                      "all background"}
    config = json.loads((tmp_path / "fashion-mnist" / "sim_seed0" / "config.json").read_text())
    assert config["data"]["dataset"] == "fashion-mnist"
    # Fashion-MNIST's thresholded masks give the dense probe its foreground labels
    assert 0.0 < report["summary"]["sim"]["fg_bg_miou"][0] <= 1.0
    assert not (tmp_path / "shapes").exists()


def test_raw_pixels_are_seen_at_the_encoders_input_size():
    """Fashion-MNIST's 28 px images under a 32 px model: the raw-pixel row must score the same 8x8
    patches as the encoders' rows (it once scored a 7x7 grid and the intervals could not pair them)."""
    import numpy as np
    import torch

    from simlab.claim import probe_raw_pixels
    from simlab.intervals import example_scores
    from simlab.probes import dense_patch_labels

    g = torch.Generator().manual_seed(0)

    def split(n):  # class c: a bright garment on quadrant c of a dark 28 px image
        labels = torch.arange(n) % 4
        images = torch.rand(n, 1, 28, 28, generator=g) * 20
        for i, c in enumerate(labels.tolist()):
            images[i, :, 14 * (c // 2):14 * (c // 2) + 14, 14 * (c % 2):14 * (c % 2) + 14] += 200
        images = images.to(torch.uint8)
        return {"images": images, "labels": labels, "masks": torch.where(images[:, 0] > 25, labels[:, None, None] + 1, 0)}

    train, test = split(80), split(40)
    preds = {}
    out = probe_raw_pixels(train, test, patch=4, dense_train=80, predictions=preds, image_size=32)
    dense = dense_patch_labels(test, 32, 8).numpy()
    assert dense.shape == (40, 64) and np.asarray(preds["fg_bg"]).shape == (40, 64)
    inter, union = example_scores(preds, test["labels"].numpy(), dense)["fg_bg"]
    assert np.isclose((inter.sum(0) / union.sum(0)).mean(), out["fg_bg_miou"])  # the same patches, scored alike
    assert out["linear"] == 1.0 and out["fg_bg_miou"] > 0.9  # the pixels separate these classes and masks


def test_logged_train_seconds_counts_each_step_once_across_a_resume(tmp_path):
    from simlab.claim import logged_train_seconds
    log = tmp_path / "metrics.jsonl"
    # 8 images per step; steps 0-30 at 80 img/s, then a crash, a resume from step 20 that re-logs 30
    # (replayed, not counted again) and goes on to 40 at 40 img/s
    records = [(10, 80.0), (20, 80.0), (30, 80.0), (30, 40.0), (40, 40.0)]
    log.write_text("".join(json.dumps({"step": s, "images_per_s": ips}) + "\n" for s, ips in records)
                   + json.dumps({"step": 40, "knn": 0.5}) + "\n")
    assert logged_train_seconds(log, batch_size=8) == 3 * 10 * 8 / 80 + 10 * 8 / 40


def test_each_ablation_is_its_base_with_one_switch_changed():
    from simlab.claim import ABLATION_BASE, ABLATION_ORDER, ABLATIONS, arm_config, claim_base, compared

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    base = claim_base("demo", 20)  # configs only (nothing is built): the mask ablation needs the demo's grid
    sim = flat(arm_config(ABLATION_BASE, base, 20, 0).to_dict())
    assert ABLATION_ORDER[0] == ABLATION_BASE and set(ABLATION_ORDER[1:]) == set(ABLATIONS)
    changed = {}
    for arm in ABLATIONS:
        cfg = flat(arm_config(arm, base, 20, 0).to_dict())
        changed[arm] = {k: cfg[k] for k in cfg if cfg[k] != sim[k]}
    assert changed == {"absolute queries": {"model.query_pos": "absolute"},
                       "no scale terms": {"model.scale_terms": False},
                       "neg weight 0": {"model.neg_weight": 0.0}, "neg weight 0.1": {"model.neg_weight": 0.1},
                       "mask 0.75": {"model.num_masked": 48},
                       "decoder 2+4": {"model.projector_depth": 2, "model.predictor_depth": 4},
                       "EMA from 0.995": {"train.ema_start": 0.995},
                       "swapped augmentations": {"aug.blur_p": (0.1, 1.0), "aug.solarize_p": (0.2, 0.0)}}
    # each ablation is read against its base, and every trained row against random init
    assert compared(ABLATION_ORDER) == [(a, ABLATION_BASE) for a in ABLATIONS] + [
        (a, "random init") for a in ABLATION_ORDER]
    # the claim: faithful SiM against every other row, centred SiM against the other objectives
    from simlab.claim import ARM_ORDER
    others = ["mae", "id", "mae flops", "id flops"]
    assert compared(ARM_ORDER) == [("sim", a) for a in ARM_ORDER[1:]] + [("sim centred", a) for a in others] + [
        (a, "random init") for a in ARM_ORDER]
