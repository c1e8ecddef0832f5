"""The bridge's media helpers without a network: G.711 and the adaptive jitter buffer."""

from __future__ import annotations

import numpy as np

from kiosk_bridge.media import (
    SAMPLES,
    JitterBuffer,
    decode_payload,
    encode_payload,
)


def frame(value: int) -> np.ndarray:  # type: ignore[type-arg]
    return np.full(SAMPLES, value, dtype=np.int16)


def test_slin_is_big_endian_and_ulaw_round_trips() -> None:
    pcm = np.array([1, -2, 1000, -32768, 32767], dtype=np.int16)
    assert encode_payload(pcm, "slin")[:4] == b"\x00\x01\xff\xfe"
    assert list(decode_payload(encode_payload(pcm, "slin"), "slin")) == list(pcm)
    tone = (8000 * np.sin(np.arange(160) / 3)).astype(np.int16)
    back = decode_payload(encode_payload(tone, "ulaw"), "ulaw").astype(np.float64)
    assert len(encode_payload(tone, "ulaw")) == 160
    assert np.max(np.abs(back - tone)) < 8000 * 0.04  # G.711 quantisation only


def test_frames_come_out_in_sequence_order_after_the_prefill() -> None:
    jb = JitterBuffer(max_frames=5, target=2)
    jb.put(frame(1), seq=65535)
    assert jb.get() is None  # filling
    jb.put(frame(3), seq=1)  # out of order, across the wrap
    jb.put(frame(2), seq=0)
    assert [int(jb.get()[0]) for _ in range(3)] == [1, 2, 3]  # type: ignore[index]


def test_underrun_grows_the_target_and_a_gap_is_skipped() -> None:
    jb = JitterBuffer(max_frames=4, target=1)
    jb.put(frame(1), seq=10)
    assert int(jb.get()[0]) == 1  # type: ignore[index]
    assert jb.get() is None and jb.underruns == 1 and jb.target == 2
    jb.put(frame(3), seq=12)  # 11 never came
    jb.put(frame(4), seq=13)
    assert [int(jb.get()[0]) for _ in range(2)] == [3, 4]  # type: ignore[index]


def test_late_packets_are_dropped_and_a_jump_resynchronises() -> None:
    jb = JitterBuffer(max_frames=4, target=1)
    for seq in (100, 101):
        jb.put(frame(seq), seq=seq)
    assert int(jb.get()[0]) == 100  # type: ignore[index]
    jb.put(frame(99), seq=99)
    assert jb.late == 1
    jb.put(frame(7), seq=40000)  # a new stream far away: start over with it
    assert int(jb.get()[0]) == 7  # type: ignore[index]


def test_a_buffer_that_stays_full_shrinks_back() -> None:
    jb = JitterBuffer(max_frames=5, target=1)
    seq = 0
    for _ in range(5):
        jb.put(frame(seq), seq=seq)
        seq += 1
    for _ in range(60):  # one in, one out, with a standing backlog
        jb.put(frame(seq), seq=seq)
        seq += 1
        assert jb.get() is not None
    assert jb.dropped >= 1 and len(jb.frames) <= 5
