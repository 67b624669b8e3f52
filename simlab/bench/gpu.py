"""The ``gpu`` check (``bench/gpu_check.sh``): on one GPU, in about six minutes, one JSON object with

- ``precision_auto``: what ``precision=auto`` resolves to here (bf16 where the GPU computes bf16
  natively, compute capability >= 8.0; fp16 with a GradScaler below that);
- the ``vit-b16-paper`` SiM step at batch 128 under bf16 autocast with fused AdamW, eager (top-level
  keys) and under ``torch.compile`` (``compiled``): images/s, FLOP per image (FlopCounterMode), MFU
  against a bf16 matmul peak measured in the same run, peak memory, and the compilation's seconds
  apart from the steps';
- the device-side data path at 224 px on the same GPU (uint8 500x375 sources in, both views cropped,
  coloured and normalised there): pairs/s against the step's demand, and the host's share: JPEG
  decoding on all cores (a process pool) and the pinned host-to-device copy;
- the views made on the GPU against the same views made on the CPU (largest difference), and the
  pixel-geometry check (``simlab.bench.geometry``) run on the GPU: how far, in patches, each view-2
  patch centre lands from where ``relative_coords`` says;
- ``pretrain_run``: a ``cifar-vit-s``-sized SiM pretraining on ``shapes`` at 32 px, sized from a
  measured step to take about two minutes: started by ``simlab pretrain`` and SIGKILLed a fifth of
  the way, then finished by the ``02_pretrain`` notebook under papermill on the same folder, which
  must resume from the last checkpoint and complete (``notebook`` says ``skipped: <reason>`` where
  papermill or a kernel is missing, and the same config then resumes through
  ``simlab.train.pretrain``); images/s of the resumed part; ``simlab probe`` on its checkpoint.

``--dry-run`` runs the same code on the CPU at toy sizes (``tiny`` preset, batch 4, a few steps; no
torch.compile), so the script is known to work before GPU time is spent on it; there every part
must succeed, while on the GPU a part that fails is reported as ``failed: ...`` and the others
still run.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from .gpu_run import ROOT, pretrain_run



# ---------------------------------------------------------------------------- host JPEG decoding
_JPEGS: list[bytes] = []


def _init_decoder(jpegs: list[bytes]) -> None:
    global _JPEGS
    _JPEGS = jpegs


def _decode_many(n: int) -> int:
    """A pool worker's task: decode ``n`` of the JPEGs to RGB arrays (PIL and numpy only: the worker is
    a fork of a process that may hold CUDA and thread pools, which it must not touch)."""
    import numpy as np
    from PIL import Image
    for k in range(n):
        with Image.open(io.BytesIO(_JPEGS[k % len(_JPEGS)])) as im:
            np.asarray(im.convert("RGB"))
    return n


def host_decode_rate(jpegs: list[bytes], workers: int, per_task: int, tasks: int) -> float:
    """JPEG decodes per second on a pool of ``workers`` processes (started and warmed before timing)."""
    import multiprocessing as mp
    with warnings.catch_warnings():  # Python 3.12 warns about forking a threaded process; the workers run PIL only
        warnings.simplefilter("ignore", DeprecationWarning)
        pool = mp.get_context("fork").Pool(workers, initializer=_init_decoder, initargs=(jpegs,))
        try:
            pool.map(_decode_many, [2] * workers, chunksize=1)  # every worker up, PIL imported
            start = time.perf_counter()
            done = sum(pool.map(_decode_many, [per_task] * tasks, chunksize=1))
            return done / (time.perf_counter() - start)
        finally:
            pool.terminate()
            pool.join()


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ---------------------------------------------------------------------------- the step under torch.compile
def compiled_step_stats(cfg, batch_size: int, device: torch.device, backend: str = "inductor", repeats: int = 10,
                        warmup: int = 3) -> dict:
    """images/s of the training step of ``train_step_stats`` with the model under ``torch.compile``;
    ``compile_s``: the first ``1 + warmup`` steps' time beyond that many steady steps (tracing,
    compiling forward and backward, and any recompilation), peak memory of the steady steps."""
    from ..devices import adamw, autocast_dtype
    from ..train import build_model, param_groups
    from . import synthetic_batch, timed
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    opt = adamw(param_groups(model, 0.05), 1e-4, (0.9, 0.95))
    amp = autocast_dtype(cfg.train.precision, device)
    batch = synthetic_batch(cfg, batch_size, device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    compiled = torch.compile(model, backend=backend)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def step():
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, _ = compiled(batch, momentum=0.996)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()

    start = time.perf_counter()
    for _ in range(1 + warmup):
        step()
    first = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = timed(step, repeats=repeats, warmup=0)
    return {"backend": backend, "step_s": t, "images_per_s": batch_size / t,
            "compile_s": max(first - (1 + warmup) * t, 0.0),
            "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None}


def _part(out: dict, key: str, fn: Callable[[], object], strict: bool) -> None:
    """``out[key] = fn()``; on the GPU a failing part is reported and the check goes on."""
    try:
        out[key] = fn()
    except Exception as e:
        if strict:
            raise
        out[key] = f"failed: {type(e).__name__}: {str(e)[:500]}"


def bench_gpu(quick: bool = False, dry_run: bool = False) -> dict:
    from ..config import AugConfig
    from ..presets import preset
    from ..devices import autocast_dtype
    from ..views import TwoViewTransform
    from . import decode, hardware, synthetic_photo, timed, train_step_stats
    from .geometry import geometry_error

    dry_run = dry_run or quick
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu check: no CUDA device here; use --dry-run to try it on the CPU")
    began = time.perf_counter()
    device = torch.device("cpu" if dry_run else "cuda")
    strict = dry_run  # the dry run is the test of this script: there nothing may fail quietly
    if dry_run:
        cfg, batch_size, source, view_size, views_batch = preset("tiny"), 4, (60, 80), 32, 8
    else:
        cfg, batch_size, source, view_size, views_batch = preset("vit-b16-paper"), 128, (375, 500), 224, 128
        cfg.train.precision = "bf16"  # the check's step is the bf16 one; what 'auto' picks is reported apart
        torch.backends.cuda.matmul.allow_tf32 = True
    # --- the host's JPEG decoding on all cores: first, before anything starts CUDA (hardware() does),
    # as the pool forks this process
    jpegs = [synthetic_photo(*source, seed=k) for k in range(8)]
    cores = usable_cores()
    decode_rate = host_decode_rate(jpegs, cores, per_task=4 if dry_run else 32, tasks=cores * (2 if dry_run else 4))
    out: dict = {"hardware": hardware(), "device": str(device), "dry_run": dry_run,
                 "preset": "tiny" if dry_run else "vit-b16-paper"}

    # --- precision=auto on this device
    auto = autocast_dtype("auto", device)
    out["precision_auto"] = str(auto or torch.float32).replace("torch.", "")
    if device.type == "cuda":
        out["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        out["precision_auto_is_bf16"] = auto == torch.bfloat16

    # --- the step, eager (precision bf16 on the GPU, fp32 on the CPU; fused AdamW on CUDA)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats = train_step_stats(cfg, batch_size, device, repeats=3 if dry_run else 10, warmup=2 if dry_run else 5,
                             peak_n=512 if dry_run else 8192)
    ips = stats["images_per_s"]
    out.update(stats, mfu=stats["utilisation"],
               peak_memory_gb=torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    # --- the same step under torch.compile (inductor). Not in the dry run: tracing SiM's step alone
    # takes about 12 CPU seconds there (even with the eager backend), more than the rest of the step checks
    def compiled() -> dict:
        torch.cuda.empty_cache()
        res = compiled_step_stats(cfg, batch_size, device, backend="inductor", repeats=10, warmup=3)
        res["mfu"] = res["images_per_s"] * stats["flop_per_image"] / stats["matmul_peak_flops"]
        res["speedup_vs_eager"] = res["images_per_s"] / ips
        return res
    if dry_run:
        out["compiled"] = "skipped: the dry run does not compile (tracing alone takes ~12 CPU seconds)"
    else:
        _part(out, "compiled", compiled, strict)
    demand = max(ips, out["compiled"]["images_per_s"] if isinstance(out["compiled"], dict) else 0.0)

    # --- the device-side data path
    aug = AugConfig(crop_scale=(0.08, 1.0))
    tf = TwoViewTransform(aug, view_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
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
    out.update(views_pairs_per_s=pairs_per_s, views_copy_s=copy_s, views_transform_s=views_s,
               step_demand_images_per_s=demand, views_vs_demand=pairs_per_s / demand,
               decode_per_s_per_core=1.0 / decode_s, host_cores=cores, host_decode_per_s=decode_rate,
               host_decode_vs_demand=decode_rate / demand,
               data_path_keeps_up=pairs_per_s >= demand and decode_rate >= demand)

    # --- the same views on the CPU, and the pixel geometry of views made on this device
    cpu_views = tf(host[:8].cpu(), idx[:8], 0, geoms=tuple(g.select(slice(0, 8)) for g in geoms))
    dev_views = tf(on_device[:8], idx[:8], 0, geoms=tuple(g.select(slice(0, 8)) for g in geoms))
    out["views_max_abs_diff_vs_cpu"] = max(float((a.cpu() - b).abs().max())
                                           for a, b in zip(dev_views[:2], cpu_views[:2]))
    _part(out, "geometry", lambda: geometry_error(device, per_flip=1 if dry_run else 6), strict)

    # --- a short pretraining through the notebook, its probe, and a killed run that resumes
    if dry_run:
        with tempfile.TemporaryDirectory(prefix="simlab-gpu-dry-") as work:
            _part(out, "pretrain_run", lambda: pretrain_run(Path(work), device, dry_run, strict), strict)
    else:
        work = ROOT / "runs" / "gpu_check"  # kept for a look afterwards; a rerun starts afresh
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        _part(out, "pretrain_run", lambda: pretrain_run(work, device, dry_run, strict), strict)
    out["check_s"] = time.perf_counter() - began
    return out
