"""Errors the CLI reports as a message and a non-zero exit, without a traceback."""


class UserError(Exception):
    """Bad input from the user: a recipe, dataset, checkpoint or command-line argument."""


class PluginError(UserError):
    """A plugin is unknown, malformed, conflicts with another, or failed (importing it,
    constructing it, in a hook, saving or restoring its state)."""
