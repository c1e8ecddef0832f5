"""The PIN as a wipeable secret.

The PIN lives in one ``bytearray`` owned by :class:`Pin`, is copied only into the
VERIFY command buffer (also wiped), and is zeroed as soon as VERIFY has been sent.
It has no ``repr``/``str`` that shows it, cannot be pickled, and never appears in an
exception message.

Limits (Python cannot promise more): the bytes also passed through the kernel's
socket buffer, through pyscard's C-side copy of the APDU (freed, not zeroed) and
through pcscd; CPython's small integers used while building the APDU list are shared
singletons, so the list is overwritten after use. Nothing here defends against
someone who can read this process's memory; it only keeps the PIN's lifetime short
and keeps it out of logs, tracebacks, core-dump-friendly long-lived objects and
responses. See docs/card_agent.md.
"""

from __future__ import annotations

from typing import NoReturn

from .exceptions import BadPinFormat

PIN_LENGTH = 4
_DIGITS = frozenset(range(0x30, 0x3A))


class Pin:
    """Four ASCII digits in a ``bytearray``; call :meth:`wipe` (or use ``with``)."""

    __slots__ = ("_buf",)

    def __init__(self, buf: bytearray) -> None:
        # Takes ownership of ``buf`` (no copy is made).
        if len(buf) != PIN_LENGTH or any(b not in _DIGITS for b in buf):
            wipe(buf)
            raise BadPinFormat()
        self._buf = buf

    @classmethod
    def from_buffer(cls, source: bytearray, start: int, end: int) -> Pin:
        """Copy ``source[start:end]`` byte by byte into a new owned buffer."""
        if end - start != PIN_LENGTH:
            raise BadPinFormat()
        buf = bytearray(PIN_LENGTH)
        for i in range(PIN_LENGTH):
            buf[i] = source[start + i]
        return cls(buf)

    def write_into(self, target: list[int]) -> None:
        """Append the PIN bytes to an APDU list (the caller wipes the list)."""
        target.extend(self._buf)

    def wipe(self) -> None:
        wipe(self._buf)

    @property
    def wiped(self) -> bool:
        return not any(self._buf)

    def __enter__(self) -> Pin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.wipe()

    def __repr__(self) -> str:
        return "Pin(****)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a PIN cannot be pickled")

    def __del__(self) -> None:
        buf = getattr(self, "_buf", None)  # absent when __init__ refused the input
        if buf is not None:
            wipe(buf)


def wipe(buf: bytearray | list[int]) -> None:
    """Overwrite a mutable buffer in place with zeros."""
    for i in range(len(buf)):
        buf[i] = 0


def extract_pin(body: bytearray) -> Pin:
    """Find ``"pin": "dddd"`` in a JSON request body without making a ``str``/``bytes``.

    ``json.loads`` would leave immutable copies of the PIN behind, so the field is
    located with ``bytearray.find`` and copied index by index. The body is expected to
    be the small object the kiosk page sends (``{"pin":"1234"}``); anything else is a
    :class:`BadPinFormat`. The caller wipes ``body`` afterwards.
    """
    key = body.find(b'"pin"')
    if key < 0:
        raise BadPinFormat()
    i = key + 5
    n = len(body)
    while i < n and body[i] in b" \t\r\n":
        i += 1
    if i >= n or body[i] != 0x3A:  # ':'
        raise BadPinFormat()
    i += 1
    while i < n and body[i] in b" \t\r\n":
        i += 1
    if i >= n or body[i] != 0x22:  # '"'
        raise BadPinFormat()
    start = i + 1
    end = start
    while end < n and body[end] != 0x22:
        end += 1
    if end >= n:
        raise BadPinFormat()
    return Pin.from_buffer(body, start, end)
