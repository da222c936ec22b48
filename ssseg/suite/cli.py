"""Command-line subcommands ``ssseg suite run``, ``ssseg suite report`` and ``ssseg predict``."""

from __future__ import annotations

from pathlib import Path

from ssseg.cli_options import add_overrides


def cmd_suite_run(args) -> int:
    """Run a suite's unfinished jobs, then write its report; 1 if any run failed."""
    from ssseg.errors import UserError
    from ssseg.suite.report import write_report
    from ssseg.suite.runner import job_state, run_suite
    from ssseg.suite.spec import load_suite

    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    suite = load_suite(args.suite, args.override)
    out = args.out or Path("runs") / "suites" / args.suite.stem
    if args.dry_run:
        for job in suite.jobs:
            print(f"{job.name}: {job_state(job, out / job.name)} ({job.recipe.optim.iters} iterations)")
        return 0
    print(f"{len(suite.jobs)} runs ({len(suite.spec.variants)} variants × {len(suite.spec.seeds)} "
          f"seeds) into {out}", flush=True)
    failures = run_suite(suite, out, args.jobs, say=lambda line: print(line, flush=True))
    print(f"report: {write_report(out)}")
    if failures:
        print(f"{len(failures)} of {len(suite.jobs)} runs failed:\n" + "\n".join(failures))
    return 1 if failures else 0


def cmd_suite_report(args) -> int:
    """Write report.md, report.csv and the figures of a suite output folder."""
    from ssseg.suite.report import write_report

    print(f"report: {write_report(args.dir, args.predictions)}")
    return 0


def cmd_predict(args) -> int:
    """Write colour-coded masks and overlays of a checkpoint's predictions on image files."""
    from ssseg.recipe.load import load_recipe
    from ssseg.suite.predict import predict_files

    written = predict_files(load_recipe(args.recipe, args.override), args.checkpoint, args.images,
                            args.out, args.model)
    print(f"wrote {len(written)} files into {args.out}")
    return 0


def register(subparsers) -> None:
    """Add ``suite run``, ``suite report`` and ``predict`` to the ``ssseg`` subcommands."""
    suite = subparsers.add_parser("suite", help="run and report comparison/ablation suites")
    sub = suite.add_subparsers(dest="suite_command", required=True)
    p = sub.add_parser("run", help="train every variant × seed of a suite (resumable), then report")
    p.add_argument("suite", type=Path, help="suite YAML file")
    p.add_argument("--out", type=Path, help="output folder (default: runs/suites/<suite name>)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state, train nothing")
    add_overrides(p, "in every run")
    p.set_defaults(func=cmd_suite_run)
    p = sub.add_parser("report", help="write report.md, report.csv and figures of a suite folder")
    p.add_argument("dir", type=Path, help="the suite's output folder")
    p.add_argument("--predictions", type=int, default=4, metavar="N",
                   help="validation images in the prediction grid (0: no grid)")
    p.set_defaults(func=cmd_suite_report)
    p = subparsers.add_parser("predict", help="colour-coded masks and overlays of a checkpoint's predictions")
    p.add_argument("recipe", type=Path, help="recipe YAML file (e.g. a run's recipe.yaml)")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", default="student", help="student (default) or teacher")
    add_overrides(p)
    p.set_defaults(func=cmd_predict)
