"""The library's own exceptions."""

from __future__ import annotations

__all__ = ["DeliveryError", "UnsafeSpoolDirectory"]


class DeliveryError(Exception):
    """Given to ``on_error`` with the events of a batch that could not be delivered.

    ``status`` is the HTTP status the server answered, or None when no answer came (the
    connection was refused or dropped, or the request's deadline passed). The message
    says what happened; it never holds the API key.
    """

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class UnsafeSpoolDirectory(PermissionError):
    """The spool directory belongs to another user, or others may write to it: whoever
    can write there could inject events sent under the project's key."""
