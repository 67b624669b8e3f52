"""FLOP of training steps, counted rather than estimated (``torch.utils.flop_counter``).

FlopCounterMode counts matmuls, convolutions and attention through
``scaled_dot_product_attention``; it misses elementwise ops, norms and the
optimizer, so the counts are of *useful* matmul FLOPs (what a utilisation is
taken against). Used by the benchmarks and by the claim harness (FLOP budgets).
"""

from __future__ import annotations

import torch


def synthetic_batch(cfg, batch_size: int, in_chans: int = 3, device="cpu") -> dict:
    """A fixed training batch of the right shapes (random views, real keyed geometry and masks)."""
    from .masking import keyed_masks
    from .views import GEOM_DRAWS, sample_geometry
    from .seeding import keyed_uniform, sample_keys
    from .pipeline import objective_inputs
    _, mask_kind, num_masked = objective_inputs(cfg)
    g = torch.Generator().manual_seed(0)
    S = cfg.data.image_size
    idx = torch.arange(batch_size)
    geoms = [sample_geometry(keyed_uniform(sample_keys(0, 0, idx, v), GEOM_DRAWS), S, S) for v in (1, 2)]
    batch = {"view1": torch.randn(batch_size, in_chans, S, S, generator=g),
             "view2": torch.randn(batch_size, in_chans, S, S, generator=g),
             "geom1": geoms[0], "geom2": geoms[1],
             "mask": keyed_masks(0, 0, idx, cfg.grid, num_masked, mask_kind)}
    from .pipeline import move_batch
    return move_batch(batch, torch.device(device))


def count_flops(model, batch: dict, amp=None) -> float:
    """FLOP of one training step's forward and backward (FlopCounterMode: matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode
    device = batch["view1"].device
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, _ = model(batch, momentum=0.996)
        loss.backward()
    return float(counter.get_total_flops())


def flop_per_image(cfg, batch_size: int = 8) -> float:
    """FLOP per image of one training step of the configured objective (CPU, fp32)."""
    from .train import build_model
    torch.manual_seed(0)
    model = build_model(cfg).train()
    return count_flops(model, synthetic_batch(cfg, batch_size)) / batch_size
