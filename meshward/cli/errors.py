"""Errors the CLI turns into one clear line on stderr and a non-zero exit."""

from __future__ import annotations

__all__ = ["CliError"]


class CliError(Exception):
    """A failure that the user can act on; the message is printed as is."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
