"""Per-app resources: settings, SQL engine and scoped session, Redis client, key names.

Like flaskr's ``db.py``: ``init_app`` wires everything into the app once, views reach the
resources through the small accessors below, and the SQLAlchemy session is removed in
``teardown_appcontext`` (Flask's SQLAlchemy pattern).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from common.db import init_schema, make_engine, session_factory
from common.keys import Keys
from common.settings import Settings

EXTENSION_KEY = "madoguchi"


@dataclass
class Resources:
    """Everything a request may need that outlives the request."""

    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    session: scoped_session[Session]
    redis: redis.Redis
    keys: Keys


def init_app(app: Flask, settings: Settings) -> Resources:
    engine = make_engine(settings.database_url)
    init_schema(engine)
    factory = session_factory(engine)
    res = Resources(
        settings=settings,
        engine=engine,
        factory=factory,
        session=scoped_session(factory),
        redis=redis.Redis.from_url(settings.redis.url, socket_timeout=5,
                                   socket_connect_timeout=2),
        keys=Keys(settings.redis.prefix),
    )
    app.extensions[EXTENSION_KEY] = res

    @app.teardown_appcontext
    def _remove_session(_exc: BaseException | None) -> None:
        res.session.remove()

    return res


def resources(app: Flask | None = None) -> Resources:
    target = app if app is not None else current_app
    res: Resources = target.extensions[EXTENSION_KEY]
    return res


def get_db() -> Session:
    """The request's SQLAlchemy session (removed when the app context ends)."""
    return resources().session()


def get_redis() -> redis.Redis:
    return resources().redis


def get_keys() -> Keys:
    return resources().keys


def get_settings() -> Settings:
    return resources().settings
