"""Cost of the per-step flag agreement under DDP: two all-reduces of one flag (non-finite, then
stop: the trainer before issue #18) against one all-reduce of both (``any_ranks``), 2 gloo processes.

    python benchmarks/ddp_flags.py --rounds 2000
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssseg.engine.distributed import any_ranks


def worker(rank: int, port: int, rounds: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    cpu = torch.device("cpu")
    ways = {"two all-reduces (before)": lambda: (any_ranks(False, device=cpu), any_ranks(False, device=cpu)),
            "one all-reduce (any_ranks)": lambda: any_ranks(False, False, device=cpu)}
    times = {name: [] for name in ways}
    for i in range(rounds):
        for name, agree in ways.items() if i % 2 else reversed(list(ways.items())):
            dist.barrier()
            start = time.perf_counter()
            agree()
            times[name].append(time.perf_counter() - start)
    if rank == 0:
        out.put({name: statistics.median(t) * 1e6 for name, t in times.items()})
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2000)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(worker, args=(port, args.rounds, queue), nprocs=2)
    print("| flag agreement per step | median µs |\n|---|---|")
    for name, micros in queue.get().items():
        print(f"| {name} | {micros:.0f} |")


if __name__ == "__main__":
    main()
