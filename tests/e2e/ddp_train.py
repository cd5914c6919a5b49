"""A small model trained with torch.distributed's DistributedDataParallel (gloo, CPU), or in
one process when no gang started it: the same global batch and seed either way, so both end
with the same weights. Saves rank 0's weights to the path it is given."""

import os
import sys

import torch
import torch.distributed as dist

out = sys.argv[1]
world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
if world > 1:
    dist.init_process_group("gloo")  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
data = torch.Generator().manual_seed(1)
x = torch.randn(256, 8, generator=data)
y = x.sum(dim=1, keepdim=True).sin()
net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
opt = torch.optim.SGD(net.parameters(), lr=0.1)
batch = 32  # the global batch; each rank takes an equal share of it
for step in range(30):
    idx = torch.arange(step * batch, (step + 1) * batch) % len(x)
    mine = idx[rank::world]
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(net(x[mine]), y[mine])
    loss.backward()  # DDP averages the ranks' gradients: the global batch's mean gradient
    opt.step()
if rank == 0:
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out)
if world > 1:
    dist.destroy_process_group()
print(f"rank {rank} of {world}: loss {loss.item():.6f}", flush=True)
