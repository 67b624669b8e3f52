"""Shared test settings: few threads, deterministic algorithms, and the data-availability rule."""

import os
import signal

import pytest
import torch

torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)

# The Ctrl-C tests model a terminal's foreground job. A harness that starts the suite as a
# background job hands it SIGINT ignored, which every child would inherit (and simlab rightly
# leaves ignored), so those tests would hang: give the suite Python's default handler back; the
# children then start with SIGINT at its default, as under a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def require_data(available: bool, how: str) -> None:
    """Skip when test data is missing, except under CI=true, where that is a failure."""
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the test data is missing: {how}")
    pytest.skip(f"test data missing: {how}")


def crash_finetune_at(monkeypatch, step: int):
    """Make fine-tuning raise RuntimeError("crash at step N") when it asks for step N's learning rate
    (after step N's checkpoint, if any, was written); returns a function that undoes it."""
    from simlab import finetune as ft
    real = ft.lr_at

    def crash(c, s, spe, total):
        if s == step:
            raise RuntimeError(f"crash at step {step}")
        return real(c, s, spe, total)
    monkeypatch.setattr(ft, "lr_at", crash)
    return lambda: monkeypatch.setattr(ft, "lr_at", real)


def split_invariant(state: dict, objective: str = "sim") -> tuple[dict, dict]:
    """(float tensors with an exact gradient, the parts whose exact gradient is zero).

    The second part is attention's key biases (softmax ignores them) and, for ID, every bias and
    BatchNorm running mean: there a Linear bias feeds a BatchNorm, which removes it, and the last
    encoder block's output biases shift all tokens alike, which the projector's BatchNorm removes.
    AdamW turns such zero gradients' rounding noise into updates of up to lr per step.
    """
    exact, invariant = {}, {}
    for name, value in state.items():
        if not value.is_floating_point():
            continue
        value = value.double()
        if objective == "id" and name.endswith(("bias", "running_mean")):
            invariant[name] = value
            continue
        if name.endswith("qkv.bias"):
            d = value.shape[0] // 3
            invariant[name] = value[d:2 * d]
            value = torch.cat([value[:d], value[2 * d:]])
        exact[name] = value
    return exact, invariant
