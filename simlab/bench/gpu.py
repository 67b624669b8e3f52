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

import torch


def bench_gpu(quick: bool = False, dry_run: bool = False) -> dict:
    from ..config import AugConfig
    from ..presets import preset
    from ..views import TwoViewTransform
    from . import decode, hardware, synthetic_photo, timed, train_step_stats

    dry_run = dry_run or quick
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu check: no CUDA device here; use --dry-run to try it on the CPU")
    device = torch.device("cpu" if dry_run else "cuda")
    if dry_run:
        cfg, batch_size, source, view_size, views_batch = preset("tiny"), 4, (60, 80), 32, 8
    else:
        cfg, batch_size, source, view_size, views_batch = preset("vit-b16-paper"), 128, (375, 500), 224, 128
        torch.backends.cuda.matmul.allow_tf32 = True
    out: dict = {"hardware": hardware(), "device": str(device), "dry_run": dry_run,
                 "preset": "tiny" if dry_run else "vit-b16-paper"}

    # --- the step (precision auto: bf16 autocast on the GPU, fp32 on the CPU; fused AdamW on CUDA)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats = train_step_stats(cfg, batch_size, device, repeats=3 if dry_run else 10, warmup=2 if dry_run else 5,
                             peak_n=512 if dry_run else 8192)
    ips = stats["images_per_s"]
    out.update(stats, mfu=stats["utilisation"],
               peak_memory_gb=torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    # --- the device-side data path
    aug = AugConfig(crop_scale=(0.08, 1.0))
    tf = TwoViewTransform(aug, view_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    jpegs = [synthetic_photo(*source, seed=k) for k in range(8)]
    host = torch.stack([decode(jpegs[k % 8]) for k in range(views_batch)])  # uint8 (B, 3, H, W)
    if device.type == "cuda":
        host = host.pin_memory()
    idx = torch.arange(views_batch)
    geoms = tf.geometry(idx, 0, torch.tensor(source, dtype=torch.float64).expand(views_batch, 2))
    copy_s = timed(lambda: (host.to(device, non_blocking=True), sync()), repeats=5, warmup=1)
    on_device = host.to(device)
    views_s = timed(lambda: (tf(on_device, idx, 0, geoms=geoms), sync()), repeats=5, warmup=2)
    decode_s = timed(lambda: [decode(j) for j in jpegs], repeats=3, warmup=1) / len(jpegs)
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
