"""Sample content: a starter set of citizens' section FAQ items.

SAMPLE CONTENT — the items in faq/data/sample_faq.csv are realistic examples written
for a fictional city (fees, hours and addresses are illustrative). The city replaces
them with its own answers; loading them creates drafts that still go through the
city's approval like any other change.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from faq.content import Actor
from faq.transfer import ImportResult, import_csv

SAMPLE_CSV = Path(__file__).resolve().parent / "data" / "sample_faq.csv"
"""The sample FAQ in the import format (UTF-8 with BOM); see docs/faq.md for columns."""


def sample_csv() -> bytes:
    return SAMPLE_CSV.read_bytes()


def load_sample(session: Session, actor: Actor, *, shared: bool = True) -> ImportResult:
    """Import the sample FAQ as drafts: shared by all tenants (needs the administrator
    role) or, with ``shared=False``, for the actor's tenant."""
    data = sample_csv()
    if not shared:
        text = data.decode("utf-8-sig").replace(",共通,", ",,")
        data = text.encode("utf-8-sig")
    return import_csv(session, actor, data, requested_by_city=True,
                      default_reason="サンプルコンテンツの読み込み")
