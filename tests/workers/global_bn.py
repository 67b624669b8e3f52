"""Run under ``torchrun --nproc-per-node 2``: the distributed TokenBatchNorm equals one BatchNorm over
the whole batch (output, input and parameter gradients, running statistics). Prints the largest
differences as JSON on rank 0; exits non-zero when one exceeds the tolerance."""

import copy
import json
import sys

import torch
import torch.distributed as dist

from simlab.vit import TokenBatchNorm

torch.manual_seed(0)
x_full = torch.randn(8, 5, 6) * 3 + 1  # (B, L, D): the global batch, the same on every rank
upstream = torch.randn(8, 5, 6)        # weights of a scalar loss, so the gradients are not trivial
ref = TokenBatchNorm(6)
with torch.no_grad():
    ref.weight.uniform_(0.5, 1.5)
    ref.bias.normal_()
bn = copy.deepcopy(ref)

# the reference: one process, no group yet (F.batch_norm over all 40 tokens)
x_ref = x_full.clone().requires_grad_(True)
y_ref = ref(x_ref)
(y_ref * upstream).sum().backward()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
share = slice(rank * 8 // world, (rank + 1) * 8 // world)
x = x_full[share].clone().requires_grad_(True)
y = bn(x)
(y * upstream[share]).sum().backward()
w_grad, b_grad = bn.weight.grad.clone(), bn.bias.grad.clone()
dist.all_reduce(w_grad)  # a parameter's gradient is the sum of every rank's contribution (DDP averages)
dist.all_reduce(b_grad)
diffs = {
    "output": (y - y_ref[share]).abs().max().item(),
    "input_grad": (x.grad - x_ref.grad[share]).abs().max().item(),
    "weight_grad": (w_grad - ref.weight.grad).abs().max().item(),
    "bias_grad": (b_grad - ref.bias.grad).abs().max().item(),
    "running_mean": (bn.running_mean - ref.running_mean).abs().max().item(),
    "running_var": (bn.running_var - ref.running_var).abs().max().item(),
}
dist.destroy_process_group()
if rank == 0:
    print(json.dumps(diffs))
sys.exit(0 if max(diffs.values()) < 1e-5 else 1)
