"""Shared fixtures: real Redis, real SQL databases (SQLite always, PostgreSQL when
reachable), and the settings object pointed at them.

Integration fixtures (a real Asterisk, ari_app, SIPp) live in tests/integration/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from common.settings import Settings, load_settings, settings_override
from stack import loopback

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PG_ADMIN_URL = os.environ.get("MADOGUCHI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, timeout: float, message: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value; fail with ``message``
    (``stack.loopback.wait_until``, as a test failure)."""
    try:
        return loopback.wait_until(predicate, timeout, message, interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A private real redis-server on a free loopback port for the whole session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make setup` "
                    "(apt-get install redis-server)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="mado-redis-")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", workdir, "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    wait_until(lambda: client.ping(), 10, "redis-server did not start")
    client.close()
    yield url
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis, empty before and after each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield redis_server
    client.flushdb()
    client.close()


def _postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for the session (dropped afterwards)."""
    if not _postgres_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} (set MADOGUCHI_TEST_PG)")
    name = f"mado_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: The SQL engines the suite runs on. Data-layer tests run on both; an integration module
#: names the one it runs on with ``pytest.mark.engine(...)`` (docs/testing.md, "Matrix").
ENGINES = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engines", default="marked", metavar="LIST",
        help="SQL engines for tests that use a database: 'marked' (default: both, or the "
             "module's pytest.mark.engine), or a comma-separated list of "
             f"{', '.join(ENGINES)} to run every such test on each (the full PostgreSQL "
             "pass: --engines=postgresql)")


def selected_engines(config: pytest.Config, marker: pytest.Mark | None) -> tuple[str, ...]:
    """The engines a test that uses ``db_url`` runs on."""
    chosen = str(config.getoption("--engines"))
    if chosen != "marked":
        engines = tuple(e.strip() for e in chosen.split(",") if e.strip())
    elif marker is not None:
        engines = tuple(marker.args)
    else:
        engines = ENGINES
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise pytest.UsageError(
            f"unknown SQL engine {unknown or chosen!r}: use {' or '.join(ENGINES)}")
    return engines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that needs ``db_url`` once per selected engine (ids [sqlite],
    [postgresql])."""
    if "db_url" not in metafunc.fixturenames:
        return
    engines = selected_engines(metafunc.config, metafunc.definition.get_closest_marker("engine"))
    metafunc.parametrize(
        "db_url",
        [pytest.param(e, id=e, marks=[pytest.mark.postgres] if e == "postgresql" else [])
         for e in engines],
        indirect=True)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of the engine in ``request.param``: a SQLite file or a
    PostgreSQL database (both real)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite3'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    # one statement empties the session's database (tables, sequences, types); the next
    # test empties it again and the session drops the database at its end
    with psycopg.connect(url.replace("+psycopg", "", 1), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    yield url


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, db_url: str) -> Settings:
    """Settings on embedded defaults, pointed at the test Redis and database."""
    base = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data")})
    return settings_override(base, redis={"url": redis_url}, database={"url": db_url})
