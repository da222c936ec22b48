"""torch.distributed helpers: set-up from torchrun's environment, and collectives that are
no-ops in a single process (so plugins call them unconditionally)."""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist


def init_from_env() -> None:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1): NCCL on GPUs, gloo on CPU."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)


def leave() -> None:
    """Leave the process group (before the process exits: a gloo group still alive at exit can
    abort the process with ``terminate called without an active exception``). The DDP wrappers
    that hold the group are still alive here, kept by reference cycles, so they are collected
    first: otherwise the group outlives this call and is destroyed during interpreter shutdown."""
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place (NCCL needs it on this process's GPU)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def all_reduce_mean_(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over all processes, in place."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


def all_reduce_max_(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of ``tensor`` over all processes, in place."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """The ``rows`` of every process concatenated in rank order (counts may differ); this
    process's rows without several processes."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    world = dist.get_world_size()
    count = torch.tensor([rows.shape[0]], device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    most = int(max(counts))
    if most == 0:
        return rows
    padded = rows.new_zeros((most, *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(n)] for g, n in zip(gathered, counts)])


def any_ranks(*flags: bool, device: torch.device) -> tuple[bool, ...]:
    """Each flag, true on every process if it is true on any process, in one all-reduce."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flags
    t = torch.tensor([float(flag) for flag in flags], device=device)
    dist.all_reduce(t)
    return tuple(value > 0 for value in t.tolist())


def broadcast_buffers_(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics drift apart between ranks
    after each process's last forward), so all ranks evaluate the model rank 0 saves."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
