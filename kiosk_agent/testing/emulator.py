"""An emulated My Number card behind vsmartcard's virtual reader (vpcd).

``VirtualMyNumberCard`` implements what the agent uses of the card-surface input
support AP: SELECT (AP by AID, EF by FID), VERIFY (with and without data, retry
counter, lock after 3 failures), READ BINARY (offset/Le, ``6282`` at end of file) and
the ``FF20`` TLV layout of EF 0002. It also holds an EF 0001 with a fake 12-digit
number so that a selection of it would succeed and be visible in the log.

``VpcdCard`` connects to vpcd (pcscd's driver) on loopback and serves one card:
vpcd sends a 2-byte big-endian length and a payload; a 1-byte payload is a control
code (0 power off, 1 power on, 2 reset, 4 ATR request → reply with the ATR), anything
longer is a command APDU answered with the response APDU. Closing the connection is
"pulling the card out".

Every command APDU is recorded (``log``) so tests can assert what the reader sent.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import apdu, tlv

logger = logging.getLogger(__name__)

ATR = bytes.fromhex("3BE000FF8131FE4514")
"""ATR seen on My Number cards (T=1)."""

EF_INDIVIDUAL_NUMBER = bytes.fromhex("0001")

CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


@dataclass
class CardProfile:
    """What is printed on (and stored in) one emulated card."""

    name: str = "番号 太郎"
    address: str = "東京都千代田区霞が関2丁目1番2号"
    birth: str = "19850401"
    sex: str = "1"
    pin: str = "1234"
    tries: int = 3
    aid: bytes = apdu.AID_CARD_INFO_INPUT_SUPPORT
    individual_number: str = "123456789018"
    apdu_delay: float = 0.0
    """Seconds added to every APDU (models a slow contact/contactless card)."""
    faults: dict[int, bytes] = field(default_factory=dict)
    """INS → status word to answer instead of executing (e.g. ``{0xB0: b"\\x6f\\x00"}``)."""

    def basic_four(self) -> bytes:
        inner = b"".join([
            tlv.encode(apdu.TAG_HEADER, bytes.fromhex("DF2202DF2302DF2402DF2502") + b"\x00" * 5),
            tlv.encode(apdu.TAG_NAME, self.name.encode("utf-8")),
            tlv.encode(apdu.TAG_ADDRESS, self.address.encode("utf-8")),
            tlv.encode(apdu.TAG_BIRTH, self.birth.encode("ascii")),
            tlv.encode(apdu.TAG_SEX, self.sex.encode("ascii")),
        ])
        return tlv.encode(apdu.TAG_BASIC_FOUR, inner)


def long_profile() -> CardProfile:
    """Long Japanese name and address: EF 0002 needs 82-form lengths and many chunks."""
    return CardProfile(
        name="寿限無寿限無五劫の擦り切れ海砂利水魚の水行末雲来末風来末食う寝る処に住む処"
             "やぶら小路の藪柑子パイポパイポパイポのシューリンガンシューリンガンの"
             "グーリンダイグーリンダイのポンポコピーのポンポコナーの長久命の長助",
        address="北海道札幌市中央区北一条西二丁目一番地の一　札幌市役所本庁舎気付"
                "大通公園西七丁目南側ケヤキ並木沿い第三ビルディング二十三階二三〇一号室"
                "（旧北海道庁赤れんが庁舎前通り向かい側）　𠮷野家ビル別館Ａ棟",
        birth="20000229",
        sex="2",
    )


@dataclass
class VirtualMyNumberCard:
    profile: CardProfile = field(default_factory=CardProfile)
    log: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tries = self.profile.tries
        self.files = {
            apdu.EF_PIN: b"",
            apdu.EF_BASIC_FOUR: self.profile.basic_four(),
            EF_INDIVIDUAL_NUMBER: self.profile.individual_number.encode("ascii"),
        }
        self._lock = threading.Lock()
        self.individual_number_exposed = False
        """Set by the card itself if EF 0001 was ever selected (belt and braces)."""
        self.reset()

    def reset(self) -> None:
        self.ap_selected = False
        self.current_ef: bytes | None = None
        self.verified = False

    # -- what tests look at -------------------------------------------------------------

    def selected_efs(self) -> list[bytes]:
        return [bytes(c[5:7]) for c in self.log if c[:4] == bytes([0, 0xA4, 0x02, 0x0C])]

    def touched_individual_number(self) -> bool:
        """True if any recorded APDU addressed EF 0001 in any way the card could accept:
        SELECT by file id (P1 00/02) or by path ending in it (P1 08/09), or READ BINARY
        with short EF identifier 1. The AP's AID also contains the bytes ``00 01``,
        so only the command's own data field is compared, never a substring of it."""
        for c in self.log:
            if len(c) < 4:
                continue
            ins, p1 = c[1], c[2]
            data = c[5:5 + c[4]] if len(c) > 5 else b""
            if ins == 0xA4 and p1 in (0x00, 0x02) and data == EF_INDIVIDUAL_NUMBER:
                return True
            if ins == 0xA4 and p1 in (0x08, 0x09) and data.endswith(EF_INDIVIDUAL_NUMBER):
                return True
            if ins == 0xB0 and p1 & 0x80 and p1 & 0x1F == 0x01:
                return True
        return self.individual_number_exposed

    def verify_commands(self) -> list[bytes]:
        return [c for c in self.log if c[1:2] == b"\x20"]

    # -- APDU processing ----------------------------------------------------------------

    def process(self, command: bytes) -> bytes:
        with self._lock:
            self.log.append(bytes(command))
            if self.profile.apdu_delay:
                time.sleep(self.profile.apdu_delay)
            return self._process(command)

    def _process(self, c: bytes) -> bytes:
        if len(c) < 4:
            return b"\x67\x00"
        cla, ins, p1, p2 = c[0], c[1], c[2], c[3]
        body = c[5:5 + c[4]] if len(c) > 5 else b""
        if cla != 0x00:
            return b"\x6e\x00"
        if ins in self.profile.faults:
            return self.profile.faults[ins]
        if ins == 0xA4:
            return self._select(p1, p2, body)
        if ins == 0x20:
            return self._verify(p1, p2, body if len(c) > 5 else None)
        if ins == 0xB0:
            le = c[4] if len(c) == 5 else 0
            return self._read_binary(p1, p2, le or 256)
        return b"\x6d\x00"

    def _select(self, p1: int, p2: int, body: bytes) -> bytes:
        if p1 == 0x04:
            if body == self.profile.aid:
                self.ap_selected = True
                self.current_ef = None
                self.verified = False
                return b"\x90\x00"
            return b"\x6a\x82"
        if p1 == 0x02 and self.ap_selected and body in self.files:
            self.current_ef = body
            if body == EF_INDIVIDUAL_NUMBER:
                self.individual_number_exposed = True
            return b"\x90\x00"
        return b"\x6a\x82"

    def _verify(self, p1: int, p2: int, pin: bytes | None) -> bytes:
        if (p1, p2) != (0x00, 0x80) or self.current_ef != apdu.EF_PIN:
            return b"\x6a\x86"
        if self.tries == 0:
            return b"\x69\x83"
        if pin is None:
            return b"\x90\x00" if self.verified else bytes([0x63, 0xC0 | self.tries])
        if pin == self.profile.pin.encode("ascii"):
            self.tries = self.profile.tries if self.profile.tries > 0 else 3
            self.verified = True
            return b"\x90\x00"
        self.tries -= 1
        self.verified = False
        return bytes([0x63, 0xC0 | self.tries])

    def _read_binary(self, p1: int, p2: int, le: int) -> bytes:
        if p1 & 0x80 or self.current_ef is None:
            return b"\x69\x86"
        if self.current_ef == apdu.EF_BASIC_FOUR and not self.verified:
            return b"\x69\x82"
        data = self.files[self.current_ef]
        offset = (p1 << 8) | p2
        if offset > len(data):
            return b"\x6b\x00"
        chunk = data[offset:offset + le]
        return chunk + (b"\x90\x00" if len(chunk) == le else b"\x62\x82")


