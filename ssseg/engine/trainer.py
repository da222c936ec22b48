"""The training loop: batches from the data feed through the step runner, with the log, evaluation
and checkpoint cadence and stop signals around each step. Like detectron2's train loop it is only
before / step / after; the step's phases belong to the step runner (:mod:`ssseg.engine.step`),
evaluation to the evaluator, checkpoints to the checkpointer, logs to the metrics log."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from torch import Tensor

from ssseg.engine.checkpoint import Checkpointer
from ssseg.engine.ddp import wrap
from ssseg.engine.evaluator import Evaluator
from ssseg.engine.feed import DataFeed
from ssseg.engine.metrics_log import MetricsLog, Progress
from ssseg.engine.precision import compiled
from ssseg.engine.run import BuiltRun
from ssseg.engine.step import NonFiniteLoss, StepResult, StepRunner
from ssseg.engine.types import UnlabeledBatch

__all__ = ["NonFiniteLoss", "Stopped", "Trainer"]


class Trainer:
    """Trains a built run: owns the data feed, the cadence (log every ``run.log_every``, evaluate
    every ``eval.every`` iterations or ``eval.every_epochs`` epochs and at the end, checkpoint
    every ``run.checkpoint_every``, at the end, at a new best and on a stop signal) and the stop
    signal (``stop_signal``, set by the CLI's signal handler, honoured between steps).
    ``progress(it, total, logs, eta_s)`` is told of each logged step and ``on_eval(record)`` of
    each evaluation, on rank 0."""

    def __init__(self, built: BuiltRun, progress: Progress | None = None,
                 checkpointer: Checkpointer | None = None,
                 on_eval: Callable[[dict[str, Any]], None] | None = None):
        run = self.run = built.run
        self.plugins = built.plugins
        self.feed = DataFeed(run)
        model = compiled(wrap(run.student, run.device, run.world_size), run.recipe.run.compile)
        modules = {name: wrap(m, run.device, run.world_size) for name, m in run.modules.items()}
        self.runner = StepRunner(run, built.plugins, model, modules, self.feed.iters_per_epoch)
        self.evaluator = Evaluator(run, built.plugins)
        self.evaluator.models()  # the evaluated models' names and headline are checked before training
        self.log = MetricsLog(run, progress)
        self.checkpointer = checkpointer
        self.on_eval = on_eval  # told of every evaluation record on rank 0 (the CLI prints it)
        r = run.recipe
        self.eval_every = r.eval.every if r.eval.every_epochs is None \
            else r.eval.every_epochs * max(self.feed.iters_per_epoch, 1)
        self.stop_signal: int | None = None

    def batches(self) -> Iterator[tuple[dict[str, Tensor], UnlabeledBatch | None]]:
        """The data feed's batches from the current iteration on."""
        return self.feed.batches()

    def step(self, labeled: dict[str, Tensor], unlabeled: UnlabeledBatch | None,
             until: str | None = None) -> StepResult:
        """One step (or its phases up to ``until``) through the step runner."""
        return self.runner.step(labeled, unlabeled, until, stop_requested=self.stop_signal is not None)

    def evaluate(self) -> dict[str, Any]:
        """Evaluate, record it in the training state and ``metrics.jsonl``; the record."""
        metrics, _ = self.evaluate_and_record()
        return metrics

    def evaluate_and_record(self) -> tuple[dict[str, Any], bool]:
        """Evaluate and record; the record and whether the headline model reached a new best."""
        metrics, new_best = self.evaluator.evaluate_and_record()
        self.log.write(metrics)
        if self.on_eval is not None and self.run.is_main:
            self.on_eval(metrics)
        return metrics, new_best

    def train(self) -> dict[str, Any]:
        """Train from ``run.iteration`` to ``optim.iters`` (raises :class:`Stopped` after saving
        when a stop signal arrives). Returns the last evaluation record."""
        run, r, state = self.run, self.run.recipe, self.run.state
        run.student.train()
        started, wall_at_start = time.perf_counter(), state.wall_s
        for labeled, unlabeled in self.batches():
            if state.iteration >= r.optim.iters:
                break
            result = self.step(labeled, unlabeled)
            state.timed(wall_at_start + time.perf_counter() - started)
            self.log.after_step(result.logs)
            it, last = state.iteration, state.iteration == r.optim.iters
            new_best = (it % self.eval_every == 0 or last) and self.evaluate_and_record()[1]
            if self.checkpointer is not None and (it % r.run.checkpoint_every == 0 or last or new_best
                                                  or result.stop or it in self.checkpointer.snapshots):
                self.checkpointer.save(run, self.plugins, best=new_best)
            if result.stop:
                raise Stopped(it, self.stop_signal)
        if state.last_eval.get("iteration") != state.iteration:
            self.evaluate_and_record()
        return state.last_eval


class Stopped(Exception):
    """Training stopped between steps on a signal, after saving a checkpoint."""

    def __init__(self, iteration: int, signum: int | None):
        super().__init__(f"stopped at iteration {iteration}")
        self.iteration, self.signum = iteration, signum
