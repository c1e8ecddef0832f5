"""A supervisor may have a softphone (for listen / whisper / barge); others may not."""

from __future__ import annotations

from argon2 import PasswordHasher

from common.db import init_schema, make_engine, session_factory, transaction
from common.settings import Settings
from web.accounts import create_user

HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def test_supervisor_gets_a_softphone_approver_does_not(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    init_schema(engine)
    try:
        with transaction(session_factory(engine)) as db:
            sv = create_user(db, username="sv-phone", tenant_id="city", roles={"supervisor"},
                             password="correct horse battery", hasher=HASHER,
                             settings=settings, sip_endpoint="op07")
            ap = create_user(db, username="ap-phone", tenant_id="city", roles={"approver"},
                             password="correct horse battery", hasher=HASHER,
                             settings=settings, sip_endpoint="op06")
            bad = create_user(db, username="sv-bad", tenant_id="city", roles={"supervisor"},
                              password="correct horse battery", hasher=HASHER,
                              settings=settings, sip_endpoint="nope")
            assert (sv.sip_endpoint, sv.extension) == ("op07", "1007")
            assert ap.sip_endpoint is None and ap.extension is None
            assert bad.sip_endpoint is None
    finally:
        engine.dispose()
