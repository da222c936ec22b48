"""Errors the CLI reports as a message and a non-zero exit, without a traceback."""


class UserError(Exception):
    """Bad input from the user: a recipe, dataset, checkpoint or command-line argument."""


class Diverged(UserError):
    """Training diverged: a non-finite loss, or non-finite weights that no checkpoint may hold.
    ``iteration``: the step it happened at."""

    def __init__(self, message: str, iteration: int):
        super().__init__(message)
        self.iteration = iteration


class PluginError(UserError):
    """A plugin is unknown, malformed, conflicts with another, or failed (importing it,
    constructing it, in a hook, saving or restoring its state)."""
