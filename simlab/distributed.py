"""Process groups and rank-safe helpers for ``torchrun`` (DDP: NCCL on GPU, gloo on CPU).

Nothing here calls ``torch.distributed`` unless a group is initialised, so the
single-process path stays collective-free. ``torchrun`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables; a plain
``python -m simlab pretrain`` sees none of them and runs alone.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def info() -> DistInfo:
    if not active():
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device, timeout_s: float = 60.0) -> DistInfo:
    """Join the group torchrun describes (once); a no-op in a single process.

    The timeout bounds every collective: a rank that waits on a dead peer fails
    after ``timeout_s`` instead of hanging (torchrun also stops the survivors as
    soon as one worker exits with an error).
    """
    if not launched_by_torchrun() or active():
        return info()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(backend, store=_attempt_store(rank, world, timeout), rank=rank, world_size=world,
                            timeout=timeout)
    return info()


def _attempt_store(rank: int, world: int, timeout: datetime.timedelta) -> dist.Store:
    """The rendezvous store, under a prefix of its own for each torchrun restart.

    Without the prefix, the ranks of a restarted group can read the addresses
    that the previous attempt's (dead) ranks published and fail to connect
    (seen with gloo after ``--max-restarts``, depending on timing).
    """
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=rank == 0 and not agent_hosts, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"simlab/attempt_{attempt}/", store)


def shutdown() -> None:
    if active():
        dist.destroy_process_group()


def mean_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over ranks (itself without a group); no gradient."""
    if not active():
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (itself without a group)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel when a group is active, else itself.

    Buffers are not broadcast: simlab's are computed from global statistics already (BatchNorm's
    running statistics and the EMA F, through :func:`sum_with_grad`) or are fixed tables. Newer
    torch renames the flag and warns; the old name works on 2.11+."""
    if not active():
        return model
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)


def barrier() -> None:
    if active():
        dist.barrier()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the incoming gradients over ranks.

    Every rank's output is the same sum, so the gradient of the global loss with respect to one
    rank's input is the sum of all ranks' output gradients. This is what the deprecated
    ``torch.distributed.nn.functional.all_reduce`` computes (it warns on every rank from torch 2.11),
    written with the plain collective, which every torch this code supports has.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-reduce (sum) that carries gradients: its backward all-reduces the incoming gradients.

    Under ``no_grad`` (the EMA target's pass) it is a plain collective; without a group, ``x`` itself.
    """
    if not active():
        return x
    return _AllReduceSum.apply(x)
