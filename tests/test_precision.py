"""Mixed precision: what ``precision=auto`` resolves to on each kind of device (the GPU's compute
capability mocked), and fine-tuning under fp16 going through a GradScaler (unscale before clipping,
skipped steps on overflow, scaler state checkpointed and restored)."""

import json

import pytest
import torch

from conftest import crash_finetune_at
from simlab import finetune as ft
from simlab import devices
from simlab.checkpoint import SHIPPED_CHECKPOINT, list_checkpoints, load_checkpoint
from simlab.devices import autocast_dtype

QUIET = dict(log=lambda *_: None)
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def fake_gpu(monkeypatch, capability):
    """A GPU of the given compute capability, whose torch also claims bf16 support (as torch does
    where bf16 is only emulated), so the rule is seen to read the capability."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize("capability, expected", [((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16),
                                                  ((8, 6), torch.bfloat16), ((7, 5), torch.float16),
                                                  ((7, 0), torch.float16), ((6, 1), torch.float16)])
def test_auto_picks_bf16_only_where_the_gpu_computes_it_natively(monkeypatch, capability, expected):
    fake_gpu(monkeypatch, capability)
    assert autocast_dtype("auto", CUDA) == expected


def test_auto_is_fp32_on_a_cpu_and_explicit_values_are_kept(monkeypatch):
    fake_gpu(monkeypatch, (7, 0))
    assert autocast_dtype("auto", CPU) is None
    for device in (CPU, CUDA):
        assert autocast_dtype("fp32", device) is None
        assert autocast_dtype("bf16", device) == torch.bfloat16  # asked for: given, even where emulated
        assert autocast_dtype("fp16", device) == torch.float16


class RecordingScaler(torch.amp.GradScaler):
    """A GradScaler that records what the training loop asks of it."""

    calls: list = []
    init_scale = 2.0 ** 16

    def __init__(self, device="cuda", **kwargs):
        super().__init__(device, **{**kwargs, "init_scale": self.init_scale})
        RecordingScaler.calls.append("init")

    def scale(self, outputs):
        self.calls.append("scale")
        return super().scale(outputs)

    def unscale_(self, optimizer):
        self.calls.append("unscale")
        return super().unscale_(optimizer)

    def step(self, optimizer, *args, **kwargs):
        self.calls.append("step")
        return super().step(optimizer, *args, **kwargs)

    def load_state_dict(self, state):
        self.calls.append(("load", state["scale"]))
        return super().load_state_dict(state)


@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """Fine-tuning on the CPU under fp16 autocast, as ``auto`` picks on a GPU without native bf16
    (the real rule with the capability mocked), with RecordingScaler in place of torch's GradScaler."""
    real = devices.autocast_dtype
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(devices, "autocast_dtype", lambda precision, device: real(precision, torch.device("cuda")))
    monkeypatch.setattr(torch.amp, "GradScaler", RecordingScaler)
    RecordingScaler.calls = []
    RecordingScaler.init_scale = 2.0 ** 16
    return RecordingScaler


def small(*extra):
    # fp16 matmuls are slow on a CPU (seconds per step at batch 32): batches of 8, a few steps
    return ft.finetune_config("tiny", ["train_size=32", "val_size=8", "batch_size=8", "steps=3",
                                       "checkpoint_every=2", "keep_checkpoints=5", "log_every=1", *extra])


def test_fp16_fine_tuning_scales_unscales_before_clipping_and_checkpoints_the_scaler(tmp_path, fp16_on_cpu,
                                                                                     monkeypatch):
    seen_by_clip = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(params, max_norm, *args, **kwargs):
        seen_by_clip.append(fp16_on_cpu.calls[-1])  # what the scaler did last before clipping
        return real_clip(params, max_norm, *args, **kwargs)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)

    ft.finetune(SHIPPED_CHECKPOINT, small("accum_steps=2", "steps=2"), tmp_path / "run", **QUIET)
    calls = fp16_on_cpu.calls
    assert calls[0] == "init"
    assert calls[1:] == ["scale", "scale", "unscale", "step"] * 2  # two micro-batches, one step; two steps
    assert seen_by_clip == ["unscale"] * 2  # the true gradients are clipped, not the scaled ones
    ckpt = load_checkpoint(list_checkpoints(tmp_path / "run")[0])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert ckpt["step"] == 2 and ckpt["scaler"]["scale"] == records[-1]["loss_scale"] > 0


def test_fp16_overflow_skips_the_step_and_a_resume_restores_the_scale(tmp_path, fp16_on_cpu, monkeypatch):
    # a scale of 2**40 overflows fp16 in the backward pass: the step must be skipped (weights
    # untouched, no NonFiniteError) and the scale halved, which the checkpoint records
    fp16_on_cpu.init_scale = 2.0 ** 40
    cfg = lambda: small("warmup_epochs=0", "steps=2", "checkpoint_every=1")  # noqa: E731 - lr > 0 from step 0
    restore = crash_finetune_at(monkeypatch, 1)
    with pytest.raises(RuntimeError, match="crash"):
        ft.finetune(SHIPPED_CHECKPOINT, cfg(), tmp_path / "run", **QUIET)
    first = load_checkpoint(list_checkpoints(tmp_path / "run")[0])
    assert first["step"] == 1 and first["scaler"]["scale"] == 2.0 ** 39
    initial = ft.build_classifier(SHIPPED_CHECKPOINT, cfg(), first["num_classes"]).state_dict()
    assert all(torch.equal(first["model"][k], initial[k]) for k in initial)  # the overflowing step was skipped

    restore()
    fp16_on_cpu.calls = []
    ft.finetune(SHIPPED_CHECKPOINT, cfg(), tmp_path / "run", **QUIET)
    assert ("load", 2.0 ** 39) in fp16_on_cpu.calls  # the resumed run continues from the saved scale
    assert load_checkpoint(list_checkpoints(tmp_path / "run")[0])["scaler"]["scale"] == 2.0 ** 38
