"""Command-line subcommands ``ssseg suite run``, ``ssseg suite status``, ``ssseg suite cancel``,
``ssseg suite report`` and ``ssseg predict``."""

from __future__ import annotations

import argparse
import contextlib
import shlex
from functools import partial
from pathlib import Path
from typing import Iterator

from ssseg.cli_options import add_overrides
from ssseg.errors import UserError
from ssseg.suite.results import counted

CANCEL_WAIT_S = 300  # how long `ssseg suite cancel` waits for a local suite run's runs to save and stop

# --launcher slurm flags -> keys of the suite's launcher: section
SLURM_FLAGS = {"partition": str, "account": str, "gpus_per_run": int, "cpus_per_run": int,
               "nodes_per_run": int, "time_min": int}


def _slurm_options(suite, args):
    """The suite's ``launcher:`` section with the command line's flags over it."""
    import attrs

    from ssseg.recipe.load import parse_override
    from ssseg.recipe.structure import ConfigError, structure
    from ssseg.suite.spec import SlurmOptions

    data = attrs.asdict(suite.spec.launcher)
    data |= {k: getattr(args, k) for k in SLURM_FLAGS if getattr(args, k) is not None}
    for text in args.sbatch:
        data["sbatch"] |= {k: v if isinstance(v, bool) else str(v) for k, v in parse_override(text).items()}
    try:
        return structure(SlurmOptions, data, "launcher")
    except ConfigError as err:
        raise err.with_source(f"{args.suite} with the command line's flags") from None


def _seeds(text: str | None) -> list[int] | None:
    """``--seeds 0,1`` as ``[0, 1]``."""
    if text is None:
        return None
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise UserError(f"--seeds {text}: expected whole numbers separated by commas, e.g. --seeds 0 "
                        "or --seeds 0,1,2") from None


def _dry_run(suite, out: Path, args, options) -> int:
    """List each run, its state and the ``ssseg train`` line it would run; under SLURM, which
    array task runs it and the sbatch script."""
    from ssseg.suite.folder import asked_slurm
    from ssseg.suite.launchers import LocalLauncher, sbatch_script, slurm_train_job
    from ssseg.suite.runner import job_state, plan_runs

    jobs, note = asked_slurm(out / job.name for job in suite.jobs)
    if note:
        print(note)
    plan = plan_runs(suite, out, jobs, args.retry_failed)
    tasks = {job.name: task for task, job in enumerate(plan.train)}
    train_job = LocalLauncher(args.jobs).train_job if options is None else partial(slurm_train_job, options)
    for job in suite.jobs:
        print(f"{job.name}: {job_state(job, out / job.name)} ({job.recipe.optim.iters} iterations)")
        if job.name in tasks:
            train = train_job(out / job.name)
            first = "<the job's first node>" if train.nodes > 1 else None
            task = f"[array task {tasks[job.name]}] " if options is not None and len(tasks) > 1 else ""
            print(f"    {task}$ {shlex.join(train.command(master=first))}")
        else:
            print(f"    {(plan.skipped | plan.active)[job.name]}")
    if options is not None and plan.train:
        print("\n# each job runs its run's `ssseg train` line above through submitit (which requeues it "
              "on preemption)" + (" on each node, with its --node_rank" if options.nodes_per_run > 1 else "")
              + f"\n# the sbatch script for {counted(len(plan.train), 'run')}\n"
              + sbatch_script(options, out, f"ssseg-{args.suite.stem}", len(plan.train)))
    return 0


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Hold ``out``'s suite lock: one ``ssseg suite run`` writes a suite folder at a time. A
    folder that cannot be written is a clear :class:`UserError`."""
    from ssseg import run_lock
    from ssseg.suite.folder import SUITE_LOCK

    with run_lock.writing(out, SUITE_LOCK, "ssseg suite run",
                          advice=f"wait for it to end, or stop it with `ssseg suite cancel {out}`"):
        yield


def cmd_suite_run(args) -> int:
    """Run a suite's unfinished jobs, then write its report; 1 if a run is not done at the end."""
    from ssseg.suite.launchers import LocalLauncher, Stopped, SubmititLauncher, slurm_executor, stop_on_signals
    from ssseg.suite.report import write_report
    from ssseg.suite.runner import run_suite
    from ssseg.suite.spec import load_suite

    suite = load_suite(args.suite, args.override, _seeds(args.seeds))
    out = args.out or Path("runs") / "suites" / args.suite.stem
    options = _slurm_options(suite, args) if args.launcher == "slurm" else None
    if args.dry_run:
        return _dry_run(suite, out, args, options)
    launcher = (SubmititLauncher(slurm_executor(options, out, f"ssseg-{args.suite.stem}"), options)
                if options is not None else LocalLauncher(args.jobs))
    spec = suite.spec
    axis = f" × {counted(len(spec.axis.values), 'value')} of {spec.axis.title}" if spec.axis else ""
    with _writing(out):
        print(f"{counted(len(suite.jobs), 'run')} ({counted(len(spec.variants), 'variant')}{axis} × "
              f"{counted(len(spec.seeds), 'seed')}) into {out}, launcher {args.launcher}", flush=True)
        try:
            with stop_on_signals():
                unfinished = run_suite(suite, out, launcher, lambda line: print(line, flush=True),
                                       args.retry_failed)
        except Stopped as stop:
            print(f"\nstopped by {stop}: " + (
                f"the SLURM jobs keep running; `ssseg suite status {out}` shows them, the same `ssseg "
                f"suite run` follows them again, `ssseg suite cancel {out}` cancels them"
                if options is not None else
                f"the running runs saved a checkpoint and stopped; the same `ssseg suite run` resumes "
                f"them, `ssseg suite report {out}` reports what finished"), flush=True)
            return 128 + stop.signum
        if unfinished:
            print(f"{len(unfinished)} of {counted(len(suite.jobs), 'run')} not done:\n" + "\n".join(unfinished))
        print(f"report: {write_report(out)}")
    return 1 if unfinished else 0


