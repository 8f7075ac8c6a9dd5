"""Errors that memorybench reports to users.

Every error a user can cause (a broken task file, a bad model output, an unknown name) is a
``MemorybenchError``; the CLI prints its message and exits with ``exit_code`` instead of showing a
traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class MemorybenchError(Exception):
    """Base class of user-facing errors."""

    exit_code = 2


class RegistryError(MemorybenchError):
    """A name registered twice (built-in and plugin, or two plugins), or a registration whose
    object does not fit its registry (``memorybench.registry``)."""


class TaskSpecError(MemorybenchError):
    """A task YAML file is invalid. The message names the file and the field."""

    def __init__(self, source: str, field: str | None, message: str):
        self.source = source
        self.field = field
        self.message = message
        where = f"{source}" + (f": field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


class UnknownNameError(MemorybenchError):
    """A task, model or generator name that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str]):
        import difflib

        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(sorted(known)) if known else "(none registered)"
        super().__init__(f"unknown {kind} '{name}'.{hint} Known: {listing}")


class DataError(MemorybenchError):
    """Stored data (a generated dataset, a results file, an episode file) is missing or corrupt."""
