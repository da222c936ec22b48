"""Command-line subcommands ``ssseg suite run``, ``ssseg suite status``, ``ssseg suite report``
and ``ssseg predict``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ssseg.cli_options import add_overrides

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


def cmd_suite_run(args) -> int:
    """Run a suite's unfinished jobs, then write its report; 1 if any run failed."""
    from ssseg.suite.launchers import LocalLauncher, SubmititLauncher, sbatch_script, slurm_executor
    from ssseg.suite.report import write_report
    from ssseg.suite.runner import job_state, run_suite
    from ssseg.suite.spec import load_suite

    suite = load_suite(args.suite, args.override)
    out = args.out or Path("runs") / "suites" / args.suite.stem
    name = f"ssseg-{args.suite.stem}"
    options = _slurm_options(suite, args) if args.launcher == "slurm" else None
    if args.dry_run:
        for job in suite.jobs:
            print(f"{job.name}: {job_state(job, out / job.name)} ({job.recipe.optim.iters} iterations)")
        if options is not None:
            print(f"\n# the sbatch script for {len(suite.jobs)} runs\n"
                  + sbatch_script(options, out, name, len(suite.jobs)))
        return 0
    launcher = (SubmititLauncher(slurm_executor(options, out, name), options) if options is not None
                else LocalLauncher(args.jobs))
    axis = f" × {len(suite.spec.axis.values)} {suite.spec.axis.title}" if suite.spec.axis else ""
    print(f"{len(suite.jobs)} runs ({len(suite.spec.variants)} variants{axis} × {len(suite.spec.seeds)} "
          f"seeds) into {out}, launcher {args.launcher}", flush=True)
    try:
        failures = run_suite(suite, out, launcher, say=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        if options is not None:
            print(f"\nstopped watching; the SLURM jobs keep running: `ssseg suite status {out}`, "
                  f"then `ssseg suite report {out}`")
        raise
    print(f"report: {write_report(out)}")
    if failures:
        print(f"{len(failures)} of {len(suite.jobs)} runs failed:\n" + "\n".join(failures))
    return 1 if failures else 0


def cmd_suite_status(args) -> int:
    """Print each run's state from the suite's output folder alone (no scheduler asked)."""
    from collections import Counter

    from ssseg.suite.folder import read_manifest, run_status

    states = Counter()
    for name in read_manifest(args.dir)["runs"]:
        state, detail = run_status(args.dir / name)
        states[state] += 1
        print(f"{name}: {state}" + (f" ({detail})" if detail else ""))
    print(", ".join(f"{n} {s}" for s, n in states.items()))
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
    """Add ``suite run``, ``suite status``, ``suite report`` and ``predict`` to the ``ssseg``
    subcommands."""
    suite = subparsers.add_parser("suite", help="run and report comparison/ablation suites")
    sub = suite.add_subparsers(dest="suite_command", required=True)
    p = sub.add_parser("run", help="train every variant × seed of a suite (resumable), then report")
    p.add_argument("suite", type=Path, help="suite YAML file")
    p.add_argument("--out", type=Path, help="output folder (default: runs/suites/<suite name>)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs and their state (and the sbatch script with --launcher slurm)")
    _launcher_args(p)
    add_overrides(p, "in every run")
    p.set_defaults(func=cmd_suite_run)
    p = sub.add_parser("status", help="each run's state (queued, running, done, failed, ...) from the folder")
    p.add_argument("dir", type=Path, help="the suite's output folder")
    p.set_defaults(func=cmd_suite_status)
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
