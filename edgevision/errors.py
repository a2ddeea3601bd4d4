"""One base error for everything a user can fix; the CLI prints it as one line with an exit code."""
from __future__ import annotations


class EdgevisionError(Exception):
    """A problem the user can fix. `str(err)` is a single line naming the problem and the fix."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}; {hint}")


class ModelError(EdgevisionError):
    """Unknown model name, unavailable weights, a checkpoint that does not fit."""


class DataError(EdgevisionError):
    """Missing path, empty folder, bad CSV, no usable image."""


class OutputExistsError(EdgevisionError):
    """Refusing to overwrite a user's file without --force."""
