"""Errors a user can act on. The command line prints their message without a traceback."""


class PrivdiffError(Exception):
    """Base class: the message must say what was wrong and, where it can, how to fix it."""
