"""Who the citizen of a contact is, and their earlier contacts (the case card's list).

A phone call is known by its number. A kiosk call's ``caller`` is the kiosk, which every
citizen at that community centre shares, so it is known only by ``Call.citizen_ref``: a
keyed hash of the card's name and birth date after a card read the citizen agreed to, or
a phone number they stated and agreed to be looked up by.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from common.models.calls import Call

#: Caller ids that name nobody: a withheld or unknown number matches no earlier contact.
NO_NUMBER = ("", "anonymous", "unknown")


def citizen_ref_for_card(secret: str, name: str, birth: str) -> str:
    """The card read's pseudonym of the citizen: a hash of the name (spaces and width
    folded) and birth date, keyed with the site's secret so that it cannot be reversed
    by trying names. Neither the name nor the date is kept."""
    folded = "".join(unicodedata.normalize("NFKC", name).split())
    mac = hmac.new(secret.encode(), f"card\0{folded}\0{birth}".encode(), hashlib.sha256)
    return "card:" + mac.hexdigest()[:40]


def phone_number(raw: str) -> str | None:
    """A phone number as the trunk presents it (digits, or + and digits), from what an
    operator typed (full-width digits, hyphens, spaces and brackets are fine); None when
    it is not one."""
    text = unicodedata.normalize("NFKC", raw).strip()
    for ch in " -()‐−ー":
        text = text.replace(ch, "")
    plus, digits = (text[:1], text[1:]) if text.startswith("+") else ("", text)
    if not digits.isascii() or not digits.isdigit() or not 10 <= len(digits) <= 15:
        return None
    return plus + digits


def _same_citizen(call: Call) -> Any:
    """The condition for the other contacts of ``call``'s citizen, or None when it is not
    known who they are. A phone call is matched by its number (and kiosk calls whose
    citizen stated that number); a kiosk call only by its ``citizen_ref``, never by the
    kiosk, which every citizen at that community centre shares."""
    if call.channel == "kiosk":
        ref = call.citizen_ref
        if not ref:
            return None
        if ref.startswith("tel:"):
            return or_(Call.citizen_ref == ref,
                       (Call.channel == "phone") & (Call.caller == ref[4:]))
        return Call.citizen_ref == ref
    if (call.caller or "").lower() in NO_NUMBER:
        return None
    return or_((Call.channel == "phone") & (Call.caller == call.caller),
               Call.citizen_ref == "tel:" + call.caller)


def earlier_contacts(session: Session, call: Call, days: int, limit: int = 10) -> list[Call]:
    """The same citizen's other contacts in the last ``days`` days (newest first), by
    phone or at a kiosk (``_same_citizen``)."""
    same = _same_citizen(call)
    if same is None:
        return []
    since = call.arrived_at - timedelta(days=days)
    return list(session.scalars(
        select(Call).where(Call.tenant_id == call.tenant_id, same,
                           Call.id != call.id, Call.arrived_at >= since,
                           Call.arrived_at <= call.arrived_at)
        .order_by(Call.arrived_at.desc()).limit(limit)))


def set_citizen_ref(session: Session, call: Call, ref: str) -> None:
    call.citizen_ref = ref
    session.commit()
