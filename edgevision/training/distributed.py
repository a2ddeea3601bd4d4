"""Data-parallel training under torchrun: who this process is, and the few collectives the loop needs.

edgevision never launches processes itself: `torchrun --nproc_per_node N [--nnodes M ...] -m edgevision
distill ...` starts them and sets RANK / WORLD_SIZE / LOCAL_RANK / GROUP_RANK; without those variables
everything runs as one process and no process group is created. NCCL on GPUs, gloo on CPUs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from edgevision.errors import EdgevisionError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    node: int = 0  # torchrun's GROUP_RANK
    nodes: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_torchrun() -> DistEnv:
    def number(name: str, default: int) -> int:
        value = os.environ.get(name)
        try:
            return int(value) if value not in (None, "") else default
        except ValueError:
            raise EdgevisionError(f"environment variable {name}={value!r} is not an integer",
                                  "launch with torchrun, which sets it") from None

    world = number("WORLD_SIZE", 1)
    local_world = number("LOCAL_WORLD_SIZE", world)
    return DistEnv(rank=number("RANK", 0), world_size=world, local_rank=number("LOCAL_RANK", 0),
                   node=number("GROUP_RANK", 0), nodes=max(1, world // max(1, local_world)))


def setup(device: str | None = None):
    """(DistEnv, torch.device): joins torchrun's process group when there is one.

    Each process of a GPU run takes the GPU of its LOCAL_RANK; a CPU run uses gloo.
    """
    import torch
    import torch.distributed as dist

    env = env_from_torchrun()
    wants_cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    if wants_cuda and not torch.cuda.is_available():
        raise EdgevisionError(f"--device {device} asked for, but no CUDA GPU is visible", "use --device cpu")
    if wants_cuda:
        if env.active:
            index = env.local_rank
        else:
            index = (torch.device(device).index or 0) if device else 0
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if env.active and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return env, dev


def teardown(env: DistEnv) -> None:
    import torch.distributed as dist

    if env.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.active:
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj: Any, env: DistEnv) -> Any:
    """Rank 0's `obj` on every rank (pickled by torch.distributed: for our own state, not user files)."""
    if not env.active:
        return obj
    import torch.distributed as dist

    box = [obj if env.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: list[float], env: DistEnv, device) -> list[float]:
    if not env.active:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
