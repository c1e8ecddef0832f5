"""The My Number card at the kiosk end to end (issue 6): the operator asks in the console,
the citizen agrees on the kiosk page (headless Chromium), places the card and types the
PIN; the page talks to the real card agent (``python -m kiosk_agent``) over loopback,
which reads an emulated card through a real PC/SC stack (private pcscd + vsmartcard's
vpcd); the four items reach the operator's case card for this call only and are purged
with the session.

Also covered on the same call: two wrong PINs (the operator is told the tries left, the
last-try warning on the kiosk), a locked card (the city-office guidance), the card agent
gone (a clear message on both sides). The emulator records every APDU: EF 0001 (the
individual number) is never addressed; the page never sends the PIN to the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from common.console_events import SupervisorListen, SupervisorListenStop
from common.db import init_schema, make_engine, session_factory
from common.keys import Keys
from common.models.accounts import AuditEntry
from common.settings import Settings, settings_override
from kiosk_agent.testing.emulator import CardProfile, VirtualMyNumberCard, VpcdCard, long_profile
from kiosk_agent.testing.pcsc_stack import PrivatePcscd, missing_prerequisites
from stack.asterisk import AsteriskInstance
from tests.conftest import free_port, wait_until
from tests.integration import test_kiosk_e2e as e2e
from tests.integration.conftest import Phones, Proc, send, start_phones
from tests.integration.test_console_e2e import PASSWORD, sign_in
from tests.integration.test_kiosk_e2e import (
    PAGE_STORAGE,
    kiosk_calls,
    login_operator,
    open_kiosk,
    start_session,
)
from tests.integration.test_transfer import ari

# the kiosk tests' fixtures (kiosk_settings is this module's own, below)
stack = e2e.stack
operators = e2e.operators
operator_media = e2e.operator_media
browser = e2e.browser

pytestmark = [
    pytest.mark.asterisk, pytest.mark.browser, pytest.mark.pcsc, pytest.mark.engine("sqlite"),
]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pcsc() -> Iterator[PrivatePcscd]:
    problem = missing_prerequisites()
    if problem:
        pytest.fail(f"the card test needs a real PC/SC stack: {problem}")
    stack_ = PrivatePcscd().start()
    yield stack_
    stack_.stop()


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()  # web, card agent


@pytest.fixture
def kiosk_settings(call_settings: Settings, ports: tuple[int, int]) -> Settings:
    """What the stack fixture of the kiosk tests starts web with: the kiosk page's card
    agent is the one this test runs."""
    web_port, agent_port = ports
    settings = settings_override(call_settings, web={"port": web_port},
                                 kiosk={"card_agent_url": f"http://127.0.0.1:{agent_port}"})
    engine = make_engine(settings.database_url)
    init_schema(engine)
    engine.dispose()
    return settings


@pytest.fixture
def card_agent(pcsc: PrivatePcscd, ports: tuple[int, int], tmp_path: Path
               ) -> Iterator[subprocess.Popen[str]]:
    """The card agent as the kiosk PC runs it, for the kiosk page's origin only."""
    web_port, agent_port = ports
    log = (tmp_path / "card-agent.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiosk_agent", "--port", str(agent_port), "--allowed-origin",
         f"http://127.0.0.1:{web_port}", "--reader", pcsc.reader(0), "--log-level", "DEBUG"],
        cwd=ROOT, env=dict(os.environ, PCSCLITE_CSOCK_NAME=pcsc.socket_path),
        stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening "), (line, (tmp_path / "card-agent.log").read_text())
    yield proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    proc.stdout.close()
    log.close()


class Slot:
    """Cards going in and out of vpcd's first slot (as a citizen would)."""

    def __init__(self, pcsc: PrivatePcscd) -> None:
        self.pcsc = pcsc
        self.cards: list[VpcdCard] = []

    def insert(self, profile: CardProfile) -> VirtualMyNumberCard:
        card = VpcdCard(VirtualMyNumberCard(profile), self.pcsc.vpcd_port).insert()
        self.cards.append(card)
        return card.card

    def remove(self) -> None:
        for card in self.cards:
            card.remove()


@pytest.fixture
def slot(pcsc: PrivatePcscd) -> Iterator[Slot]:
    s = Slot(pcsc)
    yield s
    s.remove()
    # whatever happened: nothing ever addressed the individual number's EF
    for card in s.cards:
        assert not card.card.touched_individual_number()


