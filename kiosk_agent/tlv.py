"""BER-TLV parsing for the card-surface input support AP's basic-items file.

Tags may be one or more bytes (``FF20``, ``DF21``...); lengths come in the short form
(``00``–``7F``) or the long forms ``81 xx``, ``82 xx xx`` (``83`` is accepted too).
Everything is bounds-checked: a truncated or inconsistent file raises
:class:`TlvError` instead of returning partial data.
"""

from __future__ import annotations

from collections.abc import Iterator


class TlvError(ValueError):
    pass


def read_tag(data: bytes, pos: int) -> tuple[int, int]:
    """Return ``(tag, next_pos)``; multi-byte tags per ISO/IEC 8825-1."""
    if pos >= len(data):
        raise TlvError(f"tag expected at offset {pos}")
    first = data[pos]
    tag = first
    pos += 1
    if first & 0x1F == 0x1F:
        while True:
            if pos >= len(data):
                raise TlvError("truncated multi-byte tag")
            b = data[pos]
            tag = (tag << 8) | b
            pos += 1
            if not b & 0x80:
                break
            if tag > 0xFFFFFFFF:
                raise TlvError("tag too long")
    return tag, pos


def read_length(data: bytes, pos: int) -> tuple[int, int]:
    """Return ``(length, next_pos)`` for short and 81/82/83 long forms."""
    if pos >= len(data):
        raise TlvError(f"length expected at offset {pos}")
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    count = first & 0x7F
    if count == 0 or count > 3:
        raise TlvError(f"unsupported length form 0x{first:02X}")
    if pos + count > len(data):
        raise TlvError("truncated length")
    return int.from_bytes(data[pos : pos + count], "big"), pos + count


def header_size(data: bytes) -> int:
    """Total size (header + value) of the TLV starting at offset 0 of ``data``.

    ``data`` needs only the tag and length bytes (at most 1 + 4 + 4).
    """
    _, pos = read_tag(data, 0)
    length, pos = read_length(data, pos)
    return pos + length


def iter_tlv(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield ``(tag, value)`` for consecutive TLVs filling ``data`` exactly.

    ``00`` bytes between objects and trailing ``00``/``FF`` padding are skipped (cards
    pad files; ``FF`` cannot be skipped elsewhere because tags such as ``FF20`` start
    with it).
    """
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] == 0x00:
            pos += 1
            continue
        if all(b == 0xFF for b in data[pos:]):
            break
        tag, pos = read_tag(data, pos)
        length, pos = read_length(data, pos)
        if pos + length > n:
            raise TlvError(f"value of tag {tag:X} runs past the end ({length} bytes)")
        yield tag, bytes(data[pos : pos + length])
        pos += length


def parse(data: bytes) -> dict[int, bytes]:
    """Parse consecutive TLVs into a dict (first occurrence of a tag wins)."""
    out: dict[int, bytes] = {}
    for tag, value in iter_tlv(data):
        out.setdefault(tag, value)
    return out


def encode(tag: int, value: bytes) -> bytes:
    """Encode one TLV (used by the card emulator and tests)."""
    tag_bytes = tag.to_bytes((tag.bit_length() + 7) // 8 or 1, "big")
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif n <= 0xFF:
        length = bytes([0x81, n])
    elif n <= 0xFFFF:
        length = bytes([0x82]) + n.to_bytes(2, "big")
    else:
        length = bytes([0x83]) + n.to_bytes(3, "big")
    return tag_bytes + length + value
