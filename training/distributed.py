"""torchrun / DistributedDataParallel plumbing: one process per core (gloo) or per GPU (nccl).

Without torchrun's environment (WORLD_SIZE unset or 1) everything here is a no-op single process.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device_type(choice: str) -> str:
    """``auto`` -> cuda when a GPU is visible, else cpu; ``cuda`` without a GPU is an error, not a fallback."""
    if choice not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device: {choice!r} is not auto, cpu or cuda")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda, but PyTorch sees no CUDA device (a CPU build, or no GPU)")
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"


def init_distributed(device_choice: str = "auto") -> DistContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = resolve_device_type(device_choice) == "cuda"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if world_size == 1:
        return DistContext(device=device)
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(dist.get_rank(), world_size, device)


def shard(items: list, ctx: DistContext) -> list:
    """This rank's share of a list that every rank built identically; equal counts on all ranks."""
    usable = len(items) - len(items) % ctx.world_size
    return items[ctx.rank:usable:ctx.world_size]


def broadcast(value, ctx: DistContext):
    """Rank 0's value on every rank (any picklable object)."""
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(value: float, ctx: DistContext) -> float:
    if not ctx.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def parameter_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for param in model.parameters():
        digest.update(param.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def ranks_in_sync(model: torch.nn.Module, ctx: DistContext) -> bool:
    """True when every rank holds bit-identical parameters (DDP all-reduces gradients, so they must)."""
    if not ctx.enabled:
        return True
    digests: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(digests, parameter_digest(model))
    return len(set(digests)) == 1


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.destroy_process_group()
