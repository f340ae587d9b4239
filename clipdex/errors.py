"""Errors that reach the user as one line (exit 1), never as a traceback."""


class ClipdexError(Exception):
    """A runtime problem with a one-line, user-facing message (CLI exit code 1)."""


class ModelError(ClipdexError):
    """A model could not be resolved or loaded."""


class LockHeld(ClipdexError):
    """Another process holds the library's writer lock."""
