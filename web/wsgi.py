"""WSGI entry point for production: ``gunicorn --bind 127.0.0.1:8000 web.wsgi:app``.

Use threaded or gevent workers (``--worker-class gthread --threads 8``) so that
Server-Sent Events do not hold a whole worker each.
"""

from __future__ import annotations

from web import create_app

app = create_app()
