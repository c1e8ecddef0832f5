"""``python -m web.i18n``: the developer tool that rebuilds the Japanese catalog."""

from __future__ import annotations

import subprocess  # nosec B404 # runs pybabel, fixed argv
import sys
from pathlib import Path


def _rebuild() -> None:  # pragma: no cover - developer tool
    """Extract messages, merge them into the Japanese catalog and compile it."""
    root = Path(__file__).resolve().parents[1]
    pot = root / "translations" / "messages.pot"
    cfg = root / "babel.cfg"
    babel = [sys.executable, "-m", "babel.messages.frontend"]
    subprocess.run([*babel, "extract", "-F", str(cfg), "-k", "_l", "-o", str(pot),  # nosec B603 # pybabel, fixed argv
                    "--no-location", "--project", "Madoguchi",
                    "--copyright-holder", "Madoguchi contributors", str(root)], check=True)
    subprocess.run([*babel, "update", "-i", str(pot), "-d", str(root / "translations"),  # nosec B603 # pybabel, fixed argv
                    "-l", "ja", "--no-fuzzy-matching"], check=True)
    subprocess.run([*babel, "compile", "-d", str(root / "translations"), "-l", "ja"],  # nosec B603 # pybabel, fixed argv
                   check=True)
    pot.unlink()


if __name__ == "__main__":  # pragma: no cover
    _rebuild()
