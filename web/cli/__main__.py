"""``python -m web.cli``: the commands of ``web.cli`` without the ``flask`` script.

The ``kiosk`` commands run without building the app (no database, no app secrets); the
others build it with ``web.create_app``.
"""

from __future__ import annotations

from flask.cli import FlaskGroup

from web import create_app
from web.cli import kiosk

cli = FlaskGroup(create_app=create_app, add_default_commands=False)
cli.add_command(kiosk)  # found without loading the app


def main() -> None:
    cli.main(prog_name="python -m web.cli")


if __name__ == "__main__":
    main()
