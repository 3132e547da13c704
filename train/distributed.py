"""torch.distributed set-up for runs launched by ``torchrun`` (one process per device, any number of nodes)."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from timm.utils import world_info_from_env


@dataclass(frozen=True)
class DistInfo:
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_primary(self):
        return self.rank == 0


def init_distributed(device_name=None):
    """Join the process group torchrun describes in the environment (nccl on CUDA, gloo otherwise)."""
    local_rank, rank, world_size = world_info_from_env()
    if device_name is None:
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    if device.type == "cuda" and device.index is None and world_size > 1:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method=os.environ.get("DIST_URL", "env://"))
    return DistInfo(device=device, rank=rank, local_rank=local_rank, world_size=world_size)


def shutdown_distributed():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values, info):
    """Sum a 1-d float64 tensor of values across ranks (returned on CPU)."""
    tensor = torch.as_tensor(values, dtype=torch.float64)
    if info.distributed:
        backend_device = info.device if dist.get_backend() == "nccl" else torch.device("cpu")
        tensor = tensor.to(backend_device)
        dist.all_reduce(tensor)
    return tensor.cpu()


def gather_objects(obj, info):
    """List of ``obj`` from every rank (all ranks receive it)."""
    if not info.distributed:
        return [obj]
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj, info):
    if not info.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
