"""Errors the CLI reports as a message and a non-zero exit, without a traceback."""


class UserError(Exception):
    """Bad input from the user: a recipe, dataset, checkpoint or command-line argument."""
