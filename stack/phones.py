"""Print every phone (operators and staff) with its SIP credentials: ``python -m stack.phones``."""

from __future__ import annotations

import sys

from common.settings import SettingsError, load_settings
from stack.render import phones


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    ast = settings.asterisk
    print(f"SIP server {ast.sip_bind}:{ast.sip_port} (UDP), codecs G.711 u-law/A-law")
    for phone in phones(settings):
        dept = f" department={phone.department}" if phone.department else ""
        print(f"{phone.kind:<8} user={phone.id:<10} extension={phone.extension:<6} "
              f"password={phone.password}{dept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
