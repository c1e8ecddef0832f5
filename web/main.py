"""Development server: ``python -m web.main`` (production runs ``gunicorn web.wsgi:app``)."""

from __future__ import annotations

import logging

from werkzeug.serving import run_simple

from common.process import log_settings
from common.settings import load_settings
from web import create_app

logger = logging.getLogger(__name__)


def main() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    log_settings("web", settings)
    app = create_app(settings=settings)
    logger.info("web listening on http://%s:%d/", settings.web.bind, settings.web.port)
    # threaded: Server-Sent Events keep a request open per listener.
    run_simple(settings.web.bind, settings.web.port, app, threaded=True,
               use_reloader=False, use_debugger=False)


if __name__ == "__main__":
    main()
