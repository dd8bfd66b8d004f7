"""Errors a user can act on.

Every problem with the user's input (a bad file, a bad flag, an unknown model name)
raises :class:`ChainZoomError`; the CLI prints its message on one line and exits
with status 2. Anything else is a bug and keeps its traceback.
"""


class ChainZoomError(Exception):
    """A problem with what the user asked for, explained in one line."""


class UnknownComponentError(ChainZoomError):
    """A backbone or prompter name that no registry knows."""
