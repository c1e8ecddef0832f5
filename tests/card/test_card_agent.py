"""The card agent end to end: HTTP API → pyscard → pcscd → vpcd → emulated card."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import pytest

from kiosk_agent import apdu
from kiosk_agent.card import PcscCardReader
from kiosk_agent.exceptions import WrongPin
from kiosk_agent.pin import Pin
from kiosk_agent.testing.emulator import (
    CardProfile,
    VirtualMyNumberCard,
    VpcdCard,
    long_profile,
    remove_at_read_binary,
)
from kiosk_agent.testing.pcsc_stack import PrivatePcscd

from .conftest import AgentClient, AgentProcess, Slot, wait_for_card

pytestmark = pytest.mark.pcsc

PIN = "1234"
WRONG = "9999"

StartAgent = Callable[..., AgentProcess]


def verify_with_data(card: VirtualMyNumberCard) -> list[bytes]:
    return [c for c in card.verify_commands() if len(c) > 4]


# -- presence -----------------------------------------------------------------------------

def test_status_reports_reader_and_no_card(agent: AgentClient, slot: Slot) -> None:
    r = agent.get("/status")
    assert r.status == 200
    assert r.body == {"pcsc": True, "reader": True, "reader_name": "Virtual PCD 00 00",
                      "card": False}
    assert r.headers["cache-control"] == "no-store"


def test_status_waits_for_insertion(agent: AgentClient, slot: Slot) -> None:
    timer = threading.Timer(0.5, slot.insert)
    timer.start()
    started = time.monotonic()
    r = agent.get("/status?wait=10")
    timer.join()
    assert r.status == 200 and r.body["card"] is True
    assert 0.4 < time.monotonic() - started < 5


def test_no_card(agent: AgentClient, slot: Slot) -> None:
    r = agent.read(PIN)
    assert r.status == 409
    assert r.body["error"] == "no-card"
    assert "カードが入っていません" in r.body["message_ja"]
    assert r.body["message_en"].startswith("No card")


# -- reading ------------------------------------------------------------------------------

def test_correct_read(agent: AgentClient, slot: Slot) -> None:
    card = slot.insert()
    check = agent.get("/card")
    assert check.status == 200
    assert check.body == {"card": "my-number", "tries_left": 3}

    r = agent.read(PIN)
    assert r.status == 200, r.body
    assert r.body == {"name": "番号 太郎", "address": "東京都千代田区霞が関2丁目1番2号",
                      "birth": "1985-04-01", "sex": "1", "sex_ja": "男", "sex_en": "male"}
    assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    # The PIN went to the card exactly once, after the counter was checked.
    assert verify_with_data(card) == [bytes([0, 0x20, 0, 0x80, 4]) + PIN.encode()]
    read_log = card.log[card.log.index(verify_with_data(card)[0]) - 1:]
    assert read_log[0] == bytes(apdu.verify_status())
    assert card.selected_efs() == [apdu.EF_PIN, apdu.EF_PIN, apdu.EF_BASIC_FOUR]
    assert not card.touched_individual_number()
    # The verified state does not outlive the read (the agent resets the card).
    assert card.verified is False


def test_long_japanese_name_and_address(agent: AgentClient, slot: Slot) -> None:
    profile = long_profile()
    card = slot.insert(profile)
    ef = card.files[apdu.EF_BASIC_FOUR]
    assert len(ef) > 2 * apdu.MAX_SHORT_LE and ef[2] == 0x82  # FF20 82 xx xx

    r = agent.read(PIN)
    assert r.status == 200, r.body
    assert r.body["name"] == profile.name
    assert r.body["address"] == profile.address
    assert "𠮷" in r.body["address"]  # outside the BMP: 4 bytes in UTF-8
    assert r.body["birth"] == "2000-02-29"
    assert (r.body["sex"], r.body["sex_ja"]) == ("2", "女")
    reads = [c for c in card.log if c[1] == 0xB0]
    assert len(reads) >= 4
    assert not card.touched_individual_number()


# -- PIN counter --------------------------------------------------------------------------

def test_wrong_pin_once(agent: AgentClient, slot: Slot) -> None:
    card = slot.insert()
    r = agent.read(WRONG)
    assert r.status == 403
    assert r.body["error"] == "wrong-pin" and r.body["tries_left"] == 2
    assert r.body["message_ja"] == "暗証番号が違います。残り2回です。"
    assert r.body["message_en"] == "Wrong PIN. 2 tries left."
    assert "残り2回" in r.body["operator_notice_ja"]
    check = agent.get("/card")
    assert check.body == {"card": "my-number", "tries_left": 2}
    assert card.tries == 2
    # A correct PIN afterwards still works and restores the counter.
    assert agent.read(PIN).status == 200
    assert agent.get("/card").body["tries_left"] == 3


def test_wrong_pin_twice_warns_last_try(agent: AgentClient, slot: Slot) -> None:
    slot.insert()
    agent.read(WRONG)
    r = agent.read(WRONG)
    assert r.status == 403 and r.body["tries_left"] == 1
    assert "残り1回" in r.body["message_ja"] and "ロック" in r.body["message_ja"]
    assert "1 try left" in r.body["message_en"]
    # Before asking for the PIN again, the kiosk gets a clear last-try warning.
    check = agent.get("/card")
    assert check.status == 200 and check.body["tries_left"] == 1
    assert "残り1回" in check.body["warning_ja"] and "市役所" in check.body["warning_ja"]
    assert "Only 1 PIN try is left" in check.body["warning_en"]


def test_wrong_pin_three_times_locks(agent: AgentClient, slot: Slot) -> None:
    card = slot.insert()
    assert agent.read(WRONG).body["tries_left"] == 2
    assert agent.read(WRONG).body["tries_left"] == 1
    r = agent.read(WRONG)
    assert r.status == 423
    assert r.body["error"] == "pin-locked" and r.body["tries_left"] == 0
    assert "市役所" in r.body["message_ja"] and "city office" in r.body["message_en"]
    assert card.tries == 0
    sent = len(verify_with_data(card))
    # Locked: the counter check stops the agent before the PIN is sent again.
    again = agent.read(PIN)
    assert again.status == 423 and again.body["error"] == "pin-locked"
    assert len(verify_with_data(card)) == sent == 3
    assert agent.get("/card").status == 423


def test_card_locked_before_insertion(agent: AgentClient, slot: Slot) -> None:
    card = slot.insert(CardProfile(tries=0))
    r = agent.get("/card")
    assert r.status == 423 and r.body["error"] == "pin-locked"
    assert "市役所の窓口" in r.body["message_ja"]
    assert "city office" in r.body["operator_notice_en"]
    assert agent.read(PIN).status == 423
    assert verify_with_data(card) == []


def test_malformed_pin_uses_no_try(agent: AgentClient, slot: Slot) -> None:
    card = slot.insert()
    for bad in ("12a4", "123", "12345", ""):
        r = agent.read(bad)
        assert r.status == 400 and r.body["error"] == "bad-pin-format", bad
    r = agent.request("POST", "/read", body=b'{"code": "1234"}')
    assert r.status == 400
    assert card.log == [] and card.tries == 3


# -- removal, wrong card, card errors -----------------------------------------------------

@pytest.mark.parametrize("at_read", [1, 2, 4])
def test_card_removed_during_read(agent: AgentClient, slot: Slot, at_read: int) -> None:
    card = slot.insert(long_profile(), remove_when=remove_at_read_binary(at_read))
    r = agent.read(PIN)
    assert r.status == 409, r.body
    assert r.body["error"] == "card-removed"
    assert "カードが抜かれました" in r.body["message_ja"]
    assert "removed" in r.body["message_en"]
    assert "name" not in r.body
    assert sum(1 for c in card.log if c[1] == 0xB0) == at_read
    wait_for_card(PcscCardReader("Virtual PCD 00 00"), False)
    assert agent.get("/status").body["card"] is False


def test_wrong_card_other_aid(agent: AgentClient, slot: Slot) -> None:
    card = slot.insert(CardProfile(aid=bytes.fromhex("A0000000031010")))
    for r in (agent.get("/card"), agent.read(PIN)):
        assert r.status == 422
        assert r.body["error"] == "not-my-number-card"
        assert "マイナンバーカードを置いてください" in r.body["message_ja"]
    # Only SELECT AP was tried: no PIN, no file access on a foreign card.
    assert {c[:4] for c in card.log} == {bytes([0, 0xA4, 0x04, 0x0C])}


def test_unexpected_status_word(agent: AgentClient, slot: Slot) -> None:
    slot.insert(CardProfile(faults={0xB0: b"\x6f\x00"}))
    r = agent.read(PIN)
    assert r.status == 502
    assert r.body["error"] == "unexpected-response"
    assert "6F00" in r.body["detail"] and "6F00" in r.body["operator_notice_en"]
    assert "係員" in r.body["message_ja"]


def test_individual_number_file_is_never_touched(agent: AgentClient, slot: Slot) -> None:
    card = slot.insert()
    agent.get("/card")
    agent.read(WRONG)
    agent.read(PIN)
    assert card.log, "the emulator recorded the session"
    assert not card.touched_individual_number()
    assert all(c[5:7] != b"\x00\x01" for c in card.log if c[1] == 0xA4)
    with pytest.raises(ValueError):
        apdu.select_ef(b"\x00\x01")


# -- no reader, reader gone ---------------------------------------------------------------

def test_no_reader_with_that_name(pcsc: PrivatePcscd, slot: Slot) -> None:
    reader = PcscCardReader("Madoguchi Reader That Is Not Plugged In")
    status = reader.status()
    assert status.pcsc is True and status.reader is None and status.card is False


def test_no_reader_at_all(agent_process: StartAgent) -> None:
    """A real pcscd with no reader drivers configured: PC/SC reports no readers."""
    with PrivatePcscd(with_vpcd=False) as empty:
        running = agent_process(empty.socket_path)
        status = running.client.get("/status")
        assert status.status == 200
        assert status.body == {"pcsc": True, "reader": False, "reader_name": None,
                               "card": False}
        r = running.client.get("/card")
        assert r.status == 503 and r.body["error"] == "no-reader"
        assert "カードリーダーが見つかりません" in r.body["message_ja"]
        assert "unplugged" in r.body["operator_notice_en"]
        assert running.client.read(PIN).body["error"] == "no-reader"


def test_reader_service_gone(agent_process: StartAgent) -> None:
    """pcscd stops while the kiosk is up (vpcd readers cannot be hot-unplugged, so the
    whole reader stack going away stands in for an unplugged reader)."""
    stack = PrivatePcscd().start()
    try:
        running = agent_process(stack.socket_path)
        card = VirtualMyNumberCard()
        vpcd_card = VpcdCard(card, stack.vpcd_port).insert()
        assert running.client.get("/status?wait=5").body["card"] is True
        assert running.client.get("/card").status == 200
        vpcd_card.remove()
        stack.stop()
        status = running.client.get("/status")
        assert status.body == {"pcsc": False, "reader": False, "reader_name": None,
                               "card": False}
        r = running.client.get("/card")
        assert r.status == 503 and r.body["error"] == "pcsc-unavailable"
        assert "カードリーダーが使えません" in r.body["message_ja"]
        assert "pcscd" in r.body["operator_notice_en"]
    finally:
        stack.stop()


# -- PIN hygiene --------------------------------------------------------------------------

def test_pin_wiped_and_never_logged(reader: PcscCardReader, slot: Slot,
                                    caplog: pytest.LogCaptureFixture) -> None:
    slot.insert(CardProfile(pin="8642"))
    caplog.set_level(logging.DEBUG)
    pin = Pin(bytearray(b"8642"))
    assert "8642" not in repr(pin) and "8642" not in str(pin)
    items = reader.read_basic_four(pin)
    assert pin.wiped
    assert "番号" not in repr(items)
    wrong = Pin(bytearray(b"2468"))
    with pytest.raises(WrongPin) as info:
        reader.read_basic_four(wrong)
    assert wrong.wiped
    text = caplog.text + str(info.value) + repr(info.value) + json.dumps(
        info.value.to_dict(), ensure_ascii=False)
    for secret in ("8642", "2468", "38363432", "32343638", "38 36 34 32"):
        assert secret not in text


def test_agent_process_does_not_log_pin(agent_process: StartAgent, pcsc: PrivatePcscd,
                                        slot: Slot) -> None:
    slot.insert(CardProfile(pin="7531"))
    running = agent_process(pcsc.socket_path, "--reader", pcsc.reader(0))
    assert running.client.read("7531").status == 200
    assert running.client.read("1357").status == 403
    log = running.stop()
    assert "POST /read" in log  # DEBUG logging was on
    for secret in ("7531", "1357", "37353331", "31333537"):
        assert secret not in log
    assert "7531" not in pcsc.log_path.read_text(errors="replace")


# -- loopback, origin, CORS ---------------------------------------------------------------

def test_foreign_origin_and_host_refused(agent: AgentClient, slot: Slot) -> None:
    card = slot.insert()
    r = agent.read(PIN, headers={"Origin": "https://evil.example"})
    assert r.status == 403 and "access-control-allow-origin" not in r.headers
    r = agent.read(PIN, headers={"Host": "attacker.example:80"})
    assert r.status == 421
    r = agent.request("POST", "/read", body=b'{"pin":"1234"}',
                      headers={"Content-Type": "text/plain"})
    assert r.status == 415
    assert card.log == []


def test_cors_preflight_for_kiosk_origin(agent: AgentClient) -> None:
    r = agent.request("OPTIONS", "/read", headers={
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
        "Access-Control-Request-Private-Network": "true"})
    assert r.status == 204
    assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    assert r.headers["access-control-allow-private-network"] == "true"
    assert "POST" in r.headers["access-control-allow-methods"]
