"""Commands of the My Number card's card-surface input support AP (券面事項入力補助AP).

Layout taken from public open-source readers (there is no public official spec):
AID ``D3 92 10 00 31 00 01 01 04 08``; EF ``0011`` holds the 4-digit PIN, EF ``0002``
the basic four items in an ``FF20`` TLV. EF ``0001`` (the individual number) is
deliberately absent from this module: the agent has no way to select it.
"""

from __future__ import annotations

AID_CARD_INFO_INPUT_SUPPORT = bytes.fromhex("D3921000310001010408")
"""AID of 券面事項入力補助AP."""

EF_PIN = bytes.fromhex("0011")
"""EF holding the AP's PIN (4 digits, 3 tries)."""

EF_BASIC_FOUR = bytes.fromhex("0002")
"""EF with name, address, date of birth and sex (``FF20`` TLV)."""

ALLOWED_EFS = frozenset({EF_PIN, EF_BASIC_FOUR})
"""The only EFs the agent may select; anything else is refused before it reaches the card."""

TAG_BASIC_FOUR = 0xFF20
TAG_HEADER = 0xDF21
TAG_NAME = 0xDF22
TAG_ADDRESS = 0xDF23
TAG_BIRTH = 0xDF24
TAG_SEX = 0xDF25

SW_OK = 0x9000
SW_END_OF_FILE = 0x6282
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_PIN_BLOCKED = 0x6983
SW_FILE_NOT_FOUND = 0x6A82

MAX_SHORT_LE = 0xFF
"""Largest READ BINARY chunk requested (short APDU; 0x00 would mean 256)."""


def select_ap(aid: bytes = AID_CARD_INFO_INPUT_SUPPORT) -> list[int]:
    """SELECT by DF name, no response data (P2=0C)."""
    return [0x00, 0xA4, 0x04, 0x0C, len(aid), *aid]


def select_ef(fid: bytes) -> list[int]:
    """SELECT EF under the current DF, no response data. Only allowed EFs."""
    if fid not in ALLOWED_EFS:
        raise ValueError(f"EF {fid.hex().upper()} is not one the agent may select")
    return [0x00, 0xA4, 0x02, 0x0C, len(fid), *fid]


def verify_status() -> list[int]:
    """VERIFY without data: answers ``63Cx`` (x tries left) without using a try."""
    return [0x00, 0x20, 0x00, 0x80]


VERIFY_HEADER = (0x00, 0x20, 0x00, 0x80, 0x04)
"""VERIFY with the 4 PIN bytes appended (built in place by the reader, then wiped)."""


def read_binary(offset: int, length: int) -> list[int]:
    if not 0 <= offset <= 0x7FFF:
        raise ValueError("offset out of range for READ BINARY")
    if not 1 <= length <= MAX_SHORT_LE:
        raise ValueError("length out of range for a short READ BINARY")
    return [0x00, 0xB0, (offset >> 8) & 0x7F, offset & 0xFF, length]


def tries_from_sw(sw: int) -> int | None:
    """``63Cx`` → x; otherwise None."""
    if sw & 0xFFF0 == 0x63C0:
        return sw & 0x000F
    return None
