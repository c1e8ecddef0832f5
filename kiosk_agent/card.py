"""PC/SC access to the My Number card's card-surface input support AP (pyscard).

Every operation opens its own PC/SC context and card handle and releases both before
returning, so a restarted pcscd, an unplugged reader or a swapped card never leaves
stale state behind. PC/SC failures are translated here, at the edge, into the
domain errors of :mod:`kiosk_agent.exceptions`.

The card is disconnected with ``SCARD_RESET_CARD`` after a read: the PIN-verified
state does not outlive the operation.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from smartcard import scard

from . import apdu, tlv
from .exceptions import (
    Busy,
    CardError,
    CardRemoved,
    NoCard,
    NoReader,
    NotMyNumberCard,
    PinLocked,
    ReaderUnplugged,
    ServiceUnavailable,
    UnexpectedResponse,
    WrongPin,
)
from .pin import Pin, wipe

logger = logging.getLogger(__name__)

_SERVICE_GONE = {
    scard.SCARD_E_NO_SERVICE,
    scard.SCARD_E_SERVICE_STOPPED,
    scard.SCARD_E_INVALID_HANDLE,
}
_READER_GONE = {scard.SCARD_E_READER_UNAVAILABLE, scard.SCARD_E_UNKNOWN_READER}
_CARD_GONE = {scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_RESET_CARD}
_CARD_MUTE = {scard.SCARD_W_UNRESPONSIVE_CARD, scard.SCARD_W_UNPOWERED_CARD}

SEX_LABELS = {
    "1": ("男", "male"),
    "2": ("女", "female"),
    "9": ("適用不能", "not applicable"),
    "0": ("不明", "unknown"),
}
"""ISO 5218 codes as printed on the card surface."""


def _code(rv: int) -> str:
    return f"0x{rv & 0xFFFFFFFF:08X}"


@dataclass(frozen=True)
class ReaderStatus:
    pcsc: bool
    reader: str | None
    card: bool

    def to_dict(self) -> dict[str, object]:
        return {"pcsc": self.pcsc, "reader": self.reader is not None,
                "reader_name": self.reader, "card": self.card}


@dataclass(frozen=True)
class CardCheck:
    """A My Number card is present; ``tries_left`` PIN attempts remain."""

    tries_left: int

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"card": "my-number", "tries_left": self.tries_left}
        if self.tries_left == 1:
            body["warning_ja"] = (
                "暗証番号の入力は残り1回です。間違えるとカードがロックされ、"
                "市役所の窓口での手続きが必要になります。"
            )
            body["warning_en"] = (
                "Only 1 PIN try is left. A wrong PIN locks the card, and unlocking it "
                "needs a visit to the city office."
            )
        return body


@dataclass(frozen=True)
class BasicFour:
    """The four basic items as printed on the card surface."""

    name: str
    address: str
    birth: datetime.date
    sex: str

    def to_dict(self) -> dict[str, object]:
        sex_ja, sex_en = SEX_LABELS[self.sex]
        return {"name": self.name, "address": self.address,
                "birth": self.birth.isoformat(), "sex": self.sex,
                "sex_ja": sex_ja, "sex_en": sex_en}

    def __repr__(self) -> str:
        # Personal data stays out of logs and tracebacks.
        return "BasicFour(<redacted>)"


def parse_basic_four(data: bytes) -> BasicFour:
    """Parse the content of EF 0002 (``FF20`` containing ``DF21``…``DF25``)."""
    try:
        outer = tlv.parse(data)
        if apdu.TAG_BASIC_FOUR not in outer:
            raise UnexpectedResponse("EF 0002 has no FF20 object")
        inner = tlv.parse(outer[apdu.TAG_BASIC_FOUR])
        name = inner[apdu.TAG_NAME].decode("utf-8")
        address = inner[apdu.TAG_ADDRESS].decode("utf-8")
        birth_raw = inner[apdu.TAG_BIRTH].decode("ascii")
        sex = inner[apdu.TAG_SEX].decode("ascii")
    except tlv.TlvError as exc:
        raise UnexpectedResponse(f"malformed TLV in EF 0002: {exc}") from None
    except KeyError as exc:
        raise UnexpectedResponse(f"EF 0002 lacks tag {exc.args[0]:X}") from None
    except UnicodeDecodeError:
        raise UnexpectedResponse("EF 0002 text is not valid UTF-8") from None
    if len(birth_raw) != 8 or not birth_raw.isdigit():
        raise UnexpectedResponse("date of birth is not YYYYMMDD")
    try:
        birth = datetime.date(int(birth_raw[:4]), int(birth_raw[4:6]), int(birth_raw[6:]))
    except ValueError:
        raise UnexpectedResponse("date of birth is not a valid date") from None
    if sex not in SEX_LABELS:
        raise UnexpectedResponse("sex is not an ISO 5218 code")
    return BasicFour(name=name, address=address, birth=birth, sex=sex)


class _Card:
    """An open card handle; every command goes through :meth:`transmit`."""

    def __init__(self, reader: PcscCardReader, hcontext: Any, hcard: Any, protocol: int,
                 reader_name: str) -> None:
        self._reader = reader
        self._hcontext = hcontext
        self._hcard = hcard
        self._pci = scard.SCARD_PCI_T0 if protocol == scard.SCARD_PROTOCOL_T0 else (
            scard.SCARD_PCI_T1)
        self.reader_name = reader_name
        self.apdu_count = 0

    def transmit(self, command: list[int], *, what: str) -> tuple[bytes, int]:
        """Send one APDU; returns ``(data, sw)``. ``what`` names it in errors/logs."""
        self.apdu_count += 1
        rv, response = scard.SCardTransmit(self._hcard, self._pci, command)
        if rv != scard.SCARD_S_SUCCESS:
            raise self._reader.transmit_failure(self._hcontext, self.reader_name, rv, what)
        if len(response) < 2:
            # vpcd (and some readers) hand back an empty response when the card is
            # pulled out in the middle of the exchange.
            raise self._reader.transmit_failure(self._hcontext, self.reader_name, None, what)
        sw = (response[-2] << 8) | response[-1]
        logger.debug("%s -> SW %04X, %d data bytes", what, sw, len(response) - 2)
        return bytes(response[:-2]), sw


class PcscCardReader:
    """Reads the basic four items through PC/SC.

    ``reader_name``: the reader to use (exact name, or a prefix of it); empty means
    the first reader with a card in it, else the first reader. Operations on the card
    are serialized: a second concurrent one gets :class:`Busy`.
    """

    removal_grace = 1.5
    """Seconds to wait for PC/SC to report a removal after a failed exchange (pcscd
    polls card presence every 400 ms)."""

    def __init__(self, reader_name: str = "") -> None:
        self.reader_name = reader_name
        self._lock = threading.Lock()

    # -- context and reader selection -------------------------------------------------

    @contextmanager
    def _context(self) -> Iterator[Any]:
        try:
            rv, hcontext = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        except scard.error as exc:  # pyscard raises when libpcsclite cannot connect at all
            raise ServiceUnavailable(str(exc)) from None
        if rv != scard.SCARD_S_SUCCESS:
            raise ServiceUnavailable(f"SCardEstablishContext {_code(rv)}")
        try:
            yield hcontext
        finally:
            scard.SCardReleaseContext(hcontext)

    def _list_readers(self, hcontext: Any) -> list[str]:
        rv, readers = scard.SCardListReaders(hcontext, [])
        if rv == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        if rv in _SERVICE_GONE:
            raise ServiceUnavailable(f"SCardListReaders {_code(rv)}")
        if rv != scard.SCARD_S_SUCCESS:
            raise UnexpectedResponse(f"SCardListReaders {_code(rv)}")
        return list(readers)

    def _states(self, hcontext: Any, readers: list[str], timeout_ms: int = 0,
                known: list[tuple[str, int]] | None = None) -> dict[str, int]:
        query = known or [(r, scard.SCARD_STATE_UNAWARE) for r in readers]
        rv, states = scard.SCardGetStatusChange(hcontext, timeout_ms, query)
        if rv == scard.SCARD_E_TIMEOUT:
            return {r: s & ~scard.SCARD_STATE_CHANGED for r, s in query}
        if rv in _SERVICE_GONE:
            raise ServiceUnavailable(f"SCardGetStatusChange {_code(rv)}")
        if rv in _READER_GONE:
            raise ReaderUnplugged(f"SCardGetStatusChange {_code(rv)}")
        if rv != scard.SCARD_S_SUCCESS:
            raise UnexpectedResponse(f"SCardGetStatusChange {_code(rv)}")
        return {name: state for name, state, _atr in states}

    def _pick_reader(self, hcontext: Any) -> tuple[str, bool]:
        """Return ``(reader, card_present)`` or raise :class:`NoReader`."""
        readers = self._list_readers(hcontext)
        if self.reader_name:
            readers = [r for r in readers if r == self.reader_name] or [
                r for r in readers if r.startswith(self.reader_name)]
        if not readers:
            wanted = f" named {self.reader_name!r}" if self.reader_name else ""
            raise NoReader(f"no reader{wanted}")
        states = self._states(hcontext, readers)
        for name in readers:
            if states.get(name, 0) & scard.SCARD_STATE_PRESENT:
                return name, True
        return readers[0], False

    # -- status -------------------------------------------------------------------------

    def status(self, wait_for_card: float = 0.0) -> ReaderStatus:
        """Reader and card presence; with ``wait_for_card`` > 0, block up to that many
        seconds for a card to be inserted (PC/SC event wait, no polling)."""
        try:
            with self._context() as hcontext:
                try:
                    name, present = self._pick_reader(hcontext)
                except NoReader:
                    return ReaderStatus(pcsc=True, reader=None, card=False)
                deadline = time.monotonic() + wait_for_card
                known = [(name, scard.SCARD_STATE_EMPTY)]
                while not present:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    states = self._states(hcontext, [name], int(remaining * 1000), known)
                    state = states.get(name, 0)
                    present = bool(state & scard.SCARD_STATE_PRESENT)
                    known = [(name, state & ~scard.SCARD_STATE_CHANGED)]
                return ReaderStatus(pcsc=True, reader=name, card=present)
        except ServiceUnavailable:
            return ReaderStatus(pcsc=False, reader=None, card=False)
        except ReaderUnplugged:
            return ReaderStatus(pcsc=True, reader=None, card=False)

    # -- card operations ----------------------------------------------------------------

    @contextmanager
    def _card(self) -> Iterator[_Card]:
        if not self._lock.acquire(blocking=False):
            raise Busy()
        try:
            with self._context() as hcontext:
                name, present = self._pick_reader(hcontext)
                if not present:
                    raise NoCard(f"reader {name!r} is empty")
                rv, hcard, protocol = scard.SCardConnect(
                    hcontext, name, scard.SCARD_SHARE_EXCLUSIVE,
                    scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
                if rv != scard.SCARD_S_SUCCESS:
                    raise self._connect_failure(rv)
                card = _Card(self, hcontext, hcard, protocol, name)
                try:
                    yield card
                finally:
                    # Reset: a verified PIN state must not survive the operation.
                    scard.SCardDisconnect(hcard, scard.SCARD_RESET_CARD)
        finally:
            self._lock.release()

    def _connect_failure(self, rv: int) -> CardError:
        detail = f"SCardConnect {_code(rv)}"
        if rv in _CARD_GONE:
            return NoCard(detail)
        if rv in _CARD_MUTE:
            return NotMyNumberCard(detail + " (card does not answer)")
        if rv == scard.SCARD_E_SHARING_VIOLATION:
            return Busy(detail)
        if rv in _READER_GONE:
            return ReaderUnplugged(detail)
        if rv in _SERVICE_GONE:
            return ServiceUnavailable(detail)
        return UnexpectedResponse(detail)

    def transmit_failure(self, hcontext: Any, reader: str, rv: int | None,
                         what: str) -> CardError:
        """Explain a failed exchange (``rv`` None: no status word came back): card
        pulled, reader gone, or something else."""
        detail = f"{what}: SCardTransmit {_code(rv)}" if rv is not None else (
            f"{what}: no status word in the response")
        if rv in _CARD_GONE:
            return CardRemoved(detail)
        if rv in _READER_GONE:
            return ReaderUnplugged(detail)
        if rv in _SERVICE_GONE:
            return ServiceUnavailable(detail)
        # Transport errors while the card is being pulled out: PC/SC notices the
        # removal only at its next presence poll, so wait briefly for that change.
        try:
            present = self._card_stays(hcontext, reader, self.removal_grace)
        except CardError as exc:
            return exc
        return UnexpectedResponse(detail) if present else CardRemoved(detail)

    def _card_stays(self, hcontext: Any, reader: str, seconds: float) -> bool:
        """Wait up to ``seconds`` for the card to leave ``reader``; False once it has."""
        deadline = time.monotonic() + seconds
        known = [(reader, scard.SCARD_STATE_UNAWARE)]
        while True:
            state = self._states(hcontext, [reader],
                                 max(0, int((deadline - time.monotonic()) * 1000)),
                                 known if known[0][1] else None).get(reader, 0)
            if not state & scard.SCARD_STATE_PRESENT:
                return False
            if time.monotonic() >= deadline:
                return True
            known = [(reader, state & ~scard.SCARD_STATE_CHANGED)]

    def _select_ap(self, card: _Card) -> None:
        _, sw = card.transmit(apdu.select_ap(), what="SELECT AP")
        if sw == apdu.SW_FILE_NOT_FOUND:
            raise NotMyNumberCard("card-surface input support AP not found")
        if sw != apdu.SW_OK:
            raise NotMyNumberCard(f"SELECT AP answered {sw:04X}")

    def _select_ef(self, card: _Card, fid: bytes) -> None:
        _, sw = card.transmit(apdu.select_ef(fid), what=f"SELECT EF {fid.hex().upper()}")
        if sw != apdu.SW_OK:
            raise UnexpectedResponse(f"SELECT EF {fid.hex().upper()} answered {sw:04X}")

    def _tries_left(self, card: _Card) -> int:
        _, sw = card.transmit(apdu.verify_status(), what="VERIFY (tries)")
        tries = apdu.tries_from_sw(sw)
        if sw == apdu.SW_PIN_BLOCKED or tries == 0:
            raise PinLocked(f"VERIFY (tries) answered {sw:04X}")
        if tries is None:
            raise UnexpectedResponse(f"VERIFY (tries) answered {sw:04X}")
        return tries

    def check_card(self) -> CardCheck:
        """Is a My Number card present, and how many PIN tries are left?"""
        with self._card() as card:
            self._select_ap(card)
            self._select_ef(card, apdu.EF_PIN)
            return CardCheck(tries_left=self._tries_left(card))

    def _verify(self, card: _Card, pin: Pin) -> None:
        command = list(apdu.VERIFY_HEADER)
        try:
            pin.write_into(command)
            pin.wipe()
            _, sw = card.transmit(command, what="VERIFY")
        finally:
            wipe(command)
            pin.wipe()
        if sw == apdu.SW_OK:
            return
        tries = apdu.tries_from_sw(sw)
        if sw == apdu.SW_PIN_BLOCKED or tries == 0:
            raise PinLocked(f"VERIFY answered {sw:04X}")
        if tries is not None:
            raise WrongPin(f"VERIFY answered {sw:04X}", tries_left=tries)
        raise UnexpectedResponse(f"VERIFY answered {sw:04X}")

    def _read_ef(self, card: _Card) -> bytes:
        """READ BINARY the current EF: a short header first, then the rest in chunks."""
        head, sw = card.transmit(apdu.read_binary(0, 8), what="READ BINARY header")
        if sw not in (apdu.SW_OK, apdu.SW_END_OF_FILE):
            raise UnexpectedResponse(f"READ BINARY answered {sw:04X}")
        try:
            total = tlv.header_size(head)
        except tlv.TlvError as exc:
            raise UnexpectedResponse(f"EF 0002 header: {exc}") from None
        if total > 0x7FFF:
            raise UnexpectedResponse(f"EF 0002 declares {total} bytes")
        data = bytearray(head[:total])
        while len(data) < total:
            size = min(apdu.MAX_SHORT_LE, total - len(data))
            chunk, sw = card.transmit(apdu.read_binary(len(data), size),
                                      what=f"READ BINARY @{len(data)}")
            if sw not in (apdu.SW_OK, apdu.SW_END_OF_FILE) or not chunk:
                raise UnexpectedResponse(f"READ BINARY @{len(data)} answered {sw:04X}")
            data += chunk[:size]
        return bytes(data)

    def read_basic_four(self, pin: Pin) -> BasicFour:
        """VERIFY ``pin`` (wiped once sent, or on any failure) and read the four items."""
        try:
            with self._card() as card:
                self._select_ap(card)
                self._select_ef(card, apdu.EF_PIN)
                # Re-check the counter: a locked card never receives the PIN.
                self._tries_left(card)
                self._verify(card, pin)
                self._select_ef(card, apdu.EF_BASIC_FOUR)
                raw = self._read_ef(card)
                items = parse_basic_four(raw)
                logger.info("basic four items read (%d APDUs)", card.apdu_count)
                return items
        finally:
            pin.wipe()
