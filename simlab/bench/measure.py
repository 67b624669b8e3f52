"""How fast this machine is: the hardware record every benchmark carries, a median timer, the
matmul peak that utilisation is measured against, and training-step speed of presets."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch

from ..flops import count_flops, synthetic_batch


def hardware() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def timed(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(dtype=torch.float32, n: int = 2048, device="cpu") -> float:
    """FLOP/s of an n^3 matmul: the median of 5 timed runs after one untimed (DESIGN.md "Measuring")."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)

    def run():
        a @ b
        sync()
    return 2 * n ** 3 / timed(run, repeats=5)


def train_step_stats(cfg, batch_size: int, device="cpu", repeats: int = 3, flops: bool = True, warmup: int = 2,
                     peak_n: int = 2048, compile: bool = False) -> dict:
    """images/s of full training steps (forward, EMA, backward, clip, AdamW) on one fixed batch and,
    with ``flops``, FLOP per image of forward + backward (FlopCounterMode) and utilisation against
    the ``peak_n``-cubed matmul peak measured in the same process, dtype and thread count.
    ``compile``: the model under ``torch.compile``. ``first_step_s`` is the first warm-up step alone
    (where a compiled model compiles)."""
    from ..devices import adamw, autocast_dtype
    from ..train import build_model, param_groups
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(cfg).to(dev).train()
    net = torch.compile(model) if compile else model
    opt = adamw(param_groups(model, 0.05), 1e-4, (0.9, 0.95))
    amp = autocast_dtype(cfg.train.precision, dev)
    batch = synthetic_batch(cfg, batch_size, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, _ = net(batch, momentum=0.996)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()

    first = timed(step, repeats=1, warmup=0)
    t = timed(step, repeats=repeats, warmup=max(warmup - 1, 0))
    ips = batch_size / t
    out = {"batch_size": batch_size, "step_s": t, "first_step_s": first, "images_per_s": ips,
           "precision": str(amp or torch.float32).replace("torch.", "")}
    if flops:
        per_image = count_flops(model, batch, amp) / batch_size
        opt.zero_grad(set_to_none=True)
        peak = matmul_peak(amp or torch.float32, n=peak_n, device=dev)
        out.update(flop_per_image=per_image, matmul_peak_flops=peak, utilisation=ips * per_image / peak)
    return out


def bench_train(quick: bool = False, presets=None, batch_size=None, device=None) -> dict:
    """Training-step speed of presets on this machine (small batches for the big ones on a CPU)."""
    from ..presets import preset
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cpu_batches = {"tiny": 64, "demo": 128, "official-a": 128, "cifar-vit-s": 32, "vit-b16-paper": 8}
    names = presets or (["tiny", "demo"] if quick else list(cpu_batches))
    out = {"hardware": hardware(), "device": device, "presets": {}}
    for name in names:
        cfg = preset(name)
        bs = batch_size or (cpu_batches.get(name, 64) if device == "cpu" else cfg.train.batch_size)
        out["presets"][name] = train_step_stats(cfg, min(bs, 16) if quick else bs, device,
                                                repeats=2 if quick else 3)
    return out