def console_login(browser: Any, base: str, settings: Settings, username: str,
                  roles: set[str], page: str, **account: Any) -> Any:
    from web import accounts

    engine = make_engine(settings.database_url)
    with session_factory(engine)() as db:
        db.add(accounts.create_user(db, username=username, tenant_id="city", roles=roles,
                                    password=PASSWORD, hasher=accounts.make_hasher(),
                                    settings=settings, must_change_password=False, **account))
        db.commit()
    engine.dispose()
    console = sign_in(browser, base, username)
    console.goto(f"{base}{page}")
    console.wait_for_selector("#console[data-live='open']", timeout=15000)
    return console


@pytest.fixture
def staff_phone(kiosk_settings: Settings, tmp_path: Path) -> Iterator[Phones]:
    started = start_phones(kiosk_settings, ["staff2001", "op07"], tmp_path / "staff")
    yield started
    started.stop()


def card_step(kiosk: Any, step: str, timeout: float = 15000) -> None:
    kiosk.wait_for_selector(f"#k-card[data-step='{step}']:not([hidden])", timeout=timeout)


def console_card_state(console: Any) -> str:
    return str(console.get_attribute("[data-kiosk-card]", "data-card-state") or "")


def type_pin_on_screen(kiosk: Any, pin: str) -> None:
    for digit in pin:
        kiosk.click(f"#k-keypad [data-pin='{digit}']")
    kiosk.click("#k-keypad [data-card='ok']")


class HeldReport:
    """Holds the kiosk page's report of one card step in the browser until released,
    to show that the page sends no later step before the server has answered that one.
    Two reports in flight may be handled in either order: a later step (an error found
    a few ms after "waiting for the card") was overwritten by the earlier one, and the
    operator never learned of the error."""

    PATTERN = "**/kiosk/api/session/*/card"

    def __init__(self, page: Any, state: str) -> None:
        self.page, self.state = page, state
        self.held: Any = None
        self.later: list[str] = []  # steps the page sent while the held one was unanswered
        page.route(self.PATTERN, self._route)

    def _route(self, route: Any) -> None:
        step = json.loads(route.request.post_data or "{}").get("state", "")
        if step == self.state and self.held is None:
            self.held = route
            return
        if self.held is not None:
            self.later.append(step)
        route.continue_()

    def release(self, settle_ms: int = 700) -> None:
        for _ in range(100):  # Playwright runs the route handler only while it is called
            if self.held is not None:
                break
            self.page.wait_for_timeout(50)
        assert self.held is not None, f"the page never reported {self.state!r}"
        self.page.wait_for_timeout(settle_ms)  # room for a later report, were it sent now
        held, self.held = self.held, None
        held.continue_()
        self.page.unroute(self.PATTERN, self._route)
        assert self.later == [], (f"the page sent {self.later} before the server had "
                                  f"answered {self.state!r}")


