import json

import numpy as np
import pytest
import torch

import simlab
from simlab import model as model_module
from simlab.checkpoint import list_checkpoints, load_checkpoint
from simlab.cli import main
from simlab.config import ConfigError, apply_overrides
from simlab.presets import preset
from simlab.train import NonFiniteError, Schedule, pretrain


def read_metrics(run):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def test_schedules():
    cfg = apply_overrides(preset("tiny"), ["warmup_frac=0.1", "lr=0.01", "min_lr=0.001", "ema_start=0.99"])
    s = Schedule.build(cfg, steps_per_epoch=10, total=100)
    assert s.lr[0] == 0 and abs(s.lr[10] - 0.01) < 1e-12 and np.all(np.diff(s.lr[:10]) > 0)
    assert np.all(np.diff(s.lr[10:]) < 0) and abs(s.lr[-1] - 0.001) < 1e-4
    assert abs(s.momentum[0] - 0.99) < 1e-12 and s.momentum[-1] > 0.9999 and np.all(np.diff(s.momentum) > 0)
    paper = preset("vit-b16-paper")
    p = Schedule.build(paper, steps_per_epoch=312, total=312 * 1600)
    assert np.argmax(p.lr) == 40 * 312  # 40 warmup epochs


def test_thirty_tiny_steps_lower_the_loss(tmp_path):
    cfg = apply_overrides(preset("tiny"), ["steps=30", "log_every=1"])
    pretrain(cfg, tmp_path / "run", log=lambda s: None)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run")]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    rec = read_metrics(tmp_path / "run")[-1]
    for key in ("loss", "pos", "neg", "lr", "momentum", "grad_norm", "images_per_s", "target_std", "pred_rank"):
        assert np.isfinite(rec[key]), key


def test_resume_continues_exactly(tmp_path):
    cfg = apply_overrides(preset("tiny"), ["steps=20", "checkpoint_every=10", "keep_checkpoints=5"])
    pretrain(cfg, tmp_path / "whole", log=lambda s: None)
    half = apply_overrides(preset("tiny"), ["steps=20", "checkpoint_every=10", "keep_checkpoints=5"])
    # stop after 10 steps by training a 20-step run's first 10 steps, then resuming
    pretrain(apply_overrides(preset("tiny"), ["steps=20", "checkpoint_every=10", "keep_checkpoints=5"]),
             tmp_path / "split", log=lambda s: None)
    (tmp_path / "split" / "COMPLETE").unlink()
    newest = list_checkpoints(tmp_path / "split")[0]
    newest.unlink()  # as if killed after the step-10 checkpoint
    newest.with_name(newest.name + ".sha256").unlink()
    messages = []
    pretrain(half, tmp_path / "split", log=messages.append)
    assert any("resuming" in m and "step 10" in m for m in messages)
    a = load_checkpoint(list_checkpoints(tmp_path / "whole")[0])
    b = load_checkpoint(list_checkpoints(tmp_path / "split")[0])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    steps = [r["step"] for r in read_metrics(tmp_path / "split")]
    assert steps == sorted(set(steps)), "no step is logged twice"
    la, lb = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "split")
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def test_resume_refuses_a_differently_defined_run(tmp_path):
    pretrain(apply_overrides(preset("tiny"), ["steps=10"]), tmp_path / "r", log=lambda s: None)
    (tmp_path / "r" / "COMPLETE").unlink()
    with pytest.raises(ConfigError, match="neg_weight"):
        pretrain(apply_overrides(preset("tiny"), ["steps=10", "neg_weight=0.5"]), tmp_path / "r", log=lambda s: None)
    # execution-only fields may change
    pretrain(apply_overrides(preset("tiny"), ["steps=10", "log_every=2"]), tmp_path / "r", log=lambda s: None)


