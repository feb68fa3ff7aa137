"""Errors that mean "the user asked for something wrong", as opposed to bugs.

The CLI and the pytest plugin print these as one clear message, without a traceback.
"""

from __future__ import annotations

__all__ = ["DataError", "GridError", "ModelError", "MupcheckError", "ReportError", "StoreError"]


class MupcheckError(Exception):
    """Base class: a user-facing problem with a message that says what to fix."""


class GridError(MupcheckError):
    """A grid file is malformed: names the file, the key and what is allowed."""

    def __init__(self, path: str, key: str | None, message: str):
        self.path, self.key, self.message = path, key, message
        where = f"{path}: `{key}`" if key else str(path)
        super().__init__(f"{where}: {message}")


class DataError(MupcheckError):
    """A data source is missing, unreadable or too small for the grid."""


class ModelError(MupcheckError):
    """A model factory cannot be imported or does not honour the contract."""


class StoreError(MupcheckError):
    """The result store is missing runs or cannot be written."""


class ReportError(MupcheckError):
    """A report cannot be written where it was asked to go."""
