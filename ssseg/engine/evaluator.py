"""The evaluator: the student and every ``eval_models`` answer on the validation set, for
training's evaluations, ``ssseg eval`` and ``predict``, without a trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ssseg.engine.checkpoint import load_weights
from ssseg.engine.evaluate import evaluate
from ssseg.engine.precision import autocast
from ssseg.engine.run import Run, build_run
from ssseg.engine.types import EvalModel
from ssseg.errors import UserError
from ssseg.plugin_manager import PluginSet
from ssseg.recipe.schema import Recipe


class Evaluator:
    """Evaluates ``run``'s models (the ``evaluate`` phase: ``eval_models``, then ``after_eval``)."""

    def __init__(self, run: Run, plugins: PluginSet):
        self.run, self.plugins = run, plugins

    def models(self) -> tuple[dict[str, nn.Module], str]:
        """The modules the run evaluates by name (the student first) and the headline's name,
        the model ``best.pt`` follows (an answer marked ``EvalModel(headline=True)``, else the
        student)."""
        answers = self.plugins.call("eval_models", run=self.run)
        if "student" in answers:
            raise UserError(f"plugin(s) {', '.join(self.plugins.answering('eval_models'))} answer "
                            "eval_models with the name 'student', which is the core's")
        headlines = [n for n, m in answers.items() if isinstance(m, EvalModel) and m.headline]
        if len(headlines) > 1:
            raise UserError(f"eval_models marks several headline models ({', '.join(headlines)}); "
                            "best.pt follows one: mark only one EvalModel(headline=True)")
        models = {"student": self.run.student} | {n: m.module if isinstance(m, EvalModel) else m
                                                   for n, m in answers.items()}
        return models, headlines[0] if headlines else "student"

    def evaluate(self, iteration: int | None = None) -> dict[str, Any]:
        """Evaluate every model on the val set; the record holds ``iteration`` (default: the
        run's), the wall time and each model's metrics under ``<model>/``."""
        return self._evaluate(self.models()[0], iteration)

    def _evaluate(self, models: dict[str, nn.Module], iteration: int | None) -> dict[str, Any]:
        run, r = self.run, self.run.recipe
        metrics: dict[str, Any] = {"iteration": run.iteration if iteration is None else iteration,
                                   "event": "eval", "wall_s": round(run.state.wall_s, 3)}
        for name, model in models.items():
            with autocast(run.device, r.run.precision):
                result = evaluate(model, run.data.val, r.eval, crop=r.data.crop,
                                  num_classes=run.data.num_classes, ignore_index=run.data.ignore_index,
                                  device=run.device, class_names=run.data.class_names, desc=f"eval {name}")
            metrics |= {f"{name}/{k}": v for k, v in result.items()}
        self.plugins.call("after_eval", run=run, metrics=metrics, models=models)
        return metrics

    def evaluate_and_record(self) -> tuple[dict[str, Any], bool]:
        """Evaluate and record it in the training state: the record (with each model's best so
        far) and whether the headline model reached a new best."""
        models, headline = self.models()
        metrics = self._evaluate(models, None)
        return metrics, self.run.state.record_eval(metrics, headline)


def load_model(recipe: Recipe, checkpoint: Path, model: str = "student",
               needs: str = "classes") -> tuple[Run, nn.Module]:
    """Build the recipe's run (with the data ``needs`` names: none by default, ``val`` for the
    val set), load the checkpoint's weights, and return the run with the module ``model``
    (``student`` or a name from ``eval_models``, e.g. ``teacher``) in eval mode."""
    built = build_run(recipe, needs=needs)
    run = built.run
    load_weights(run, checkpoint)
    models, _ = Evaluator(run, built.plugins).models()
    if model not in models:
        raise UserError(f"--model {model}: this recipe evaluates {', '.join(models)}")
    return run, models[model].eval()