def test_the_operator_reads_the_citizens_card_with_their_pin_for_this_call_only(
        asterisk: AsteriskInstance, kiosk_settings: Settings, card_agent: subprocess.Popen[str],
        stack: tuple[str, Proc, Proc], operators: tuple[Phones, Phones], staff_phone: Phones,
        browser: Any, slot: Slot, tmp_path: Path) -> None:
    base = stack[0]
    settings = kiosk_settings
    profile = long_profile()
    login_operator(settings, "op01")
    console = console_login(browser, base, settings, "op1", {"operator"}, "/operator/",
                            display_name="青木", sip_endpoint="op01")
    staff = console_login(browser, base, settings, "staff1", {"staff"}, "/staff/",
                          display_name="佐藤 戸籍係", sip_endpoint=None, extension="2001")

    kiosk = open_kiosk(browser, base, settings, "k04", viewport={"width": 1366, "height": 768})
    sent: list[tuple[str, str]] = []  # every request of the kiosk page: (url, body)
    kiosk.on("request", lambda r: sent.append((r.url, r.post_data or "")))
    start_session(kiosk, "mynumber")
    kiosk.wait_for_selector("#screen-call:not([hidden])", timeout=40000)
    console.wait_for_selector("[data-kiosk-panel] [data-kiosk-card]", timeout=20000)

    # the operator asks; the kiosk asks the citizen first
    console.click("[data-kiosk-action='card']")
    card_step(kiosk, "consent")
    assert "個人番号（マイナンバー）は読み取りません" in kiosk.inner_text("#k-card")
    wait_until(lambda: console_card_state(console) == "requested", 10, "console not told")
    kiosk.click("[data-card='agree']")
    card_step(kiosk, "insert")
    wait_until(lambda: console_card_state(console) == "waiting_card", 10,
               "the console does not show that the kiosk waits for the card")

    # the citizen places the card: the page asks for the PIN, with the tries left
    card = slot.insert(profile)
    card_step(kiosk, "pin")
    assert kiosk.inner_text("#k-card-tries") == "3"
    assert kiosk.is_hidden("#k-card-warning")
    kiosk.screenshot(path=str(tmp_path / "kiosk-card-pin-1366.png"))
    in_view = kiosk.evaluate("""() => Array.from(document.querySelectorAll(
        '#k-card button')).filter(b => b.offsetParent !== null).every(b => {
          const r = b.getBoundingClientRect();
          return r.top >= 0 && r.bottom <= innerHeight && r.height >= 44 && r.width >= 44; })""")
    assert in_view, "a key of the PIN dialog is off screen or too small at 1366x768"

    # two wrong PINs: the kiosk says how many tries remain, the operator is told too
    type_pin_on_screen(kiosk, "1111")
    card_step(kiosk, "error")
    assert "残り2回" in kiosk.inner_text("#k-card-error")
    wait_until(lambda: "残り2回" in console.inner_text("[data-kiosk-card] .kiosk-card-state"),
               10, "the operator was not told about the wrong PIN")
    kiosk.click("[data-card='retry']")
    card_step(kiosk, "pin")
    type_pin_on_screen(kiosk, "2222")
    card_step(kiosk, "error")
    kiosk.click("[data-card='retry']")
    card_step(kiosk, "pin")
    # one try left: a clear warning before the last PIN
    assert kiosk.inner_text("#k-card-tries") == "1"
    assert kiosk.is_visible("#k-card-warning")
    assert "ロック" in kiosk.inner_text("#k-card-warning")

    # the right PIN, typed on the kiosk's physical keypad this time; the card answers in
    # a few ms, and the page reports "read" only after the server has "reading"
    held = HeldReport(kiosk, "reading")
    kiosk.keyboard.type(profile.pin)
    kiosk.keyboard.press("Enter")
    held.release()
    card_step(kiosk, "done")

    # the operator's case card shows the four items
    items = console.locator("[data-kiosk-card] .kiosk-card-items")
    items.wait_for(state="visible", timeout=15000)
    assert console.inner_text("[data-card-item='name']") == profile.name
    assert console.inner_text("[data-card-item='address']") == profile.address
    assert console.inner_text("[data-card-item='birth']") == "2000年2月29日（平成12年）"
    assert console.inner_text("[data-card-item='sex']") == "女"
    console.screenshot(path=str(tmp_path / "console-card-items.png"))
    # ... and the kiosk page never put them into its DOM
    page_html = kiosk.content()
    assert profile.name[:6] not in page_html and profile.address[:6] not in page_html

    # the PIN went to the card agent on loopback only, never to the server
    agent_url = settings.kiosk.card_agent_url
    for url, body in sent:
        if not url.startswith(agent_url):
            for pin in ("1111", "2222", profile.pin):
                assert f'"{pin}"' not in body and pin not in url, (url, body)
    reads = [body for url, body in sent if url == f"{agent_url}/read"]
    assert len(reads) == 3 and json.loads(reads[-1]) == {"pin": profile.pin}
    # the card saw the AP, three VERIFYs with a PIN, and EF 0002 only
    assert len([c for c in card.verify_commands() if len(c) > 5]) == 3
    assert card.selected_efs() and set(card.selected_efs()) <= {b"\x00\x11", b"\x00\x02"}
    assert not card.touched_individual_number()
    slot.remove()

    # a supervisor listens to the kiosk call like to any call (ARI snoop to their phone)
    call_id = console.get_attribute("[data-kiosk-panel]", "data-call")
    assert send(settings, SupervisorListen(tenant="city", call_id=call_id, mode="listen",
                                           endpoint="op07", supervisor="sv1"))["ok"]
    wait_until(lambda: any(c["name"].startswith("PJSIP/op07") for c in ari(settings,
                                                                              "/channels")),
               15, "the supervisor's phone was not connected to the kiosk call")
    assert send(settings, SupervisorListenStop(tenant="city", call_id=call_id,
                                               endpoint="op07"))["ok"]
    wait_until(lambda: not [c for c in ari(settings, "/channels")
                            if c["name"].startswith(("Snoop/", "PJSIP/op07"))], 10,
               "the supervisor's leg or snoop was left behind")

    # the operator hands the case to the staff member (blind transfer): their case card
    # shows the kiosk's camera and the card data too
    console.select_option("#case-card select[name=target]", "2001")
    console.check("#case-card input[name=kind][value=blind]")
    console.fill("#case-card textarea[name=note]", "転入届。カード読取済み")
    console.click("#btn-transfer")
    staff.wait_for_selector("[data-kiosk-panel] .kiosk-card-items:not([hidden])",
                            timeout=30000)
    assert staff.inner_text("[data-card-item='name']") == profile.name
    wait_until(lambda: staff.evaluate(
        "() => document.querySelector('.kiosk-video').videoWidth") > 0, 30,
        "the staff member received no video from the kiosk")
    staff.screenshot(path=str(tmp_path / "staff-kiosk-card.png"))
    assert kiosk.is_visible("#screen-call")

    # a locked card (the staff member asks this time): the kiosk gives the city-office
    # guidance and offers no retry
    console = staff
    console.click("[data-kiosk-action='card']")
    card_step(kiosk, "consent")
    kiosk.click("[data-card='agree']")
    card_step(kiosk, "insert")
    slot.insert(CardProfile(tries=0))
    card_step(kiosk, "error")
    assert "市役所" in kiosk.inner_text("#k-card-error")
    assert kiosk.is_hidden("[data-card='retry']")
    wait_until(lambda: "市役所" in console.inner_text("[data-kiosk-card] .kiosk-card-state"),
               10, "the operator was not told the card is locked")
    kiosk.click("[data-card-step='error'] [data-card='cancel']")
    slot.remove()

    # the card agent stops while the citizen reads the consent: both sides say so, the
    # call goes on
    console.click("[data-kiosk-action='card']")
    card_step(kiosk, "consent")
    card_agent.terminate()
    card_agent.wait(10)
    held = HeldReport(kiosk, "waiting_card")
    kiosk.click("[data-card='agree']")
    card_step(kiosk, "error")
    assert "カードリーダーの準備ができていません" in kiosk.inner_text("#k-card-error")
    held.release()  # the error, found at once, is reported after "waiting for the card"
    state = "[data-kiosk-card] .kiosk-card-state"
    try:
        wait_until(lambda: "カード読み取りソフトが起動していない" in console.inner_text(state),
                   10, "the operator was not told")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the card panel says {console.inner_text(state)!r}"
                             ) from None
    assert kiosk.is_visible("#screen-call")
    kiosk.click("[data-card-step='error'] [data-card='cancel']")
    wait_until(lambda: console_card_state(console) == "cancelled", 10, "console not told")
    # asked again, the agent still gone: said at once, nobody is asked to agree
    console.click("[data-kiosk-action='card']")
    card_step(kiosk, "error", timeout=10000)
    wait_until(lambda: console_card_state(console) == "error", 10, "console not told")
    assert console.get_attribute("[data-kiosk-card]", "data-card-error") == "agent-unavailable"
    kiosk.click("[data-card-step='error'] [data-card='cancel']")

    # the end of the call erases the card data everywhere
    kiosk.click("#screen-call [data-action='hangup']")
    kiosk.wait_for_selector("#screen-survey:not([hidden]), #screen-thanks:not([hidden])",
                            timeout=15000)
    gone = console.request.get(f"{base}/console/kiosk/{call_id}/card/data")
    assert gone.status == 404
    client = redis.Redis.from_url(settings.redis.url)
    try:
        prefix = Keys(settings.redis.prefix).prefix
        assert list(client.scan_iter(f"{prefix}:kiosk:session:*")) == []
    finally:
        client.close()

    def purge() -> Any:
        rows = kiosk_calls(settings)
        found = [e for e in rows[-1].events if e.kind == "kiosk_purge"] if rows else []
        return found[0] if found else None

    record = wait_until(purge, 15, "no purge record")
    assert "card data" in record.data["deleted"]
    steps = [e.data["state"] for e in kiosk_calls(settings)[-1].events
             if e.kind == "kiosk_card"]
    assert steps[:3] == ["requested", "consented", "waiting_card"] and "read" in steps
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as db:
            trail = [(a.action, a.actor) for a in db.scalars(
                select(AuditEntry).where(AuditEntry.action.like("kiosk_card.%"))
                .order_by(AuditEntry.id))]
    finally:
        engine.dispose()
    assert ("kiosk_card.read", "kiosk:k04") in trail
    assert ("kiosk_card.view", "op1") in trail and ("kiosk_card.view", "staff1") in trail
    assert [a for a in trail if a[0] == "kiosk_card.request"] == [
        ("kiosk_card.request", "op1"), ("kiosk_card.request", "staff1"),
        ("kiosk_card.request", "staff1"), ("kiosk_card.request", "staff1")]
    # the kiosk page itself: nothing of the session stays after it reset
    if kiosk.is_visible("#screen-survey"):
        kiosk.click("[data-score='5']")
    kiosk.wait_for_selector("#screen-welcome:not([hidden])", timeout=20000)
    assert kiosk.evaluate(PAGE_STORAGE) == {"local": 0, "session": 0, "cookies": "",
                                            "caches": 0, "dbs": 0, "media": 0}
    assert profile.name[:6] not in kiosk.content()