def cmd_suite_status(args) -> int:
    """Print each run's state from the suite's output folder and, for runs under SLURM, one
    ``sacct`` call."""
    from collections import Counter

    from ssseg.suite.folder import asked_slurm, read_manifest, run_status

    names = read_manifest(args.dir)["runs"]
    jobs, note = asked_slurm(args.dir / name for name in names)
    states = Counter()
    for name in names:
        state, detail = run_status(args.dir / name, jobs)
        states[state] += 1
        print(f"{name}: {state}" + (f" ({detail})" if detail else ""))
    print(", ".join(f"{n} {s}" for s, n in states.items()))
    if note:
        print(note)
    return 0


def cmd_suite_cancel(args) -> int:
    """Cancel a suite's SLURM jobs that are queued or running (one ``scancel``), and stop the
    ``ssseg suite run`` that writes the folder (SIGTERM: its running runs save and stop)."""
    import os
    import signal
    import socket
    import time

    from ssseg import run_lock
    from ssseg.suite import slurm
    from ssseg.suite.folder import SUITE_LOCK, read_manifest, slurm_states

    run_dirs = [args.dir / name for name in read_manifest(args.dir)["runs"]]
    states = slurm_states(run_dirs)
    ids = sorted(job_id for job_id, state in states.items() if state in slurm.ACTIVE)
    if ids:
        slurm.cancel(ids)
        print(f"cancelled {counted(len(ids), 'SLURM job')}: {', '.join(ids)} (their runs save a checkpoint "
              "if they were training; `ssseg suite run` resumes them)")
    holder = run_lock.read_holder(args.dir / SUITE_LOCK)
    if holder is not None and holder.is_running():
        if holder.host != socket.gethostname():
            print(f"{holder.describe()} writes {args.dir} from another host: stop it there (Ctrl-C)")
            return 1
        try:
            os.kill(holder.pid, signal.SIGTERM)
        except PermissionError:
            raise UserError(f"not allowed to stop {holder.describe()}: another user's process") from None
        print(f"stopping {holder.describe()}: its running runs save a checkpoint and stop", flush=True)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while holder.is_running():
            if time.monotonic() > deadline:
                print(f"{holder.describe()} is still stopping after {CANCEL_WAIT_S} s")
                return 1
            time.sleep(0.2)
        print("stopped; `ssseg suite status` shows the runs' states")
    elif not ids:
        print(f"nothing to cancel in {args.dir}: no run is queued or running")
    return 0


