"""The live console end to end, in a real browser against the running stack.

Real Asterisk 22, ari_app, Redis and SQL; the web app as its own process
(``python -m web.main``); Debian's Chromium driven by Playwright; SIPp as the caller and
as the auto-answering phones of the operator (op01) and the staff member (2001).

An operator logs in and goes ready, a call arrives and is answered by the operator's
phone, the case card opens, the operator writes a note and makes an attended transfer
with an escalation note; the staff member's browser shows the case card with the note
within a second, the staff member adds a note the operator sees live; the operator
completes the transfer and saves the wrap-up; the supervisor's wallboard counts change.
Screenshots of each view go to the test's tmp folder and to test-artifacts/console-e2e/.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

import common.commands  # noqa: F401 - registers command.result for decode()
import common.console_events  # noqa: F401 - registers case.note for decode()
from common.bus import read_events
from common.db import init_schema, make_engine, session_factory
from common.events import decode
from common.keys import Keys
from common.models.calls import Call
from common.settings import Settings, settings_override
from tests.conftest import free_port, wait_until
from tests.integration.conftest import Phones, Proc, Processes, hang_up, run_sipp, start_phones
from web import accounts

pytestmark = [pytest.mark.asterisk, pytest.mark.browser, pytest.mark.engine("sqlite")]

DID = "0312345678"
CALLER_NUMBER = "0901234567"
PASSWORD = "e2e-console-password-42"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture
def phones(call_settings: Settings, tmp_path: Path) -> Iterator[Phones]:
    started = start_phones(call_settings, ["op01", "staff2001"], tmp_path / "phones")
    yield started
    started.stop()


@pytest.fixture
def web_settings(call_settings: Settings) -> Settings:
    settings = settings_override(call_settings, web={"port": free_port()})
    engine = make_engine(settings.database_url)
    init_schema(engine)
    hasher = accounts.make_hasher()
    with session_factory(engine)() as db:
        for name, roles, endpoint, extension, display in (
                ("op1", {"operator"}, "op01", None, "青木 オペレーター"),
                ("staff1", {"staff"}, None, "2001", "佐藤 戸籍係"),
                ("sup1", {"supervisor"}, None, None, "鈴木 監督者")):
            user = accounts.create_user(db, username=name, tenant_id="city", roles=roles,
                                        password=PASSWORD, hasher=hasher, settings=settings,
                                        display_name=display, sip_endpoint=endpoint,
                                        extension=extension, must_change_password=False)
            db.add(user)
        db.commit()
    engine.dispose()
    return settings


@pytest.fixture
def web_proc(processes: Processes, web_settings: Settings) -> Iterator[tuple[str, Proc]]:
    proc: Proc = processes.start("web", "web.main", web_settings)
    base = f"http://127.0.0.1:{web_settings.web.port}"

    def up() -> bool:
        assert proc.alive(), proc.output()
        return httpx.get(f"{base}/health.json", timeout=2).status_code in (200, 503)

    wait_until(up, 30, "the web app did not start")
    yield base, proc


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                      headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path: Path, artifacts_dir: Path) -> Iterator[Any]:
    folder = tmp_path / "screenshots"
    folder.mkdir()

    def take(page: Any, name: str) -> None:
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    yield take
    keep = artifacts_dir / "console-e2e"
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(folder, keep)


def sign_in(browser: Any, base: str, username: str) -> Any:
    context = browser.new_context(viewport=VIEWPORT, locale="ja-JP")
    page = context.new_page()
    page.goto(f"{base}/auth/login")
    page.fill("#f-username", username)
    page.fill("#f-password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/")
    return page


def transfer_events(settings: Settings, call_id: str) -> list[Any]:
    client = redis.Redis.from_url(settings.redis.url)
    try:
        out = []
        for _sid, body in read_events(client, Keys(settings.redis.prefix)):
            event = decode(body)
            if event.type == "call.transfer" and \
                    event.call_id == call_id:  # type: ignore[attr-defined]
                out.append(event)
        return out
    finally:
        client.close()


def current_call(settings: Settings) -> Call | None:
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as db:
            return db.query(Call).filter(Call.agent == "op01").order_by(
                Call.arrived_at.desc()).first()
    finally:
        engine.dispose()


def test_operator_staff_and_supervisor_consoles(
        asterisk: Any, ari_app: Proc, web_settings: Settings, phones: Phones,
        browser: Any, shots: Any, tmp_path: Path, web_proc: tuple[str, Proc]) -> None:
    settings = web_settings
    web, web_log = web_proc
    operator = sign_in(browser, web, "op1")
    staff = sign_in(browser, web, "staff1")
    supervisor = sign_in(browser, web, "sup1")

    # supervisor: the wallboard, nothing answered yet
    supervisor.goto(f"{web}/supervisor/wallboard")
    board = '.board[data-service="citizens"]'
    assert supervisor.inner_text(f"{board} .kpi-answered") == "0"
    wait_until(lambda: supervisor.get_attribute("#console", "data-live") == "open", 10,
               "the wallboard's event stream did not open")
    shots(supervisor, "1-wallboard-before")

    # operator: log in to the queue and be ready
    operator.goto(f"{web}/operator/")
    assert "現在通話はありません" in operator.inner_text("#case-area")
    wait_until(lambda: operator.get_attribute("#console", "data-live") == "open", 10,
               "the console's event stream did not open")
    operator.click("#btn-login")
    try:
        operator.wait_for_selector('#agent-state .state-badge[data-state="ready"]',
                                   timeout=15000)
    except Exception as exc:
        shots(operator, "failed-operator-ready")
        raise AssertionError(f"operator not ready: {operator.inner_text('#live-status')!r} "
                             f"{operator.inner_text('#agent-state')!r}\n"
                             f"{ari_app.output()[-2000:]}\n{web_log.output()[-3000:]}"
                             ) from exc
    shots(operator, "2-operator-ready")
    staff.goto(f"{web}/staff/")
    wait_until(lambda: staff.get_attribute("#console", "data-live") == "open", 10,
               "the staff page's event stream did not open")

    # a citizen calls; the operator's phone answers; the case card opens
    caller = run_sipp(settings, "uac_hangup_on_cue.xml", DID, tmp_path / "caller",
                      duration_ms=45000, background=True,
                      keys={"caller": CALLER_NUMBER, "rtp_port": "4000"})
    assert isinstance(caller, subprocess.Popen)
    try:
        operator.wait_for_selector("#case-card", timeout=20000)
        assert CALLER_NUMBER in operator.inner_text("#case-card .caller-number")
        assert "電話" in operator.inner_text("#case-card .case-facts")
        call = current_call(settings)
        assert call is not None
        shots(operator, "3-operator-case-card")

        # the operator writes a note
        operator.fill("#case-card .note-form textarea", "転入届の記入方法について質問あり")
        operator.click("#btn-note")
        operator.wait_for_selector(".notes-list .note-text:has-text('転入届の記入方法')",
                                   timeout=5000)

        # the wallboard counts the answered call and shows the operator on a call
        supervisor.wait_for_function(
            "sel => document.querySelector(sel).textContent.trim() === '1'",
            arg=f"{board} .kpi-answered", timeout=15000)
        supervisor.wait_for_selector(f'{board} tr[data-endpoint="op01"] '
                                     '.state-badge[data-state="in_call"]', timeout=15000)
        shots(supervisor, "4-wallboard-call-answered")

        # attended transfer to extension 2001 with an escalation note
        operator.select_option("#case-card select[name=target]", "2001")
        operator.check("#case-card input[name=kind][value=attended]")
        operator.fill("#case-card textarea[name=note]", "戸籍の届出。FAQ案内済み、詳細確認が必要")
        operator.click("#btn-transfer")
        staff.wait_for_selector(".escalation-note:has-text('詳細確認が必要')", timeout=10000)
        shown_at = time.time()
        steps = transfer_events(settings, call.id)
        assert steps and steps[0].target == "2001"  # type: ignore[attr-defined]
        first = min(datetime.timestamp(e.at) for e in steps)
        assert shown_at - first < 1.0, f"case card shown {shown_at - first:.2f} s after"
        card = staff.inner_text("#case-card")
        assert CALLER_NUMBER in card and "転入届の記入方法" in card  # the operator's note
        # the staff page's recent transfers list has the call it shows, without a reload
        staff.wait_for_selector(f'#staff-transfers tr[data-call="{call.id}"]', timeout=5000)
        shots(staff, "5-staff-case-card")

        # the staff member adds a note; the operator sees it without reloading
        staff.fill("#case-card .note-form textarea", "職員に引き継ぎました。郵送で対応します")
        staff.click("#btn-note")
        operator.wait_for_selector(".note-staff .note-text:has-text('郵送で対応します')",
                                   timeout=5000)
        wait_until(lambda: any(e.result == "consulting"  # type: ignore[attr-defined]
                               for e in transfer_events(settings, call.id)), 20,
                   "the consultation with the staff member did not start")
        operator.click("#btn-transfer-complete")
        wait_until(lambda: any(e.result == "answered"  # type: ignore[attr-defined]
                               for e in transfer_events(settings, call.id)), 15,
                   "the transfer was not completed")
        # the operator's card follows the transfer: handed over, nothing left to complete
        operator.wait_for_selector("#case-card .case-status:has-text('職員に引き継ぎ済み')",
                                   timeout=5000)
        assert operator.locator("#btn-transfer-complete").count() == 0
        shots(operator, "6-operator-after-transfer")

        # wrap-up
        operator.select_option("#case-card select[name=disposition]", "escalated")
        operator.fill("#case-card textarea[name=notes]", "戸籍係へ引き継ぎ")
        operator.click("#btn-wrapup")
        operator.wait_for_selector("#live-status:has-text('保存しました')", timeout=5000)
        hang_up(caller)  # the citizen puts the phone down
        assert caller.wait(90) == 0
    finally:
        if caller.poll() is None:
            caller.terminate()
            caller.wait(10)
    saved = wait_until(lambda: (c := current_call(settings)) and c.status == "ended" and c,
                       15, "the call did not end")
    assert saved.disposition == "escalated" and saved.notes == "戸籍係へ引き継ぎ"
    supervisor.reload()
    assert supervisor.inner_text(f"{board} .kpi-answered") == "1"
    shots(supervisor, "7-wallboard-after")
    shots(staff, "8-staff-after")
