"""The ``gpu`` check (``bench/gpu_check.sh``): on one GPU, in a few minutes,

- the ``vit-b16-paper`` SiM step at batch 128 under bf16 autocast with fused AdamW: images/s,
  FLOP per image (FlopCounterMode), MFU against a bf16 matmul peak measured in the same run,
  and peak memory;
- the device-side data path at 224 px on the same GPU (uint8 sources of 500x375 in, both views
  cropped, coloured and normalised there): pairs/s, and whether it keeps up with the step;
  the host's share (JPEG decode per core, pinned host-to-device copy of a uint8 batch);
- the views made on the GPU against the same views made on the CPU (largest difference).

``--dry-run`` runs the same code on the CPU at toy sizes (``tiny`` preset, 32 px, batch 4), so
the script is known to work before GPU time is spent on it.
"""

from __future__ import annotations

import os
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int, warmup: int) -> float:
    """Median seconds of ``fn`` (synchronised), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_gpu(quick: bool = False, dry_run: bool = False) -> dict:
    from ..config import AugConfig
    from ..presets import preset
    from ..train import build_model, param_groups
    from ..views import TwoViewTransform
    from . import count_flops, decode, hardware, matmul_peak, synthetic_batch, synthetic_photo

    dry_run = dry_run or quick
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu check: no CUDA device here; use --dry-run to try it on the CPU")
    device = torch.device("cpu" if dry_run else "cuda")
    amp = None if dry_run else torch.bfloat16
    if dry_run:
        cfg, batch_size, source, view_size, views_batch = preset("tiny"), 4, (60, 80), 32, 8
    else:
        cfg, batch_size, source, view_size, views_batch = preset("vit-b16-paper"), 128, (375, 500), 224, 128
        torch.backends.cuda.matmul.allow_tf32 = True
    out: dict = {"hardware": hardware(), "device": str(device), "dry_run": dry_run,
                 "preset": "tiny" if dry_run else "vit-b16-paper", "batch_size": batch_size,
                 "precision": "bf16" if amp else "fp32"}

    # --- the step
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95),
                            **({"fused": True} if device.type == "cuda" else {}))
    batch = synthetic_batch(cfg, batch_size, device=device)
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, _ = model(batch, momentum=0.996)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    flop_batch = synthetic_batch(cfg, min(batch_size, 8), device=device)
    flop_per_image = count_flops(model, flop_batch, amp) / len(flop_batch["view1"])
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = _timed(step, device, repeats=3 if dry_run else 10, warmup=2 if dry_run else 5)
    peak = matmul_peak(amp or torch.float32, n=512 if dry_run else 8192, device=device)
    ips = batch_size / step_s
    out.update(step_s=step_s, images_per_s=ips, flop_per_image=flop_per_image, matmul_peak_flops=peak,
               mfu=ips * flop_per_image / peak,
               peak_memory_gb=torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None)
    del model, opt, batch

    # --- the device-side data path
    aug = AugConfig(crop_scale=(0.08, 1.0))
    tf = TwoViewTransform(aug, view_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    jpegs = [synthetic_photo(*source, seed=k) for k in range(8)]
    host = torch.stack([decode(jpegs[k % 8]) for k in range(views_batch)])  # uint8 (B, 3, H, W)
    if device.type == "cuda":
        host = host.pin_memory()
    idx = torch.arange(views_batch)
    geoms = tf.geometry(idx, 0, torch.tensor(source, dtype=torch.float64).expand(views_batch, 2))
    copy_s = _timed(lambda: host.to(device, non_blocking=True), device, repeats=5, warmup=1)
    on_device = host.to(device)
    views_s = _timed(lambda: tf(on_device, idx, 0, geoms=geoms), device, repeats=5, warmup=2)
    decode_s = _timed(lambda: [decode(j) for j in jpegs], torch.device("cpu"), repeats=3, warmup=1) / len(jpegs)
    pairs_per_s = views_batch / (views_s + copy_s)
    cores = os.cpu_count() or 1
    out.update(views_pairs_per_s=pairs_per_s, views_copy_s=copy_s, views_transform_s=views_s,
               decode_per_s_per_core=1.0 / decode_s, host_cores=cores,
               data_path_keeps_up=pairs_per_s >= ips and cores / decode_s >= ips)

    # --- the same views on the CPU
    cpu_views = tf(host[:8].cpu(), idx[:8], 0, geoms=tuple(g.select(slice(0, 8)) for g in geoms))
    dev_views = tf(on_device[:8], idx[:8], 0, geoms=tuple(g.select(slice(0, 8)) for g in geoms))
    out["views_max_abs_diff_vs_cpu"] = max(float((a.cpu() - b).abs().max())
                                           for a, b in zip(dev_views[:2], cpu_views[:2]))
    return out
