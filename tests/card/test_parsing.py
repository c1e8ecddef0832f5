"""Pure parts of the agent (no PC/SC): TLV, basic-four parsing, PIN handling, settings."""

from __future__ import annotations

import datetime
import pickle

import pytest

from kiosk_agent import apdu, tlv
from kiosk_agent.card import parse_basic_four
from kiosk_agent.exceptions import BadPinFormat, PinLocked, UnexpectedResponse, WrongPin
from kiosk_agent.pin import Pin, extract_pin
from kiosk_agent.settings import SettingsError, load_settings
from kiosk_agent.testing.emulator import CardProfile, long_profile


@pytest.mark.parametrize("size, length_bytes", [
    (0, b"\x00"), (0x7F, b"\x7f"), (0x80, b"\x81\x80"), (0xFF, b"\x81\xff"),
    (0x100, b"\x82\x01\x00"), (0x1234, b"\x82\x12\x34"), (0x10000, b"\x83\x01\x00\x00"),
])
def test_length_forms_round_trip(size: int, length_bytes: bytes) -> None:
    encoded = tlv.encode(0xDF22, b"a" * size)
    assert encoded[:2] == b"\xdf\x22" and encoded[2:2 + len(length_bytes)] == length_bytes
    assert tlv.parse(encoded) == {0xDF22: b"a" * size}
    assert tlv.header_size(encoded[:9]) == len(encoded)


def test_multi_byte_tags_and_padding() -> None:
    data = tlv.encode(0xFF20, tlv.encode(0xDF21, b"") + tlv.encode(0x5A, b"x")) + b"\xff" * 7
    outer = tlv.parse(data)
    assert list(outer) == [0xFF20]
    assert tlv.parse(outer[0xFF20]) == {0xDF21: b"", 0x5A: b"x"}
    assert tlv.parse(b"\x00\x00" + tlv.encode(0x5A, b"y")) == {0x5A: b"y"}


@pytest.mark.parametrize("bad", [
    b"\xdf\x22\x05abc",            # value shorter than its length
    b"\xdf\x22\x82\x01",           # truncated long length
    b"\xdf",                       # truncated tag
    b"\xdf\x22\x84\x00\x00\x00\x01a",  # 4-byte length form: unsupported
    b"\xdf\x22\x80",               # indefinite length: not in this file
])
def test_malformed_tlv_raises(bad: bytes) -> None:
    with pytest.raises(tlv.TlvError):
        tlv.parse(bad)


def test_parse_basic_four_from_emulated_files() -> None:
    items = parse_basic_four(CardProfile().basic_four())
    assert (items.name, items.address, items.birth, items.sex) == (
        "番号 太郎", "東京都千代田区霞が関2丁目1番2号", datetime.date(1985, 4, 1), "1")
    profile = long_profile()
    items = parse_basic_four(profile.basic_four())
    assert items.name == profile.name and items.address == profile.address
    assert items.to_dict()["birth"] == "2000-02-29"
    assert repr(items) == "BasicFour(<redacted>)"


@pytest.mark.parametrize("profile, message", [
    (CardProfile(birth="19851301"), "valid date"),
    (CardProfile(birth="1985041"), "YYYYMMDD"),
    (CardProfile(sex="3"), "ISO 5218"),
])
def test_parse_basic_four_rejects_bad_fields(profile: CardProfile, message: str) -> None:
    with pytest.raises(UnexpectedResponse, match=message):
        parse_basic_four(profile.basic_four())


