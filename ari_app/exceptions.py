"""Errors of the call controller, translated from library errors at the edge."""

from __future__ import annotations


class AriError(Exception):
    """ARI answered a request with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        super().__init__(f"ARI {method} {path} -> {status}: {body[:300]}")


class AriNotFound(AriError):
    """The channel, bridge or playback no longer exists (usually: the caller hung up)."""

    def __init__(self, method: str, path: str, body: str) -> None:
        super().__init__(method, path, 404, body)


class AriAuthError(Exception):
    """ARI refused our credentials."""


class AriUnavailable(Exception):
    """ARI could not be reached at all."""


class CommandError(Exception):
    """A command that cannot be carried out; ``code`` for the console, message for people."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)
