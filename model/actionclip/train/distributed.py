"""Data-parallel setup detected from the environment, as torchrun sets it (RANK, LOCAL_RANK, WORLD_SIZE).

Without those variables the run is a single process. NCCL is used when training on CUDA, gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from actionclip.errors import ConfigError


@dataclass
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False  # this process created the process group, so it destroys it too

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> cuda:<local_rank> when CUDA is available, else cpu; "cuda" gets the local rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name != "cpu":
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device("cpu")


def setup_distributed(device: str = "auto") -> DistEnv:
    """Initialise the process group if launched by torchrun (nanoGPT style) and pick this rank's device."""
    import torch.distributed as dist

    if int(os.environ.get("RANK", -1)) == -1:
        return DistEnv(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    dev = resolve_device(device, local_rank)
    created = False
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        created = True
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=dev, initialised_here=created)


def cleanup_distributed(env: DistEnv) -> None:
    import torch.distributed as dist

    if env.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    import torch.distributed as dist

    if env.distributed and dist.is_initialized():
        dist.barrier()
