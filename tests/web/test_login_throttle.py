"""Log-in throttling (web.accounts.LoginThrottle, web.auth): nobody can lock a user out
by failing on purpose, a computer that keeps failing waits whatever names it tries, and
an unknown name cannot be told from a known one by status, page, headers or work done."""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from common.settings import Settings
from tests.web.conftest import FAST_ARGON2, PASSWORD, TEMPLATE_CACHE, MakeUser, audit_rows, csrf
from web import accounts, create_app
from web.db import resources

CSRF_VALUE = re.compile(r'(name="csrf_token" value=|name="csrf-token" content=)"[^"]+"')


def _client(app: Flask, addr: str) -> FlaskClient:
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = addr
    return c


def _post_login(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    token = csrf(client, "/auth/login")
    return client.post("/auth/login", data={"username": username, "password": password,
                                            "csrf_token": token})


def _page(resp: Any, username: str) -> str:
    """The answer's body, without what differs by nature (the session's CSRF token, the
    name the user typed, which the form shows back)."""
    return CSRF_VALUE.sub("CSRF", resp.get_data(as_text=True)).replace(username, "NAME")


def _answer(resp: Any, username: str) -> tuple[int, str | None, str, str]:
    return (resp.status_code, resp.headers.get("Retry-After"), resp.content_type,
            _page(resp, username))


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The throttle's clock, frozen (``frozen[0] += s`` moves it on)."""
    now = [time.time()]
    monkeypatch.setattr(accounts, "clock", lambda: now[0], raising=False)
    return now


# -- through the log-in page ---------------------------------------------------------
def test_nobody_can_lock_out_a_user_from_another_computer(app: Flask, make_user: MakeUser,
                                                           frozen: list[float]) -> None:
    make_user("taro")
    attacker = _client(app, "203.0.113.9")
    statuses = []
    for _ in range(40):  # waits out every back-off, as a patient attacker would
        statuses.append(_post_login(attacker, "taro", "guess-password-1").status_code)
        frozen[0] += 1000
    assert set(statuses) == {401}
    assert _post_login(attacker, "taro", "guess-password-2").status_code == 401
    # the attacker's own next try (even with the right password) waits...
    assert _post_login(attacker, "taro").status_code == 429
    # ... the operator's usual computer does not, nor a new one
    for addr in ("10.0.0.21", "10.0.0.99"):
        resp = _post_login(_client(app, addr), "taro")
        assert resp.status_code == 302 and resp.headers["Location"] == "/"


def test_a_failing_computer_waits_whatever_names_it_tries(app: Flask, make_user: MakeUser,
                                                          frozen: list[float]) -> None:
    make_user("taro")
    make_user("jiro")
    shared = _client(app, "198.51.100.4")
    for i in range(20):
        assert _post_login(shared, f"ghost{i}", "wrong-password-1").status_code == 401
    for name in ("taro", "jiro", "ghost0", "someone-new"):  # right passwords too
        resp = _post_login(shared, name)
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "5"
    frozen[0] += 5
    assert _post_login(shared, "ghost0", "wrong-password-1").status_code == 401
    frozen[0] += 9  # the back-off doubled: 10 s after the 21st failure
    assert _post_login(shared, "taro").headers["Retry-After"] == "1"
    frozen[0] += 1
    assert _post_login(shared, "taro").status_code == 302
    assert _post_login(_client(app, "198.51.100.5"), "jiro").status_code == 302
    rows = audit_rows(app, action="auth.login")
    assert sum(r.reason == "throttled" for r in rows) == 5


def test_the_back_off_ends_and_grows(app: Flask, make_user: MakeUser,
                                     frozen: list[float]) -> None:
    make_user("taro")
    c = _client(app, "192.0.2.7")
    for _ in range(5):
        assert _post_login(c, "taro", "wrong-password-1").status_code == 401
    assert _post_login(c, "taro").headers["Retry-After"] == "5"
    frozen[0] += 5
    assert _post_login(c, "taro", "wrong-password-1").status_code == 401
    assert _post_login(c, "taro").headers["Retry-After"] == "10"
    frozen[0] += 10
    assert _post_login(c, "taro").status_code == 302  # the right password, once waited


def test_known_and_unknown_names_get_the_same_answers(app: Flask, make_user: MakeUser,
                                                      frozen: list[float]) -> None:
    make_user("taro")
    known, unknown = _client(app, "192.0.2.10"), _client(app, "192.0.2.11")
    first = [(_answer(_post_login(known, "taro", "wrong-password-1"), "taro"),
              _answer(_post_login(unknown, "nobody", "wrong-password-1"), "nobody"))
             for _ in range(5)]
    for a, b in first:
        assert a == b and a[0] == 401 and a[1] is None
        assert "ユーザー名またはパスワードが正しくありません。" in a[3]
    # throttled: the right password of the known name against a guess for the unknown one
    a = _answer(_post_login(known, "taro"), "taro")
    b = _answer(_post_login(unknown, "nobody", "wrong-password-1"), "nobody")
    assert a == b and a[0] == 429 and a[1] == "5"
    assert "このコンピューターからのログイン失敗が多すぎます。" in a[3]
    # the same from a computer that has not failed: each name gets its password checked
    a = _answer(_post_login(_client(app, "192.0.2.12"), "taro", "wrong-password-1"), "taro")
    b = _answer(_post_login(_client(app, "192.0.2.13"), "nobody", "wrong-password-1"),
                "nobody")
    assert a == b and a[0] == 401


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(**FAST_ARGON2)
        self.calls: Counter[str] = Counter()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.calls["hash"] += 1
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.calls["verify"] += 1
        return super().verify(hash, password)


@pytest.fixture
def work(app: Flask, rds: redis.Redis) -> Iterator[Any]:
    """Measures one request's work: hashing, SQL statements, Redis commands."""
    hasher = CountingHasher()
    app.extensions["madoguchi_hasher"] = hasher
    engine = resources(app).engine
    statements: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(re.sub(r"\s+", " ", statement))

    event.listen(engine, "before_cursor_execute", on_execute)

    def measure(client: FlaskClient, username: str, password: str) -> tuple[Any, ...]:
        token = csrf(client, "/auth/login")
        hasher.calls.clear()
        statements.clear()
        rds.config_resetstat()
        resp = client.post("/auth/login", data={"username": username, "password": password,
                                                "csrf_token": token})
        stats = {k: v["calls"] for k, v in rds.info("commandstats").items()}
        return resp.status_code, dict(hasher.calls), list(statements), stats

    yield measure
    event.remove(engine, "before_cursor_execute", on_execute)


def test_known_and_unknown_names_cost_the_same_work(app: Flask, make_user: MakeUser,
                                                    work: Any, frozen: list[float]) -> None:
    make_user("taro")
    work(_client(app, "192.0.2.30"), "warm-up", "wrong-password-1")  # the dummy hash
    known, unknown = _client(app, "192.0.2.31"), _client(app, "192.0.2.32")
    for _ in range(5):
        a = work(known, "taro", "wrong-password-1")
        b = work(unknown, "nobody", "wrong-password-1")
        assert a[0] == b[0] == 401 and a[1] == b[1] == {"verify": 1}
        assert a[2] == b[2] and a[3] == b[3]
        assert any(s.startswith("UPDATE users") for s in a[2])
    a, b = work(known, "taro", PASSWORD), work(unknown, "nobody", "wrong-password-1")
    assert a[0] == b[0] == 429 and a[1] == b[1] == {}  # no hashing when throttled
    assert a[2] == b[2] and a[3] == b[3]


def test_the_audit_says_who_and_what_never_the_password(app: Flask, make_user: MakeUser,
                                                        rds: redis.Redis,
                                                        frozen: list[float]) -> None:
    user = make_user("taro")
    c = _client(app, "192.0.2.40")
    for _ in range(5):
        _post_login(c, "taro", "Secret-Guess-99")
        _post_login(c, "hanako-x", "Secret-Guess-99")
    _post_login(c, "taro", "Secret-Guess-99")
    rows = audit_rows(app, action="auth.login")
    assert [r.reason for r in rows[-3:]] == ["locked_now", "unknown_user", "locked"]
    assert rows[-1].outcome == "denied" and rows[-1].object_id == str(user.id)
    assert {r.remote_addr for r in rows} == {"192.0.2.40"}
    assert all(r.actor in ("", "taro") for r in rows)
    for r in rows:
        assert "Secret-Guess" not in " ".join(str(v) for v in vars(r).values())
    keys = b" ".join(rds.keys("mado:login_fail:*"))
    assert b"hanako" not in keys and b"taro" not in keys and b"Secret" not in keys


def test_the_account_shows_its_lock_and_an_unlock_lifts_it(app: Flask,
                                                            admin_client: FlaskClient,
                                                            make_user: MakeUser,
                                                            frozen: list[float]) -> None:
    target = make_user("taro")
    c = _client(app, "192.0.2.50")
    for _ in range(7):
        _post_login(c, "taro", "wrong-password-1")
        frozen[0] += 100
    frozen[0] -= 100
    assert "ロック中" in admin_client.get(f"/admin/users/{target.id}").get_data(as_text=True)
    assert _post_login(c, "taro").status_code == 429
    admin_client.post(f"/admin/users/{target.id}/unlock",
                      data={"csrf_token": csrf(admin_client)})
    assert _post_login(c, "taro").status_code == 302
    # the unlock started the count afresh: four more failures do not lock again
    c2 = _client(app, "192.0.2.51")
    for _ in range(4):
        assert _post_login(c2, "taro", "wrong-password-1").status_code == 401
    assert _post_login(c2, "taro").status_code == 302


def test_the_totp_step_is_throttled_like_the_password(app: Flask, make_user: MakeUser,
                                                      frozen: list[float]) -> None:
    make_user("taro", totp_secret=accounts.new_totp_secret())
    c = _client(app, "192.0.2.60")
    assert _post_login(c, "taro").headers["Location"] == "/auth/totp"
    token = csrf(c, "/auth/totp")
    statuses = [c.post("/auth/totp", data={"code": "000001", "csrf_token": token}).status_code
                for _ in range(5)]
    assert statuses == [401] * 4 + [302]
    assert _post_login(c, "taro").status_code == 429
    assert _post_login(_client(app, "192.0.2.61"), "taro").headers["Location"] == "/auth/totp"


# -- the throttle itself -------------------------------------------------------------
@pytest.fixture
def gate(web_settings: Settings, rds: redis.Redis) -> accounts.LoginThrottle:
    return accounts.LoginThrottle(rds, "mado", accounts.SecurityPolicy.from_settings(
        web_settings), "test-secret")


def test_the_address_back_off_doubles_up_to_the_longest_refusal(
        gate: accounts.LoginThrottle) -> None:
    t = 1_000_000.0
    for i in range(19):
        gate.failure("10.1.1.1", f"name{i}", now=t)
    assert gate.refusal(gate.state("10.1.1.1", "anyone"), now=t) is None
    waits = []
    for _ in range(12):
        gate.failure("10.1.1.1", "anyone", now=t)
        refusal = gate.refusal(gate.state("10.1.1.1", "anyone"), now=t)
        assert refusal is not None and refusal.scope == "address"
        waits.append(refusal.retry_after)
        t += refusal.retry_after
        assert gate.refusal(gate.state("10.1.1.1", "anyone"), now=t) is None
    assert waits == [5, 10, 20, 40, 80, 160, 320, 640, 900, 900, 900, 900]


def test_the_name_back_off_holds_off_only_the_addresses_that_failed(
        gate: accounts.LoginThrottle) -> None:
    t = 2_000_000.0
    for i in range(5):
        count, until = gate.failure(f"10.2.0.{i}", "taro", now=t)
    assert count == 5 and until is not None and until.timestamp() == t + 5
    for i in range(5):
        refusal = gate.refusal(gate.state(f"10.2.0.{i}", "taro"), now=t)
        assert refusal == accounts.Refusal("account", 5)
        # an administrator's unlock (the account's lock cleared) lets them in
        assert gate.refusal(gate.state(f"10.2.0.{i}", "taro"), account_lock_held=False,
                            now=t) is None
    assert gate.refusal(gate.state("10.2.9.9", "taro"), now=t) is None
    assert gate.refusal(gate.state("10.2.0.1", "jiro"), now=t) is None
    gate.success("10.2.0.1", "taro")
    assert gate.refusal(gate.state("10.2.0.1", "taro"), now=t) is None
    assert gate.refusal(gate.state("10.2.0.2", "taro"), now=t) is not None
    assert gate.refusal(gate.state("10.2.0.2", "taro"), now=t + 5) is None


def test_failures_are_forgotten_after_the_memory(gate: accounts.LoginThrottle,
                                                 rds: redis.Redis) -> None:
    gate.failure("10.3.0.1", "taro")
    ttls = {rds.ttl(k) for k in rds.keys("mado:login_fail:*")}
    assert len(rds.keys("mado:login_fail:*")) == 3
    assert all(3590 <= t <= 3600 for t in ttls)


def test_the_policy_comes_from_the_web_settings(web_settings: Settings) -> None:
    web = dataclasses.replace(web_settings.web, lockout_attempts=3, lockout_minutes=2,
                              throttle_address_attempts=7, throttle_base_seconds=2,
                              throttle_memory_minutes=1)
    policy = accounts.SecurityPolicy.from_settings(dataclasses.replace(web_settings, web=web))
    assert (policy.lockout_attempts, policy.throttle_address_attempts) == (3, 7)
    assert policy.throttle_memory_minutes == 2  # never shorter than the longest refusal
    assert [policy.backoff_seconds(n, 3) for n in range(2, 8)] == [0, 2, 4, 8, 16, 32]
    assert policy.backoff_seconds(50, 3) == 120


def test_a_fresh_app_reads_the_throttle_settings(web_settings: Settings, make_user: MakeUser,
                                                 frozen: list[float]) -> None:
    web = dataclasses.replace(web_settings.web, lockout_attempts=2, throttle_base_seconds=30)
    app = create_app({"TESTING": True, "ARGON2_PARAMETERS": FAST_ARGON2},
                     settings=dataclasses.replace(web_settings, web=web))
    app.jinja_env.bytecode_cache = TEMPLATE_CACHE
    try:
        make_user("taro")
        c = _client(app, "192.0.2.70")
        for _ in range(2):
            assert _post_login(c, "taro", "wrong-password-1").status_code == 401
        assert _post_login(c, "taro").headers["Retry-After"] == "30"
    finally:
        res = resources(app)
        res.session.remove()
        res.engine.dispose()
        res.redis.close()
