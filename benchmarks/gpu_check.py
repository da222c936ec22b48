"""GPU readiness in one prepared command: every CUDA path of ssseg, tested and measured.

    python benchmarks/gpu_check.py --out runs/gpu_check            # a CUDA machine, about 8 minutes
    python benchmarks/gpu_check.py --quick --out /tmp/gpu_check    # every section at toy sizes on the CPU

Sections, each with its own time budget; one that fails or runs out of time records its error and
the rest still run:

- ``cuda_tests``: ``pytest -m cuda`` (precision and the gradient scaler, channels_last, batched
  sliding windows, pinned memory, photometric ops on the device against the CPU);
- ``paper_steps``: an iMAS and a UniMatch step at the paper recipes' model, crop and per-GPU batch
  (embedded data, ``benchmarks/paper_size.py``) in fp32, bf16, fp16 (with the scaler), with
  channels_last and with torch.compile: step time, images/s, peak ``max_memory_allocated``;
- ``overhead``: ``ssseg train``'s loop against the plain loop (``benchmarks/overhead.py``);
- ``photometric``: the batched ops on the device against per-image PIL (``photometric_throughput.py``);
- ``sliding_eval``: Cityscapes-size sliding-window evaluation, 1 and 8 windows per forward;
- ``ddp``: a 1-process NCCL DDP step with SyncBatchNorm and the flag all-reduce;
- ``largest_batch``: the largest iMAS VOC batch whose step fits in the GPU's memory.

Writes ``gpu_check.md`` (one table) and ``gpu_check.json`` into ``--out``. Without CUDA (and
without ``--quick``) it exits with status 2 and one line. ``--quick`` runs the same code at toy
sizes on the CPU (gloo for DDP; the fp16 and compile steps, whose trainer paths
``tests/core/test_precision.py`` covers, left out); ``tests/tools/test_gpu_check.py`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import socket
import statistics
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

PAPER = {  # name -> recipe; --quick runs the first iMAS and UniMatch ones with a ResNet-18
    "iMAS VOC (R101, 513)": "recipes/paper/imas_voc.yaml",
    "iMAS Cityscapes (R50, 769)": "recipes/paper/imas_cityscapes.yaml",
    "UniMatch VOC (R101, 513)": "recipes/paper/unimatch_voc_blended.yaml",
    "UniMatch Cityscapes (R50, 801)": "recipes/paper/unimatch_cityscapes.yaml",
}
NUMERICS = {
    "fp32": [], "bf16": ["run.precision=bf16"], "fp16 + scaler": ["run.precision=fp16"],
    "fp32 channels_last": ["run.channels_last=true"],
    "bf16 channels_last": ["run.precision=bf16", "run.channels_last=true"],
    "bf16 compile": ["run.precision=bf16", "run.compile=inductor"],
}
# --quick: the loop is the same for every option; the options' own trainer paths (fp16 and its
# scaler, compile) are tested on the CPU by tests/core/test_precision.py and cost minutes here
QUICK_PAPER = {"iMAS VOC (R101, 513)": ("fp32", "bf16 channels_last"), "UniMatch VOC (R101, 513)": ("fp32",)}


class OutOfTime(Exception):
    """A section ran past its budget."""


@contextlib.contextmanager
def budget(seconds: float):
    """Raise :class:`OutOfTime` in this (main) thread once ``seconds`` have passed."""
    def expire(*_):
        raise OutOfTime(f"ran past its {seconds:.0f} s budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Check:
    """The settings of one run (full on CUDA, or ``--quick`` on the CPU) and its result rows."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.device = torch.device("cpu" if quick else "cuda")
        self.rows: list[dict] = []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 1024 ** 3 if self.device.type == "cuda" else None

    def add(self, section: str, case: str, **figures) -> None:
        self.rows.append({"section": section, "case": case, **figures})

    def trainer(self, recipe: str, extra: list[str], batch: int | None = None):
        """A trainer of the paper recipe at its crop and per-GPU batch (or ``batch``) on the
        embedded data; with --quick an smp DeepLabV3+ ResNet-18 (the loop is the same for every
        model) at 32² with batch 2."""
        import attrs
        from paper_size import embedded_at
        from ssseg.engine.run import build_run
        from ssseg.engine.trainer import Trainer
        from ssseg.recipe.load import load_recipe
        from ssseg.recipe.schema import ModelConfig

        r = load_recipe(recipe)
        crop, batch = (32, batch or 2) if self.quick else (r.data.crop, batch or r.data.batch_labeled)
        base = embedded_at(crop, batch) + [f"run.device={self.device}", "eval.max_images=1"]
        r = load_recipe(recipe, base + extra)
        if self.quick:
            r = attrs.evolve(r, model=ModelConfig(encoder="resnet18", aux_head=r.model.aux_head))
        return Trainer(build_run(r))

    def time_steps(self, trainer, warmup: int, steps: int) -> list[float]:
        """Seconds of ``steps`` training steps after ``warmup`` untimed ones."""
        batches, times = trainer.batches(), []
        for i in range(warmup + steps):
            labeled, unlabeled = next(batches)
            self.sync()
            start = time.perf_counter()
            trainer.step(labeled, unlabeled)
            self.sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
        return times


