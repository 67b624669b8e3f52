"""Fine-tuning: the paper's protocol pieces (layer decay, schedule, timm augmentation and mixup),
pretrained against random init on shapes, and the run folder's resume rules."""

import json
import math

import numpy as np
import pytest
import torch

from conftest import crash_finetune_at
from simlab import finetune as ft
from simlab.checkpoint import SHIPPED_CHECKPOINT, list_checkpoints, load_checkpoint, load_encoder
from simlab.cli import main
from simlab.config import ConfigError

QUIET = dict(log=lambda *_: None)


def test_layer_decay_groups_follow_beit_and_mae():
    cfg = ft.finetune_config("tiny")
    model = ft.build_classifier(SHIPPED_CHECKPOINT, cfg, 10)
    depth = len(model.encoder.blocks)
    groups = ft.param_groups(model, 0.05, 0.65)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            name = names[id(p)]
            layer = (depth + 1 if name.startswith(("head", "fc_norm")) else
                     int(name.split(".")[2]) + 1 if name.startswith("encoder.blocks.") else 0)
            assert g["lr_scale"] == pytest.approx(0.65 ** (depth + 1 - layer)), name
            no_decay = p.ndim == 1 or name.endswith("bias") or name.endswith("cls_token")
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    assert model.encoder.patch_embed.proj.weight.requires_grad  # everything is fine-tuned


def test_schedule_warms_up_then_follows_a_cosine():
    cfg = ft.finetune_config("tiny", ["lr=0.01", "min_lr=0.001", "warmup_epochs=1"])
    spe, total = 10, 50
    assert ft.lr_at(cfg, 0, spe, total) == 0.0
    assert ft.lr_at(cfg, 5, spe, total) == pytest.approx(0.005)
    assert ft.lr_at(cfg, 10, spe, total) == pytest.approx(0.01)
    assert ft.lr_at(cfg, 30, spe, total) == pytest.approx(0.001 + 0.009 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    with pytest.raises(ConfigError, match="layer_decay"):
        ft.finetune_config("tiny", ["layer_decay=1.5"])


# CI time (~70 s): opt-in; the README's fine-tune numbers come from bench/finetune.json, which
# test_readme holds the README to, and the default tests keep the fine-tune mechanics
@pytest.mark.slow
def test_a_pretrained_encoder_fine_tunes_better_than_a_random_one(tmp_path):
    pre = ft.finetune(SHIPPED_CHECKPOINT, ft.finetune_config("tiny"), tmp_path / "pre", **QUIET)
    rnd = ft.finetune(SHIPPED_CHECKPOINT, ft.finetune_config("tiny", random_init=0), tmp_path / "rnd", **QUIET)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "pre" / "metrics.jsonl").open()]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.05  # the loss goes down
    assert pre["steps"] == rnd["steps"] == 80 and pre["encoder"] == "pretrained" and rnd["encoder"] == "random-init"
    assert pre["top1"] > rnd["top1"] + 0.04, (pre["top1"], rnd["top1"])
    # the fine-tuned checkpoint is a simlab checkpoint: load_encoder reads its encoder
    encoder = load_encoder(list_checkpoints(tmp_path / "pre")[0])
    assert encoder.forward_features(torch.zeros(1, 3, 32, 32)).shape[-1] == encoder.embed_dim


def test_an_interrupted_fine_tune_resumes_bitwise_and_reruns_do_nothing(tmp_path, monkeypatch):
    cfg = lambda: ft.finetune_config("tiny", ["steps=16", "checkpoint_every=5", "keep_checkpoints=5",  # noqa: E731
                                              "train_size=640", "val_size=100", "log_every=1"])
    whole = ft.finetune(SHIPPED_CHECKPOINT, cfg(), tmp_path / "whole", **QUIET)
    restore = crash_finetune_at(monkeypatch, 12)
    with pytest.raises(RuntimeError, match="crash"):
        ft.finetune(SHIPPED_CHECKPOINT, cfg(), tmp_path / "split", **QUIET)
    restore()
    messages = []
    again = ft.finetune(SHIPPED_CHECKPOINT, cfg(), tmp_path / "split", log=messages.append)
    assert any("resuming" in m and "step 10" in m for m in messages)
    a, b = (load_checkpoint(list_checkpoints(tmp_path / r)[0])["model"] for r in ("whole", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again["top1"] == whole["top1"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").open()]
    assert steps == list(range(1, 17))
    messages.clear()
    assert ft.finetune(SHIPPED_CHECKPOINT, cfg(), tmp_path / "split", log=messages.append) == again
    assert any("nothing to do" in m for m in messages)
    # a finished fine-tune asked for with another definition is refused, as a finished pretraining is
    with pytest.raises(ConfigError, match="finished run defined differently(.|\n)*label_smoothing"):
        ft.finetune(SHIPPED_CHECKPOINT, ft.finetune_config("tiny", [
            "steps=16", "checkpoint_every=5", "keep_checkpoints=5", "train_size=640", "val_size=100",
            "label_smoothing=0.3"]), tmp_path / "split", **QUIET)
    (tmp_path / "split" / "COMPLETE").unlink()
    with pytest.raises(ConfigError, match="layer_decay"):
        ft.finetune(SHIPPED_CHECKPOINT, ft.finetune_config("tiny", ["steps=16", "train_size=640", "val_size=100",
                                                                    "layer_decay=0.5"]), tmp_path / "split", **QUIET)


def test_the_cli_runs_the_full_augmentation_recipe(tmp_path, capsys):
    """RandAugment, random erasing, mixup and cutmix with label smoothing: the paper's pieces, 3 steps."""
    code = main(["finetune", "--preset", "tiny", "--out", str(tmp_path / "run"), "--steps", "3",
                 "--set", "randaug=rand-m9-mstd0.5-inc1", "--set", "reprob=0.25", "--set", "mixup=0.8",
                 "--set", "cutmix=1.0", "--set", "train_size=256", "--set", "val_size=64", "--set", "drop_path=0.1"])
    assert code == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert '"top1"' in capsys.readouterr().out  # the results are printed too
    assert 0.0 <= res["top1"] <= 1.0 and res["steps"] == 3 and (tmp_path / "run" / "COMPLETE").exists()


def test_zero_bit_posterize_gives_black_as_older_pillow_did():
    from PIL import Image
    from timm.data import auto_augment as aa
    ft.transforms(ft.finetune_config("tiny"), {"input_size": 8, "mean": [0.5] * 3, "std": [0.5] * 3})
    img = Image.new("RGB", (4, 4), (200, 100, 50))
    pixels = lambda im: {tuple(int(v) for v in px) for px in np.asarray(im).reshape(-1, 3)}  # noqa: E731
    assert pixels(aa.NAME_TO_OP["PosterizeIncreasing"](img, 0)) == {(0, 0, 0)}
    assert pixels(aa.NAME_TO_OP["PosterizeIncreasing"](img, 1)) == {(128, 0, 0)}