def cmd_suite_report(args) -> int:
    """Write report.md, report.csv and the figures of a suite output folder."""
    from ssseg.suite.report import write_report

    print(f"report: {write_report(args.dir, args.predictions, args.into)}")
    return 0


def cmd_predict(args) -> int:
    """Write colour-coded masks and overlays of a checkpoint's predictions on image files."""
    from ssseg.recipe.load import load_recipe
    from ssseg.suite.predict import predict_files

    written = predict_files(load_recipe(args.recipe, args.override), args.checkpoint, args.images,
                            args.out, args.model)
    print(f"wrote {len(written)} files into {args.out}")
    return 0


def _launcher_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local: subprocesses here (default); slurm: one SLURM job per run (submitit)")
    p.add_argument("--jobs", type=int, default=1, help="local: runs at a time (default 1)")
    slurm = p.add_argument_group("--launcher slurm (over the suite's launcher: section)")
    for key, kind in SLURM_FLAGS.items():
        slurm.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, metavar=key.split("_")[0].upper())
    slurm.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                       help="an extra sbatch option, e.g. --sbatch qos=high (repeatable)")


def register(subparsers) -> None:
    """Add ``suite run``, ``suite status``, ``suite cancel``, ``suite report`` and ``predict`` to
    the ``ssseg`` subcommands."""
    suite = subparsers.add_parser("suite", help="run and report comparison/ablation suites")
    sub = suite.add_subparsers(dest="suite_command", required=True)
    p = sub.add_parser("run", help="train every variant × seed of a suite (resumable), then report")
    p.add_argument("suite", type=Path, help="suite YAML file")
    p.add_argument("--out", type=Path, help="output folder (default: runs/suites/<suite name>)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs, their state and the `ssseg train` line each would run (and the "
                        "sbatch script with --launcher slurm)")
    p.add_argument("--seeds", metavar="K[,K...]",
                   help="train these seeds instead of the suite's, e.g. --seeds 0 for a quick pass")
    p.add_argument("--retry-failed", action="store_true",
                   help="train the runs that failed before again (by default they are reported, not retried)")
    _launcher_args(p)
    add_overrides(p, "in every run (not the seed or the suite's axis key)")
    p.set_defaults(func=cmd_suite_run)
    p = sub.add_parser("status", help="each run's state (queued, running, done, failed, ...) from the folder "
                                      "(and one sacct call under SLURM)")
    p.add_argument("dir", type=Path, help="the suite's output folder")
    p.set_defaults(func=cmd_suite_status, imports_torch=False)
    p = sub.add_parser("cancel", help="cancel the suite's queued and running SLURM jobs (scancel) and stop "
                                      "the `ssseg suite run` writing the folder")
    p.add_argument("dir", type=Path, help="the suite's output folder")
    p.set_defaults(func=cmd_suite_cancel, imports_torch=False)
    p = sub.add_parser("report", help="write report.md, report.csv and figures of a suite folder")
    p.add_argument("dir", type=Path, help="the suite's output folder")
    p.add_argument("--predictions", type=int, default=4, metavar="N",
                   help="validation images in the prediction grid (0: no grid)")
    p.add_argument("--into", type=Path, help="write the report into this folder (default: DIR)")
    p.set_defaults(func=cmd_suite_report)
    p = subparsers.add_parser("predict", help="colour-coded masks and overlays of a checkpoint's predictions")
    p.add_argument("recipe", type=Path, help="recipe YAML file (e.g. a run's recipe.yaml)")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", default="student", help="student (default) or teacher")
    add_overrides(p)
    p.set_defaults(func=cmd_predict)
