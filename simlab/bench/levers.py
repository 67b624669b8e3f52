"""Speed levers of a CPU training step, each measured against the plain path in the same process.

``python -m simlab.bench levers --save``: the ``demo`` preset's step at its own batch (64), then one
lever at a time on the same shapes:

- ``compile``: ``torch.compile`` of the model (Inductor), its compile time (the first step) and its
  steady step, and whether it pays back within a run of the preset's length;
- ``gelu_tanh``: the MLP's activation, exact erf GELU against the tanh approximation, forward and
  backward on the hidden tensor (B, 1 + N_visible, 4 D) of the online encoder;
- ``attention``: ``scaled_dot_product_attention`` (PyTorch's CPU flash kernel) against the explicit
  ``softmax(q kᵀ / √d) v``, forward and backward at the encoder's visible sequence;
- ``adamw``: AdamW's step on the model's parameters, torch's fused kernel (what simlab uses) against
  its ``foreach`` and per-tensor paths.

A lever is worth keeping only where its time is below the plain path's by more than run-to-run
noise (about 10 % on this CPU) and, for a rewritten op, its outputs match the plain one's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .measure import hardware, matmul_peak, timed, train_step_stats


def _fwd_bwd(fn, *inputs: torch.Tensor, repeats: int) -> float:
    """Median seconds of ``fn(*inputs)``'s forward and backward."""
    def run():
        for t in inputs:
            t.grad = None
        fn(*inputs).sum().backward()
    return timed(run, repeats=repeats)


def _gelu(batch: int, tokens: int, hidden: int, repeats: int) -> dict:
    x = torch.randn(batch * tokens, hidden, requires_grad=True)
    exact = _fwd_bwd(F.gelu, x, repeats=repeats)
    tanh = _fwd_bwd(lambda t: F.gelu(t, approximate="tanh"), x, repeats=repeats)
    with torch.no_grad():
        diff = float((F.gelu(x) - F.gelu(x, approximate="tanh")).abs().max())
    return {"shape": [batch * tokens, hidden], "plain_s": exact, "lever_s": tanh, "speedup": exact / tanh,
            "max_abs_diff": diff}


def _attention(batch: int, heads: int, tokens: int, head_dim: int, repeats: int) -> dict:
    q, k, v = (torch.randn(batch, heads, tokens, head_dim, requires_grad=True) for _ in range(3))

    def explicit(q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) * head_dim ** -0.5, dim=-1) @ v

    sdpa = _fwd_bwd(F.scaled_dot_product_attention, q, k, v, repeats=repeats)
    written_out = _fwd_bwd(explicit, q, k, v, repeats=repeats)
    with torch.no_grad():
        diff = float((F.scaled_dot_product_attention(q, k, v) - explicit(q, k, v)).abs().max())
    # plain = the path simlab uses (timm's Block calls scaled_dot_product_attention), as for every lever
    return {"shape": [batch, heads, tokens, head_dim], "plain_s": sdpa, "lever_s": written_out,
            "speedup": sdpa / written_out, "max_abs_diff": diff}


def _adamw(model: torch.nn.Module, repeats: int) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    out = {"tensors": len(params), "numel": sum(p.numel() for p in params)}
    for name, kw in (("fused", {"fused": True}), ("foreach", {"foreach": True}), ("per_tensor", {"foreach": False})):
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), **kw)
        out[f"{name}_s"] = timed(opt.step, repeats=repeats, warmup=2)
    return out


def _compile(cfg, batch_size: int, eager_step_s: float, steps: int) -> dict:
    c = train_step_stats(cfg, batch_size, repeats=3, flops=False, compile=True)
    first, steady = c["first_step_s"], c["step_s"]  # the first step compiles forward and backward
    run_eager, run_compiled = steps * eager_step_s, first + (steps - 1) * steady
    return {"first_step_s": first, "step_s": steady, "speedup": eager_step_s / steady, "run_steps": steps,
            "run_eager_s": run_eager, "run_compiled_s": run_compiled, "pays": run_compiled < run_eager}


def bench_levers(quick: bool = False) -> dict:
    """Each lever against the plain path on the ``demo`` step's shapes (``tiny`` and no compile with
    ``quick``)."""
    from ..masking import default_num_masked
    from ..presets import preset
    from ..train import build_model
    name = "tiny" if quick else "demo"
    cfg = preset(name)
    m, b = cfg.model, cfg.train.batch_size
    grid = cfg.data.image_size // m.patch_size
    visible = grid * grid - (m.num_masked if m.num_masked is not None else default_num_masked(grid))
    repeats = 2 if quick else 5
    base = train_step_stats(cfg, b, repeats=repeats, peak_n=256 if quick else 2048)
    out = {"hardware": hardware(), "preset": name, "batch_size": b, "step": base,
           "gelu_tanh": _gelu(b, 1 + visible, int(m.embed_dim * m.mlp_ratio), repeats),
           "attention": _attention(b, m.num_heads, 1 + visible, m.embed_dim // m.num_heads, repeats),
           "adamw": _adamw(build_model(cfg), repeats)}
    if not quick:  # Inductor's compile alone takes a minute or more on this CPU, even for ``tiny``
        out["compile"] = _compile(cfg, b, base["step_s"], cfg.train.steps or 500)
    out["matmul_peak_end"] = matmul_peak(n=256 if quick else 2048)  # the peak drifts: read it again at the end
    return out