def test_non_finite_loss_stops_before_the_optimizer_step(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = model_module.sim_loss

    def poisoned(pred, target, neg_weight, correlation=None):
        loss, stats = real(pred, target, neg_weight, correlation)
        calls["n"] += 1
        if calls["n"] == 4:
            stats = {**stats, "neg": stats["neg"] * float("nan")}
            loss = loss * float("nan")
        return loss, stats

    monkeypatch.setattr(model_module, "sim_loss", poisoned)
    cfg = apply_overrides(preset("tiny"), ["steps=10", "checkpoint_every=2"])
    with pytest.raises(NonFiniteError, match=r"step 3: non-finite loss, neg"):
        pretrain(cfg, tmp_path / "r", log=lambda s: None)
    ckpt = load_checkpoint(list_checkpoints(tmp_path / "r")[0])
    assert ckpt["step"] == 2 and not (tmp_path / "r" / "COMPLETE").exists()


def test_cli_pretrain_resume_and_load_encoder(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", "--preset", "tiny", "--out", str(run), "--steps", "6", "--set", "checkpoint_every=3"]
    assert main(args) == 0
    assert (run / "COMPLETE").exists() and (run / "config.json").exists()
    assert main(args) == 0 and "nothing to do" in capsys.readouterr().out
    ckpt_path = list_checkpoints(run)[0]
    raw = torch.load(ckpt_path, weights_only=True)
    assert raw["step"] == 6 and raw["format"] == "simlab-checkpoint"
    enc = simlab.load_encoder(ckpt_path)
    assert not enc.training and enc.preprocess["input_size"] == 16 and enc.preprocess["in_chans"] == 3
    out = enc.forward_features(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 1 + 16, 48)
    state = {k[len("encoder."):]: v for k, v in raw["model"].items() if k.startswith("encoder.")}
    for k, v in enc.state_dict().items():
        assert torch.equal(v, state[k])


def test_cli_rejects_bad_settings_naming_the_field(tmp_path, capsys):
    assert main(["pretrain", "--preset", "tiny", "--out", str(tmp_path), "--set", "patch_size=5"]) == 2
    assert "patch_size" in capsys.readouterr().err
    assert main(["pretrain", "--preset", "tiny", "--out", str(tmp_path), "--set", "lr=-1"]) == 2
    assert "lr" in capsys.readouterr().err
    assert main(["pretrain", "--preset", "tiny", "--out", str(tmp_path), "--set", "num_masked=16"]) == 2
    assert "num_masked" in capsys.readouterr().err
    assert not (tmp_path / "config.json").exists()


def test_export_slim_checkpoint_and_safetensors(tmp_path):
    from safetensors.torch import load_file
    run = tmp_path / "run"
    assert main(["pretrain", "--preset", "tiny", "--out", str(run), "--steps", "3"]) == 0
    ckpt = list_checkpoints(run)[0]
    slim = tmp_path / "slim.pt"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(slim), "--format", "checkpoint"]) == 0
    assert slim.stat().st_size < 0.7 * ckpt.stat().st_size  # no optimizer state
    a, b = simlab.load_encoder(ckpt), simlab.load_encoder(slim)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(a.forward_features(x), b.forward_features(x))
    st = tmp_path / "enc.safetensors"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(st)]) == 0
    weights = load_file(str(st))
    for k, v in a.state_dict().items():
        assert torch.equal(weights[k], v), k


