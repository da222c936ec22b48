"""The ``ssseg`` command line. User errors print one message and exit 2, without a traceback;
Ctrl-C exits 130 without one, also during start-up (heavy modules are imported inside
:func:`main`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

from ssseg import __version__
from ssseg.cli_options import add_overrides
from ssseg.console import Console
from ssseg.errors import Diverged, UserError
from ssseg.signals import handling, import_libraries


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", type=Path, help="recipe YAML file")
    add_overrides(p)


def _load(args):
    from ssseg.recipe.load import load_recipe

    return load_recipe(args.recipe, args.override)


def cmd_train(args) -> int:
    """Train a recipe; writes recipe.yaml, metrics.jsonl, last.pt and best.pt into the output
    folder, checked before anything is built. SIGINT/SIGTERM save a checkpoint after the current
    step and exit. ``--resume`` continues with the folder's own recipe.yaml. ``--tensorboard``
    adds the ``tensorboard`` plugin (event files in the folder's ``tensorboard/``)."""
    from ssseg.engine.run_folder import RunFolder

    folder = RunFolder(args.out or Path("runs") / args.recipe.stem)
    with folder.writing("ssseg train" + (" --resume" if args.resume else "")):
        return _train(args, folder)


def _train(args, folder) -> int:
    """``ssseg train`` while holding the run folder's writer lock."""
    overrides = args.override + (["plugins.tensorboard={}"] if args.tensorboard else [])
    recipe = folder.open(args.recipe, overrides, args.resume)
    import_libraries()

    from ssseg.engine.distributed import init_from_env, leave

    init_from_env()
    try:
        return _train_in_group(args, folder, recipe)
    finally:
        leave()


def _train_in_group(args, folder, recipe) -> int:
    """Build and train the run (every rank of a torchrun), resuming with ``--resume``; a recipe
    with ``stages`` trains them in order (:mod:`ssseg.stages.runner`)."""
    from ssseg.engine import checkpoint
    from ssseg.engine.run import build_run

    if recipe.stages:
        from ssseg.stages.runner import train_stages

        if os.environ.get("RANK", "0") == "0":
            folder.begin(recipe, 0)
        return train_stages(recipe, folder, train_built)
    built = build_run(recipe, folder.path)
    checkpointer = checkpoint.Checkpointer(folder.path, recipe.run.keep_checkpoints)
    return train_built(built, folder, checkpointer, args.resume, folder.how_to_continue)


def train_built(built, folder, checkpointer, resume: bool, how_to_continue) -> int:
    """Train a built run into ``folder`` (continuing from its ``last.pt`` with ``resume``); the
    exit code. ``how_to_continue()``: what to tell the user when a signal stops it."""
    from ssseg.engine import checkpoint
    from ssseg.engine.trainer import Stopped, Trainer

    run, recipe = built.run, built.run.recipe
    console = Console()
    trainer = Trainer(built, progress=console.progress, checkpointer=checkpointer, on_eval=console.evaluation)
    if resume:
        checkpoint.restore(built, folder.last)
        _say(run, f"resumed from {folder.last} at iteration {run.iteration}")
    if run.is_main:
        folder.begin(recipe, run.iteration)
    try:
        with stop_on_signals(trainer):
            trainer.train()
    except Stopped as stop:
        _say(run, f"\nstopped by signal {stop.signum} at iteration {stop.iteration}; {how_to_continue()}")
        return 128 + (stop.signum or 0)
    except KeyboardInterrupt:
        _say(run, f"\ninterrupted at iteration {run.iteration}; {how_to_continue()}")
        return 128 + signal.SIGINT
    except Diverged as err:
        raise UserError(f"{err}; {folder.how_to_restart(recipe.optim.lr)}") from None
    if run.is_main:
        print(f"results in {folder.path}")
    return 0


def _say(run, message: str) -> None:
    if run.is_main:
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def stop_on_signals(trainer):
    """While training, SIGINT and SIGTERM ask the trainer to save and stop after this step
    (a second SIGINT interrupts at once)."""
    def request(signum, _frame):
        if trainer.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_signal = signum

    with handling(request):
        yield


def cmd_eval(args) -> int:
    """Evaluate a checkpoint with the recipe's evaluation settings."""
    from ssseg.engine import checkpoint
    from ssseg.engine.evaluator import Evaluator
    from ssseg.engine.run import build_run

    built = build_run(_load(args), needs="val")
    iteration = checkpoint.load_weights(built.run, args.checkpoint)
    metrics = Evaluator(built.run, built.plugins).evaluate(iteration)
    Console().evaluation(metrics)
    return 0


def cmd_export(args) -> int:
    """Export a checkpoint's model to TorchScript or ONNX with a JSON sidecar, checked against it."""
    from ssseg.export import describe, export_model, format_of

    fmt = format_of(args.out, args.format)
    print(describe(export_model(_load(args), args.checkpoint, args.out, fmt, args.model)))
    return 0


def cmd_plugins(args) -> int:
    """List discovered plugins, their distribution and the hooks they answer."""
    from ssseg.compat import implemented_hooks
    from ssseg.hookspecs import HOOK_KINDS
    from ssseg.plugin_manager import discover

    for name, source in sorted(discover().items()):
        try:
            cls = source.load()
            hooks = [h for h in HOOK_KINDS if h in implemented_hooks(cls)]
            print(f"{name:24s} {source.distribution:28s} {', '.join(hooks)}")
        except Exception as err:  # noqa: BLE001 - a broken third-party plugin must not hide the rest
            print(f"{name:24s} {source.distribution:28s} cannot be imported: {err}")
    return 0


def cmd_explain(args) -> int:
    """Print the recipe check's verdict, then for each phase and hook of the step table, in call
    order, which plugin answers it, then the resolved recipe."""
    from ssseg.plugin_manager import check_recipe
    from ssseg.recipe.load import dump_recipe

    recipe = _load(args)
    plugins = check_recipe(recipe)
    print(f"recipe check: passed (pseudo-label source: {plugins.pseudo_label_source})\n")
    print(f"{'phase':10s} {'hook':24s} {'kind':13s} answered by")
    for phase, hook, kind, names in plugins.table():
        print(f"{phase:10s} {hook:24s} {kind:13s} {', '.join(names) or '(core default)'}")
    print("\n# resolved recipe\n" + dump_recipe(recipe))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ssseg`` command."""
    from ssseg.data.cli import register as register_data
    from ssseg.scaffold import register as register_scaffold
    from ssseg.suite.cli import register as register_suite

    parser = argparse.ArgumentParser(prog="ssseg", description="Semi-supervised semantic segmentation")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a recipe")
    _recipe_args(p)
    p.add_argument("--out", type=Path, help="output folder (default: runs/<recipe name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the folder's last.pt with the folder's recipe.yaml "
                        "(-o may change optim.iters, optim.lr, optim.clip_grad, eval.* and run.*)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log to TensorBoard in <out>/tensorboard (the tensorboard plugin; "
                        "needs pip install 'ssseg[tensorboard]')")
    p.set_defaults(func=cmd_train, imports_torch=False)
    p = sub.add_parser("eval", help="evaluate a checkpoint")
    _recipe_args(p)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("export", help="export a checkpoint's model to TorchScript or ONNX")
    _recipe_args(p)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="the model file (e.g. model.pt, model.onnx); "
                                                          "the metadata goes to <out>.json")
    p.add_argument("--format", choices=("torchscript", "onnx"),
                   help="default: onnx for an --out ending in .onnx, else torchscript")
    p.add_argument("--model", default="student", help="student (default) or teacher")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("plugins", help="list installed plugins")
    p.set_defaults(func=cmd_plugins)
    p = sub.add_parser("explain", help="which plugin answers each hook of a recipe")
    _recipe_args(p)
    p.set_defaults(func=cmd_explain)
    register_data(sub)
    register_suite(sub)
    register_scaffold(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ssseg`` console script."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "imports_torch", True):  # train imports them itself, after its folder checks
            import_libraries()
        return args.func(args)
    except UserError as err:
        print(f"ssseg: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nssseg: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
