"""Lets ``python bench/NAME.py`` run with any Python 3: the benchmarks need the project's
packages and its venv's libraries, so a plain interpreter re-runs the script inside
``.venv`` (stdlib only here, since it runs before either is importable).

Each benchmark starts with::

    if not __package__:  # run as `python bench/NAME.py`
        import _venv
        _venv.ensure("httpx", "sqlalchemy")

Imported as ``bench.NAME`` (the tests), the package is already importable and nothing
happens.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"


def ensure(*modules: str, fix: str = "run scripts/setup.sh test") -> None:
    """Put the project on ``sys.path``, re-run this script with the venv's Python when
    another one runs it, and exit saying how to fix it when one of ``modules`` cannot be
    imported."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    python = VENV / "bin" / "python"
    if python.exists() and Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(str(python), [str(python), *sys.argv])
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"{', '.join(missing)} cannot be imported: {fix}")