def test_parse_basic_four_rejects_bad_layouts() -> None:
    with pytest.raises(UnexpectedResponse, match="FF20"):
        parse_basic_four(tlv.encode(0xFF21, b""))
    with pytest.raises(UnexpectedResponse, match="DF23"):
        parse_basic_four(tlv.encode(0xFF20, tlv.encode(apdu.TAG_NAME, b"x")))
    with pytest.raises(UnexpectedResponse, match="UTF-8"):
        bad = b"".join(tlv.encode(t, v) for t, v in [
            (apdu.TAG_NAME, b"\xff\xfe"), (apdu.TAG_ADDRESS, b"a"),
            (apdu.TAG_BIRTH, b"19850401"), (apdu.TAG_SEX, b"1")])
        parse_basic_four(tlv.encode(0xFF20, bad))
    with pytest.raises(UnexpectedResponse, match="runs past"):
        parse_basic_four(CardProfile().basic_four()[:-3])


@pytest.mark.parametrize("body", [
    b'{"pin":"1234"}', b'{ "pin" : "1234" }', b'{"lang":"ja","pin":\n"1234"}',
])
def test_extract_pin(body: bytes) -> None:
    buf = bytearray(body)
    pin = extract_pin(buf)
    target: list[int] = []
    pin.write_into(target)
    assert bytes(target) == b"1234"
    pin.wipe()
    assert pin.wiped


@pytest.mark.parametrize("body", [
    b'{"pin":1234}', b'{"pin":"12345"}', b'{"pin":"12 4"}', b'{"pin":"123', b'{"pim":"1234"}',
    b'{"pin":"\\u0031234"}', b"", b'{"pin":"\xef\xbc\x91234"}',
])
def test_extract_pin_rejects(body: bytes) -> None:
    with pytest.raises(BadPinFormat) as info:
        extract_pin(bytearray(body))
    assert "123" not in str(info.value)


def test_pin_hides_itself() -> None:
    buf = bytearray(b"4321")
    with Pin(buf) as pin:
        assert repr(pin) == str(pin) == "Pin(****)"
        with pytest.raises(TypeError):
            pickle.dumps(pin)
    assert buf == bytearray(4)
    rejected = bytearray(b"43a1")
    with pytest.raises(BadPinFormat):
        Pin(rejected)
    assert rejected == bytearray(4)


def test_pin_command_builders_never_reach_ef_0001() -> None:
    assert apdu.select_ef(apdu.EF_PIN) == [0, 0xA4, 2, 0x0C, 2, 0x00, 0x11]
    for fid in (b"\x00\x01", b"\x00\x03", b"\x3f\x00"):
        with pytest.raises(ValueError):
            apdu.select_ef(fid)
    assert apdu.tries_from_sw(0x63C2) == 2 and apdu.tries_from_sw(0x9000) is None


def test_error_messages_japanese_then_english() -> None:
    last = WrongPin(tries_left=1).to_dict()
    assert "残り1回" in str(last["message_ja"]) and "1 try left" in str(last["message_en"])
    assert list(last)[:2] == ["error", "message_ja"]
    assert "市役所" in str(PinLocked().to_dict()["message_ja"])


@pytest.mark.parametrize("bind", ["0.0.0.0", "192.168.1.10", "::", "localhost", "example.org"])
def test_non_loopback_bind_refused(bind: str) -> None:
    with pytest.raises(SettingsError, match="bind"):
        load_settings({"bind": bind})


def test_settings_accepts_loopback_and_checks_origin() -> None:
    assert load_settings({"bind": "::1"}).bind == "::1"
    assert load_settings({"bind": "127.0.0.2", "port": "47111"}).port == 47111
    with pytest.raises(SettingsError, match="allowed_origin"):
        load_settings({"allowed_origin": "https://kiosk.example/page"})
    with pytest.raises(SettingsError, match="unknown"):
        load_settings({"pin": "1234"})


def test_server_refuses_non_loopback_even_when_built_directly() -> None:
    from kiosk_agent.card import PcscCardReader
    from kiosk_agent.server import CardAgentServer
    from kiosk_agent.settings import AgentSettings

    with pytest.raises(SettingsError, match="loopback"):
        CardAgentServer(AgentSettings(bind="0.0.0.0", port=0), PcscCardReader())
