"""Errors that users see: each says what is wrong and how to fix it."""

from __future__ import annotations


class CrossroadsError(Exception):
    """Base class for errors caused by user input (data, configuration, arguments)."""


class DataFormatError(CrossroadsError):
    """A data file does not match the format it was read as.

    The message names the file, the row (when there is one) and what was expected.
    """

    def __init__(self, path: object, expected: str, row: object | None = None, found: str | None = None):
        self.path = str(path)
        self.row = row
        self.expected = expected
        self.found = found
        where = self.path if row is None else f"{self.path}, row {row}"
        message = f"{where}: expected {expected}"
        if found is not None:
            message += f", found {found}"
        super().__init__(message)


class UnknownModelError(CrossroadsError):
    """A model name that is not in the pool."""

    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = list(known)
        pool = ", ".join(self.known) if self.known else "no models yet (add one first)"
        super().__init__(f"unknown model {name!r}; the pool has: {pool}")
