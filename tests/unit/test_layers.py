"""The project's floors, read from the source: which package may import which, the call
controller's feature modules below the service that wires them, and module sizes.

Every import counts, also one inside a function or under ``TYPE_CHECKING``: a cycle a
function-local import hides is still a cycle. README.md's folder table says what lives
where; this test keeps it true.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> the project packages it may import (besides itself)
ALLOWED = {
    "common": set(),
    "faq": {"common"},
    "kpi": {"common"},
    "ari_app": {"common"},
    "kiosk_bridge": {"common"},
    "transcriber": {"common", "faq"},
    "web": {"common", "faq", "kpi"},
    "reports": {"common", "faq", "kpi"},
    # tooling: renders the Asterisk configuration ari_app's AMI connection relies on
    "stack": {"common", "ari_app"},
    "kiosk_agent": set(),  # runs on the kiosk PC, alone
}

# ari_app's feature modules: the controller builds them and hands each its collaborators,
# so none of them imports the call service, the dispatcher or the controller
ARI_FEATURES = ("callbacks", "kiosk", "supervision", "survey", "transcription", "transfers")

MAX_LINES = 500
# modules allowed to be longer, and why
LONG_MODULES = {
    "common/settings.py": "every section's dataclass with its defaults, and the product's "
                          "checks of them: one file to look a key up in",
    "faq/services.py": "the approval workflow: each transition with the checks it makes, "
                       "read together as one state machine",
}


def _modules() -> list[Path]:
    return sorted(p for package in ALLOWED for p in (ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_every_package_is_listed() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(ALLOWED), "add the new package to ALLOWED and README.md"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_floors_below_it(package: str) -> None:
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in ALLOWED and top != package and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(sorted(set(wrong)))


@pytest.mark.parametrize("feature", ARI_FEATURES)
def test_no_call_controller_feature_imports_the_floors_above_it(feature: str) -> None:
    names = _imports(ROOT / "ari_app" / f"{feature}.py")
    above = {n for n in names if n.split(".")[:2] in (["ari_app", "services"],
                                                      ["ari_app", "stasis"],
                                                      ["ari_app", "controller"])}
    assert not above, above


def test_modules_stay_short_enough_to_read() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    unexplained = {path: n for path, n in long.items() if path not in LONG_MODULES}
    assert not unexplained, f"over {MAX_LINES} lines: {unexplained}"
    assert set(LONG_MODULES) <= set(long), "LONG_MODULES names a module that got shorter"