class Outcomes:
    """A pytest plugin counting the outcomes of an in-process run."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.failed: list[str] = []

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.counts[report.outcome] = self.counts.get(report.outcome, 0) + 1
            if report.failed:
                self.failed.append(report.nodeid)


def cuda_tests(check: Check) -> None:
    """``pytest -m cuda`` in this process (torch is already imported here)."""
    import pytest

    threads, outcomes = torch.get_num_threads(), Outcomes()
    files = [HERE.parent / "tests" / ("core/test_cuda.py" if check.quick else "")]
    status = pytest.main(["-q", "-m", "cuda", "-p", "no:cacheprovider", *map(str, files)], plugins=[outcomes])
    torch.set_num_threads(threads)  # tests/conftest.py sets one thread
    check.add("cuda_tests", "pytest -m cuda", exit_status=int(status), **outcomes.counts, failed=outcomes.failed)
    if status not in (0, 5):
        raise RuntimeError(f"pytest -m cuda: {outcomes.counts}, failed: {', '.join(outcomes.failed)}")


def paper_steps(check: Check) -> None:
    """Option by option (compile, the slowest to start, last), every paper recipe."""
    for option, extra in NUMERICS.items():
        for name, recipe in PAPER.items():
            if check.quick and option not in QUICK_PAPER.get(name, ()):
                continue
            check.reset_peak()
            try:
                trainer = check.trainer(recipe, extra)
                images = trainer.run.recipe.data.batch_labeled + trainer.run.recipe.data.batch_unlabeled
                times = check.time_steps(trainer, warmup=("compile" in option) + (not check.quick),
                                         steps=1 if check.quick else 3)
            except OutOfTime:
                raise
            except Exception as err:  # one configuration failing leaves the others to run
                check.add("paper_steps", f"{name}, {option}", error=one_line(err))
                continue
            step = statistics.median(times)
            check.add("paper_steps", f"{name}, {option}", step_s=round(step, 4),
                      images_per_s=round(images / step, 2), peak_gib=rounded(check.peak_gib()))
            del trainer


def overhead(check: Check) -> None:
    import overhead as bench

    for method in ("mt_fixmatch", "imas"):
        toy = ["data.options={train: 200, val: 3}", "data.batch_labeled=2", "data.batch_unlabeled=2"]
        toy = toy if check.quick else []
        result = bench.compare(method, steps=1 if check.quick else 50, warmup=1 if check.quick else 5,
                               overrides=[f"run.device={check.device}"] + toy)
        for clock in ("wall", "cpu"):
            del result[f"{clock}_step_ratios"]
        check.add("overhead", method, **result)


def photometric(check: Check) -> None:
    import photometric_throughput as bench

    batch = 2 if check.quick else 8
    runs = [(check.device, [32] if check.quick else [513, 769], 1 if check.quick else 5)]
    if not check.quick:  # the CPU reference (PIL, float and uint8 paths) at 513² only
        runs.append((torch.device("cpu"), [513], 2))
    for device, sizes, repeats in runs:
        for size in sizes:
            for name, rate in bench.bench_size(size, batch, repeats, device).items():
                check.add("photometric", f"{device.type} {size}² batch {batch}: {name}", images_per_s=round(rate, 1))


def sliding_eval(check: Check) -> None:
    from eval_throughput import CITYSCAPES, DEEPLAB_OS16
    from ssseg.engine.evaluate import sliding_probs, window_starts
    from ssseg.models import build_model
    from ssseg.recipe.schema import ModelConfig

    (h, w), window, stride = ((32, 64), 32, 24) if check.quick else (
        CITYSCAPES["size"], CITYSCAPES["window"], CITYSCAPES["stride"])
    encoder = "resnet18" if check.quick else "resnet50"
    model = build_model(ModelConfig(encoder=encoder, options=DEEPLAB_OS16), CITYSCAPES["classes"])
    model = model.to(check.device).eval()
    windows = len(window_starts(h, window, stride)) * len(window_starts(w, window, stride))
    image = torch.rand(3, h, w, device=check.device)
    for batch in (1, 8):
        for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            times = []
            for _ in range(1 if check.quick else 4):
                check.sync()
                start = time.perf_counter()
                with torch.autocast(check.device.type, dtype=dtype, enabled=dtype is not None):
                    sliding_probs(model, image, window, stride, CITYSCAPES["classes"], batch=batch).argmax(0)
                check.sync()
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times[1:] or times)
            check.add("sliding_eval", f"{h}x{w}, {windows} windows, {batch} per forward, {precision}",
                      images_per_s=round(1 / seconds, 3), windows_per_s=round(windows / seconds, 2))


def ddp(check: Check) -> None:
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    from ssseg.engine.distributed import any_ranks
    from ssseg.models import build_model
    from ssseg.recipe.schema import ModelConfig

    cuda = check.device.type == "cuda"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    try:
        model = build_model(ModelConfig(encoder="resnet18" if check.quick else "resnet50"), 19)
        if cuda:  # SyncBatchNorm layers only run on GPU modules under DDP
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DistributedDataParallel(model.to(check.device), device_ids=[0] if cuda else None)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        size, batch = (32, 2) if check.quick else (513, 4)
        images = torch.rand(batch, 3, size, size, device=check.device)
        target = torch.randint(19, (batch, size, size), device=check.device)
        times = []
        for _ in range(2 if check.quick else 6):
            check.sync()
            start = time.perf_counter()
            loss = F.cross_entropy(model(images), target)
            flags = any_ranks(not bool(torch.isfinite(loss)), False, device=check.device)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            check.sync()
            times.append(time.perf_counter() - start)
        sync_bn = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        check.add("ddp", f"{dist.get_backend()} 1 process, {'R18' if check.quick else 'R50'} {size}² batch {batch}",
                  step_s=round(statistics.median(times[1:]), 4), sync_batchnorm_layers=sync_bn,
                  flags=list(flags), peak_gib=rounded(check.peak_gib()))
    finally:
        dist.destroy_process_group()


def largest_batch(check: Check) -> None:
    """Double the iMAS VOC batch until a step runs out of memory, then bisect."""
    recipe, cap = PAPER["iMAS VOC (R101, 513)"], (1 if check.quick else 256)

    def fits(b: int) -> bool:
        check.reset_peak()
        small_images = f"data.options={{size: 64, train: {2 * b}, val: 3}}"  # padded to the crop: same shapes
        try:
            trainer = check.trainer(recipe, [small_images], batch=b)
            check.time_steps(trainer, warmup=0, steps=1)
        except RuntimeError as err:  # torch.cuda.OutOfMemoryError, or cuDNN/cuBLAS failing to allocate
            if not any(sign in str(err) for sign in ("out of memory", "ALLOC")):
                raise
            check.add("largest_batch", f"iMAS VOC {b} + {b}", fits=False, error=one_line(err))
            return False
        check.add("largest_batch", f"iMAS VOC {b} + {b}", fits=True, peak_gib=rounded(check.peak_gib()))
        return True

    low, high = 0, 1
    while high <= cap and fits(high):
        low, high = high, high * 2
    high = min(high, cap + 1)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    check.add("largest_batch", "largest fitting batch (labeled = unlabeled)", batch=low, searched_up_to=cap)


SECTIONS = {  # name -> (function, budget in seconds on the GPU)
    "cuda_tests": (cuda_tests, 60), "paper_steps": (paper_steps, 160), "overhead": (overhead, 45),
    "photometric": (photometric, 40), "sliding_eval": (sliding_eval, 30), "ddp": (ddp, 25),
    "largest_batch": (largest_batch, 90),
}


def one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def table(rows: list[dict]) -> str:
    """One Markdown table: section, case and each row's figures."""
    lines = ["| section | case | figures |", "|---|---|---|"]
    for row in rows:
        figures = ", ".join(f"{k}: {v}" for k, v in row.items() if k not in ("section", "case"))
        lines.append(f"| {row['section']} | {row['case']} | {figures.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    p.add_argument("--quick", action="store_true", help="every section at toy sizes on the CPU")
    p.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS))
    args = p.parse_args()
    if not args.quick and not torch.cuda.is_available():
        print("gpu_check: needs a CUDA device and found none (use --quick for the CPU run of every section)",
              file=sys.stderr)
        return 2
    check = Check(args.quick)
    torch.set_num_threads(1 if args.quick else torch.get_num_threads())
    started = time.perf_counter()
    status, seconds_taken = {}, {}
    for name in args.sections:
        function, seconds = SECTIONS[name]
        start = time.perf_counter()
        try:
            with budget(300 if args.quick else seconds):  # --quick: only a guard on a loaded CPU
                function(check)
            status[name] = "ok"
        except Exception as err:  # the section's error is recorded and the next one runs
            status[name] = one_line(err)
            check.add(name, "error", error=one_line(err), where=traceback.format_exc().splitlines()[-3].strip())
        seconds_taken[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: {status[name]} ({seconds_taken[name]} s)", flush=True)
    machine = torch.cuda.get_device_name() if check.device.type == "cuda" else "CPU (--quick)"
    report = {"machine": machine, "torch": torch.__version__, "quick": args.quick, "sections": status,
              "section_s": seconds_taken, "wall_s": round(time.perf_counter() - started, 1), "rows": check.rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    (args.out / "gpu_check.md").write_text(f"{machine}, torch {torch.__version__}, {report['wall_s']} s\n\n"
                                           + table(check.rows))
    print(f"wrote {args.out / 'gpu_check.md'} and gpu_check.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
