"""Exceptions that mitk turns into one-line messages and exit codes."""

from __future__ import annotations

from pathlib import Path


class MitkError(Exception):
    """Base class: an expected failure with a message fit for a user."""

    exit_code = 1

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        super().__init__(message)

    def __str__(self) -> str:
        message = super().__str__()
        if self.path and self.path not in message:
            return f"{self.path}: {message}"
        return message


class UsageError(MitkError):
    """The command line or its options are wrong (exit code 2)."""

    exit_code = 2


class InputError(MitkError):
    """An input file is missing, unreadable or not an image mitk can use."""


class OutputExistsError(MitkError):
    """The output exists already and ``--overwrite`` was not given."""


class PluginError(MitkError):
    """A plugin is unknown, broken, or cannot do what was asked."""


class CheckpointError(MitkError):
    """A checkpoint is unsafe, corrupt, or meant for another task or plugin."""


class GeometryError(InputError):
    """Images do not share a grid, or a DICOM series is not a regular volume."""


class MitkWarning(UserWarning):
    """A warning meant for the user; the command line prints it as one line."""
