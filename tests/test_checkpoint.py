import torch

from simlab.checkpoint import CheckpointError, load_checkpoint, rng_state, save_atomic, set_rng_state
from simlab.presets import preset
from simlab.model import SiM

import pytest


def test_round_trip_is_bitwise_and_weights_only(tmp_path):
    model = SiM(preset("tiny"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ckpt = {"format": "simlab-checkpoint", "schema": 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "rng": rng_state(), "step": 3, "config": preset("tiny").to_json()}
    path = tmp_path / "c.pt"
    digest = save_atomic(ckpt, path)
    assert (tmp_path / "c.pt.sha256").read_text().startswith(digest)
    back = torch.load(path, weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(back["model"][k], v)
    again = load_checkpoint(path)
    assert again["step"] == 3 and torch.equal(again["rng"]["torch"], ckpt["rng"]["torch"])
    assert again["optimizer"]["param_groups"][0]["lr"] == 1e-3


def test_rng_state_restores_every_generator():
    import random
    import numpy as np
    state = rng_state()
    draws = (torch.rand(2), np.random.rand(2), random.random())
    set_rng_state(state)
    assert torch.equal(torch.rand(2), draws[0]) and np.array_equal(np.random.rand(2), draws[1])
    assert random.random() == draws[2]


def test_changed_file_is_detected(tmp_path):
    path = tmp_path / "c.pt"
    save_atomic({"format": "simlab-checkpoint", "schema": 1, "x": torch.ones(100)}, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)