def remove_after(n: int) -> Callable[[bytes, int], bool]:
    """A ``remove_when`` rule: pull the card instead of answering command number n+1."""
    return lambda _command, answered: answered >= n


def remove_at_read_binary(k: int = 2) -> Callable[[bytes, int], bool]:
    """Pull the card instead of answering the k-th READ BINARY (k=1: the first)."""
    seen = [0]

    def rule(command: bytes, _answered: int) -> bool:
        if command[1:2] == b"\xb0":
            seen[0] += 1
        return seen[0] >= k

    return rule


class VpcdCard:
    """Insert ``card`` into vpcd's slot on ``port``; :meth:`remove` pulls it out."""

    def __init__(self, card: VirtualMyNumberCard, port: int, host: str = "127.0.0.1",
                 remove_when: Callable[[bytes, int], bool] | None = None) -> None:
        self.card = card
        self.port = port
        self.host = host
        self.remove_when = remove_when
        self.answered = 0
        self.removed = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def insert(self, timeout: float = 5.0) -> VpcdCard:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name=f"vpcd-card-{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def remove(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer: the card is out either way
            sock.close()
        self.removed.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            try:
                # vpcd writes the length and the APDU separately without TCP_NODELAY:
                # with delayed ACKs on this side every APDU would wait ~40 ms (Nagle).
                # Real cards have their own latency; the emulator should not add this.
                if _QUICKACK is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
                part = sock.recv(n - len(buf))
            except OSError:
                return None
            if not part:
                return None
            buf += part
        return buf

    def _send(self, sock: socket.socket, payload: bytes) -> None:
        sock.sendall(struct.pack("!H", len(payload)) + payload)

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None  # nosec B101 # type narrowing, not a check
        while True:
            header = self._recv_exact(sock, 2)
            if header is None:
                break
            (size,) = struct.unpack("!H", header)
            payload = self._recv_exact(sock, size) if size else b""
            if payload is None:
                break
            if size == 1:
                code = payload[0]
                if code == CTRL_ATR:
                    self._send(sock, ATR)
                elif code in (CTRL_OFF, CTRL_ON, CTRL_RESET):
                    self.card.reset()
                continue
            if self.remove_when is not None and self.remove_when(payload, self.answered):
                logger.debug("card pulled out before answering APDU %d", self.answered + 1)
                self.card.log.append(bytes(payload))
                self.remove()
                break
            try:
                self._send(sock, self.card.process(payload))
            except OSError:
                break
            self.answered += 1
