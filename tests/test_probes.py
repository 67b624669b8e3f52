"""Probes of a checkpoint through the command line."""

import json

from simlab.checkpoint import list_checkpoints, sha256_of
from simlab.cli import main


def test_cli_probe_reports_every_number_with_its_settings(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--preset", "tiny", "--out", str(run), "--steps", "4"]) == 0
    ckpt = list_checkpoints(run)[-1]
    capsys.readouterr()
    out = tmp_path / "probe.json"
    assert main(["probe", "--checkpoint", str(ckpt), "--train-size", "200", "--test-size", "100",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["sha256"] == sha256_of(ckpt) and res["dataset"] == "shapes"
    assert (res["train_size"], res["test_size"], res["encoder"]) == (200, 100, "pretrained")
    for key in ("knn", "linear", "fg_bg_miou", "fg_iou", "class_miou"):
        assert 0.0 <= res[key] <= 1.0, key
    capsys.readouterr()
    assert main(["probe", "--checkpoint", str(ckpt), "--train-size", "200", "--test-size", "100",
                 "--random-init", "0"]) == 0
    rand = json.loads(capsys.readouterr().out)
    assert rand["encoder"] == "random-init" and rand["random_init_seed"] == 0
    assert rand["train_size"] == 200
    numbers = lambda r: (r["knn"], r["linear"], r["fg_bg_miou"], r["class_miou"])
    assert numbers(rand) != numbers(res)  # a different encoder was probed
