"""Exception classes: every known failure carries a user message and an exit code.

Bad arguments and inputs are ``ValueError`` subclasses (:class:`UsageError`, :class:`InputError`).
Library messages name parameters in backquotes (`` `adapter_lr` ``), never CLI flags; the CLI
maps them to ``Error: <message>`` on stderr with the flags' names. Library users catch by class.
"""

from __future__ import annotations


class ContextEditError(Exception):
    """Base class. ``exit_code`` 1: a failure while running."""

    exit_code = 1


class UsageError(ContextEditError, ValueError):
    """A bad option value or combination (exit 2)."""

    exit_code = 2


class InputError(ContextEditError, ValueError):
    """A missing, unreadable or malformed input file or folder (exit 2)."""

    exit_code = 2


class ModelNotFoundError(InputError):
    """A model id or folder that cannot be loaded here (exit 2)."""


class UnsafeFileError(InputError):
    """A pickle-based weight file, or a path escaping its run folder (exit 2)."""


class OutputExistsError(UsageError):
    """An output location that exists and would be overwritten (exit 2)."""


class RunFailure(ContextEditError):
    """A failure while running (exit 1)."""


class NoSpaceError(RunFailure):
    """The disk filled while writing; the message names the file system and the space needed (exit 1)."""


class RunReplacedError(RunFailure):
    """The run folder an edit read was replaced (``tune --overwrite``) while it ran (exit 1)."""


class OutOfMemoryError(RunFailure):
    """CUDA ran out of memory; the message says what to lower (exit 1)."""


class Interrupted(ContextEditError):
    """Ctrl-C: the files already written are complete; the message says how to go on (exit 130)."""

    exit_code = 130
