"""The training state of a run besides its weights and optimiser: the iteration, the random
generators, the gradient scaler, wall time, skipped steps and the evaluations so far. One object
owns it and is written only through its own methods (the step runner advances it, the loop
times it, the evaluator records evaluations, a checkpoint restores it); checkpoints hold its
``state_dict()``."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from ssseg.engine.precision import grad_scaler


@attrs.define(eq=False)
class TrainingState:
    """Where a run is. ``iteration``: steps taken (skipped steps included). ``generator``: this
    rank's random choices; ``shared_generator``: seeded alike on every rank. ``scaler``: the fp16
    gradient scaler (a no-op otherwise). ``wall_s``: training wall time over all sessions.
    ``skipped_steps``: steps dropped for a non-finite loss. ``last_eval``: the newest evaluation
    record. ``best``: per evaluated model, its best mIoU so far and the iteration it came from."""

    generator: torch.Generator
    shared_generator: torch.Generator
    scaler: torch.amp.GradScaler
    iteration: int = 0
    wall_s: float = 0.0
    skipped_steps: int = 0
    last_eval: dict[str, Any] = attrs.field(factory=dict)
    best: dict[str, dict[str, float]] = attrs.field(factory=dict)

    @classmethod
    def start(cls, seed: int, rank: int, device: torch.device, precision: str) -> TrainingState:
        """The state of a new run: generators seeded from ``seed`` (per rank, and shared)."""
        return cls(generator=torch.Generator().manual_seed(seed * 1000 + rank + 1),
                   shared_generator=torch.Generator().manual_seed(seed * 1000),
                   scaler=grad_scaler(device, precision))

    def advance(self) -> None:
        """One step taken (a dropped step too)."""
        self.iteration += 1

    def skip(self) -> None:
        """One step dropped for a non-finite loss (``run.on_nonfinite: skip``)."""
        self.skipped_steps += 1

    def timed(self, wall_s: float) -> None:
        """The training wall time over all sessions is now ``wall_s``."""
        self.wall_s = wall_s

    def reseed(self, seed: int, shared_seed: int) -> None:
        """Reseed this rank's generator and the shared one (the contract kit's simulated ranks)."""
        self.generator.manual_seed(seed)
        self.shared_generator.manual_seed(shared_seed)

    def record_eval(self, metrics: dict[str, Any], headline: str = "student") -> bool:
        """Take an evaluation record: add each model's best mIoU so far and its iteration to it
        (``<model>/best_miou``, ``<model>/best_iteration``); returns whether the ``headline``
        model (the one ``best.pt`` follows) reached a new best."""
        improved = set()
        for model in sorted({k.split("/")[0] for k in metrics if k.endswith("/miou")}):
            miou = metrics[f"{model}/miou"]
            if model not in self.best or miou > self.best[model]["miou"]:
                self.best[model] = {"miou": miou, "iteration": metrics["iteration"]}
                improved.add(model)
            metrics[f"{model}/best_miou"] = self.best[model]["miou"]
            metrics[f"{model}/best_iteration"] = self.best[model]["iteration"]
        self.last_eval = metrics
        return headline in improved

    def state_dict(self) -> dict[str, Any]:
        """Everything above as tensors and plain values, with the global RNG states."""
        return {"iteration": self.iteration, "wall_s": self.wall_s, "skipped_steps": self.skipped_steps,
                "last_eval": self.last_eval, "best": self.best, "scaler": self.scaler.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                        "generator": self.generator.get_state(),
                        "shared_generator": self.shared_generator.get_state()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``'s output (the global RNG states included)."""
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.generator.set_state(rng["generator"])
        self.shared_generator.set_state(rng["shared_generator"])
        if state["scaler"] and self.scaler.is_enabled():  # fp16 before and now
            self.scaler.load_state_dict(state["scaler"])
        self.iteration, self.wall_s = state["iteration"], state["wall_s"]
        self.skipped_steps, self.last_eval, self.best = state["skipped_steps"], state["last_eval"], state["best"]
