"""Errors a user can act on, in the API's vocabulary.

Every problem with what the user asked for raises a :class:`ChainZoomError` subclass:
API users catch the kind they care about, and the CLI prints the message on one line
and exits with status 2 (an :class:`OptionError` is printed with the option's flag
name, ``--tile-overlap`` for ``tile_overlap``). Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class ChainZoomError(Exception):
    """A problem with what the user asked for, explained in one line."""


class OptionError(ChainZoomError):
    """An option (a keyword argument, a config key, a flag) whose value cannot be used.

    ``option`` is the API name (``tile_overlap``); ``problem`` says what is wrong.
    ``str()`` gives the API form; the CLI prints the flag's name instead.
    """

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option
        self.problem = problem


class ConfigError(ChainZoomError):
    """A config file or a run manifest that cannot be read as a configuration."""


class InputError(ChainZoomError):
    """An input image (or folder of them) that cannot be used."""


class ModelError(ChainZoomError):
    """A model that cannot be loaded: a missing package, file or base model, or wrong weights."""


class UnknownComponentError(ModelError):
    """A backbone or prompter name that no registry knows."""


class OutOfMemoryError(ChainZoomError):
    """The device ran out of memory even after the smallest tile."""


class RunFolderError(ChainZoomError):
    """An output folder that cannot take the run: another run's, unreadable, or not writable."""


def one_line(error: BaseException) -> str:
    """An exception as one line for a message: its first line, or its type when it has no text."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
