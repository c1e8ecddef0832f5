"""RTP packets as ExternalMedia sends them (RFC 3550), parsed without copying."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: memoryview  # a view into the datagram, big-endian samples for slin16


def parse(data: bytes) -> RtpPacket | None:
    """The packet, or None for anything that is not RTP version 2."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    first = data[0]
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # header extension
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
    end = len(data)
    if first & 0x20 and end > offset:  # padding
        end -= data[-1]
    if end <= offset:
        return None
    return RtpPacket(payload_type=data[1] & 0x7F,
                     sequence=int.from_bytes(data[2:4], "big"),
                     timestamp=int.from_bytes(data[4:8], "big"),
                     ssrc=int.from_bytes(data[8:12], "big"),
                     payload=memoryview(data)[offset:end])


def build(payload: bytes, sequence: int, timestamp: int, ssrc: int,
          payload_type: int = 118) -> bytes:
    """An RTP packet (tests and the benchmark send audio like Asterisk does)."""
    header = bytes([0x80, payload_type & 0x7F]) + (sequence & 0xFFFF).to_bytes(2, "big") + \
        (timestamp & 0xFFFFFFFF).to_bytes(4, "big") + (ssrc & 0xFFFFFFFF).to_bytes(4, "big")
    return header + payload
