"""Errors of the transcriber."""

from __future__ import annotations


class ModelError(Exception):
    """The configured speech model cannot be used; the message says what to fix.

    ``problem`` names the case for the health page (``common.health``):
    ``not_configured``, ``not_found``, ``not_a_model`` or ``load_failed``."""

    def __init__(self, message: str, problem: str = "load_failed", path: str = "") -> None:
        super().__init__(message)
        self.problem = problem
        self.path = path
