"""The checkpoint that ships in data/checkpoints/ still matches the code.

It is made by ``simlab pretrain --preset demo-long`` and ``simlab export --format
checkpoint`` (README "Presets"); whenever the model or the checkpoint schema
changes these tests fail until it is regenerated.
"""

import json
from pathlib import Path

import torch

import simlab
from simlab.checkpoint import SCHEMA, config_of, load_checkpoint, sha256_of
from simlab.presets import preset
from simlab.train import build_model

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "checkpoints"
CKPT = SHIPPED / "sim_demo_long.pt"


def test_shipped_checkpoint_is_small_and_complete():
    assert CKPT.is_file(), f"{CKPT} is missing; regenerate it as README 'Presets' says"
    assert CKPT.stat().st_size <= 16 * 2**20
    assert (SHIPPED / "sim_demo_long.pt.sha256").read_text().split()[0] == sha256_of(CKPT)
    cfg = json.loads((SHIPPED / "sim_demo_long.config.json").read_text())
    metrics = [json.loads(line) for line in (SHIPPED / "sim_demo_long.metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == cfg["train"]["steps"]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in metrics)


def test_shipped_checkpoint_matches_the_current_schema_and_model():
    ckpt = load_checkpoint(CKPT)
    assert ckpt["schema"] == SCHEMA
    assert ckpt["optimizer"] is None  # a slim copy: for loading, not for resuming
    cfg = config_of(ckpt)
    # made by the demo-long preset as it is defined today
    assert cfg.defining_dict() == preset("demo-long").defining_dict()
    model = build_model(cfg, ckpt["preprocess"]["in_chans"])
    expected = model.state_dict()
    assert set(ckpt["model"]) == set(expected)
    for key, value in expected.items():
        assert ckpt["model"][key].shape == value.shape, key


def test_shipped_encoder_loads_and_runs():
    encoder = simlab.load_encoder(CKPT)
    size = encoder.preprocess["input_size"]
    x = torch.randn(2, encoder.preprocess["in_chans"], size, size)
    with torch.no_grad():
        tokens = encoder.forward_features(x)
    grid = size // encoder.config.model.patch_size
    assert tokens.shape == (2, 1 + grid * grid, encoder.config.model.embed_dim)
    assert torch.isfinite(tokens).all()