def test_online_knn_monitor_logs_and_leaves_training_untouched(tmp_path):
    sets = ["steps=32", "log_every=10", "knn_train_size=200", "knn_test_size=100"]
    pretrain(apply_overrides(preset("tiny"), sets + ["knn_every=1"]), tmp_path / "knn", log=lambda s: None)
    pretrain(apply_overrides(preset("tiny"), sets), tmp_path / "plain", log=lambda s: None)
    records = read_metrics(tmp_path / "knn")
    knn = [(r["step"], r["knn"]) for r in records if "knn" in r]
    assert [s for s, _ in knn] == [16, 32]  # every epoch of 256 / 16 steps, and at the end
    assert all(0.0 <= a <= 1.0 for _, a in knn)
    assert [r["step"] for r in records] == [10, 16, 20, 30, 32]
    assert not any("knn" in r for r in read_metrics(tmp_path / "plain"))
    a = torch.load(list_checkpoints(tmp_path / "knn")[-1], weights_only=True)["model"]
    b = torch.load(list_checkpoints(tmp_path / "plain")[-1], weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the monitor draws nothing and changes nothing


def test_online_knn_monitor_refuses_an_unlabeled_set(tmp_path):
    from simlab.train import KnnMonitor
    images = tmp_path / "imgs"
    images.mkdir()
    from PIL import Image
    for i in range(4):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
    cfg = apply_overrides(preset("tiny"), ["knn_every=1", "knn_dataset=imagefolder", f"data_root={images}",
                                           "dataset=imagefolder", "knn_train_size=4", "knn_test_size=4"])
    with pytest.raises(ConfigError, match="knn_dataset"):
        KnnMonitor(cfg)


def test_online_knn_monitor_reads_a_labelled_folder_of_mixed_sizes(tmp_path):
    from PIL import Image
    from simlab.train import KnnMonitor
    for c, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((18 + 4 * i, 22, 3), 60 * c + 10 * i, np.uint8)).save(tmp_path / name / f"{i}.png")
    cfg = apply_overrides(preset("tiny"), ["knn_every=1", "knn_dataset=imagefolder", f"data_root={tmp_path}",
                                           "dataset=imagefolder", "knn_train_size=6", "knn_test_size=6"])
    images, labels = KnnMonitor(cfg).splits["train"]
    assert images.shape == (6, 3, 16, 16) and images.dtype == torch.uint8
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_device_side_augmentation_gives_the_loader_side_batches_and_run(tmp_path):
    """augment_on=device sends uint8 images and boxes and makes the views on the training device;
    on the CPU that is the same computation, so batches and the whole run are bitwise equal."""
    from PIL import Image

    from simlab.pipeline import TwoViewBatches, augment_on_device, build_pretrain_dataset, device_views
    auto = preset("tiny")  # augment_on=auto: on the device on CUDA, in the loader on a CPU
    assert augment_on_device(auto, torch.device("cuda")) and not augment_on_device(auto, torch.device("cpu"))
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(20, 24), (31, 17), (16, 16), (40, 33), (18, 29), (25, 25)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    for overrides in ([], ["dataset=imagefolder", f"data_root={folder}"]):  # one uint8 batch; a list of sizes
        cfg = apply_overrides(preset("tiny"), overrides)
        ds = build_pretrain_dataset(cfg)
        item = (3, 1, torch.tensor([4, 0, 5, 2]))
        loader_side = TwoViewBatches(ds, cfg, augment=True)[item]
        raw = TwoViewBatches(ds, cfg, augment=False)[item]
        assert raw["images"][0].dtype == torch.uint8 and "view1" not in raw
        device_side = device_views(raw, TwoViewBatches(ds, cfg).transform, torch.device("cpu"))
        for key in ("view1", "view2", "mask"):
            assert torch.equal(device_side[key], loader_side[key]), key
        assert all(torch.equal(a, b) for a, b in zip(device_side["geom2"], loader_side["geom2"]))
    runs = {}
    for where in ("loader", "device"):
        pretrain(apply_overrides(preset("tiny"), ["steps=6", "log_every=1", f"augment_on={where}"]),
                 tmp_path / where, log=lambda *_: None)
        runs[where] = [json.loads(line)["loss"] for line in (tmp_path / where / "metrics.jsonl").open()]
    assert runs["device"] == runs["loader"] and len(runs["loader"]) == 6


def test_fused_adamw_matches_the_per_tensor_loop():
    """The optimizer training uses (simlab.devices.adamw, fused on the CPU too) against torch's plain
    per-tensor AdamW, over a few steps of the demo model with decay groups and random gradients."""
    from simlab.devices import adamw
    from simlab.presets import preset
    from simlab.train import build_model, param_groups
    cfg = preset("demo")
    out = []
    for make in (lambda g: adamw(g, 1e-3, (0.9, 0.95)),
                 lambda g: torch.optim.AdamW(g, lr=1e-3, betas=(0.9, 0.95), foreach=False, fused=False)):
        torch.manual_seed(0)
        model = build_model(cfg)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make(param_groups(model, 0.05))
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        out.append(torch.cat([p.detach().flatten() for p in params]))
    assert torch.allclose(out[0], out[1], atol=1e-6, rtol=0)
    torch.manual_seed(0)
    start = torch.cat([p.detach().flatten() for p in build_model(cfg).parameters() if p.requires_grad])
    assert (out[0] - start).abs().max() > 1e-3  # the steps did move the weights
