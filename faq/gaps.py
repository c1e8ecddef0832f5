"""Gap finder: conversations in which no FAQ item was used become candidate drafts.

For each conversation (a call or kiosk session with its caller-side text) where no
item was recorded as ``used`` or ``resolved``, the caller's question is extracted,
personal data is masked (``common.masking``), near-duplicates are merged, and a draft
FAQ item is created in the approval workflow with a placeholder answer. Such drafts
are not requested by the city, so they appear in "changes to report" once submitted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.events import Event
from common.masking import mask_personal_data
from common.models.calls import Call
from common.models.faq import FaqItem, FaqRevision
from faq import services, usage
from faq.content import DRAFTING_ROLES, Actor, Content
from faq.exceptions import PermissionDenied
from faq.textnorm import normalize, readable

PLACEHOLDER_ANSWER = "（回答を記入してください。問い合わせから自動で作った候補です。）"
GAP_CATEGORY = "未分類（問い合わせから抽出）"

_LABEL = re.compile(r"\[(氏名|日付|個人番号|電話番号|郵便番号|住所|数字)\]")
# Where a spoken question ends ("...できます か", "...教えて ください").
_QUESTION_END = re.compile(
    r"(?:ですか|ますか|でしょうか|ませんか|か|ください|たいです|たい)(?=\s|$)")
_SENTENCE = re.compile(r"[。？?！!\n]+")
_CUE = re.compile(
    r"(ですか|ますか|でしょうか|ませんか|んですけど|んですが|んですけれども|たいんです|"
    r"知りたい|教えて(?:ください|もらえ)?|どうすれば|どうしたら|いいですか|いくら|いつ|どこ|"
    r"なんですか|の\s*$|か\s*$)")


@dataclass(frozen=True)
class Conversation:
    call_id: str
    tenant: str
    text: str  # caller-side transcript or the operator's notes


@dataclass(frozen=True)
class GapCandidate:
    question: str  # extracted and masked
    call_ids: tuple[str, ...]
    item_id: int | None = None  # the draft created for it


@dataclass(frozen=True)
class GapReport:
    examined: int
    without_use: int
    candidates: tuple[GapCandidate, ...] = ()
    events: tuple[Event, ...] = field(default_factory=tuple)


def extract_question(text: str, max_chars: int = 120) -> str:
    """The caller's question: the first sentence with a question cue (or the first
    sentence), fillers dropped, masked, at most ``max_chars`` characters."""
    sentences = [s.strip() for s in _SENTENCE.split(text) if s.strip()]
    if not sentences:
        return ""
    chosen = next((s for s in sentences if _CUE.search(s)), sentences[0])
    end = _QUESTION_END.search(chosen, pos=min(6, len(chosen)))
    if end is not None:
        chosen = chosen[:end.end()]
    # Mask before dropping spaces (word boundaries help); NFKC then folds the labels'
    # brackets, which are restored.
    question = _LABEL.sub(r"［\1］", readable(mask_personal_data(chosen))).strip()
    return question[:max_chars]


def conversations_from_calls(session: Session, *, tenant: str, since: datetime,
                             until: datetime) -> list[Conversation]:
    """Ended calls of ``tenant`` in [since, until) with their notes as the text."""
    stmt = (select(Call.id, Call.notes)
            .where(Call.tenant_id == tenant, Call.arrived_at >= since, Call.arrived_at < until,
                   Call.status == "ended"))
    return [Conversation(call_id=cid, tenant=tenant, text=notes or "")
            for cid, notes in session.execute(stmt)]


def find_gaps(session: Session, actor: Actor, conversations: Iterable[Conversation], *,
              create_drafts: bool = True, min_chars: int = 6) -> GapReport:
    """Turn conversations without a used FAQ item into candidate drafts."""
    if not actor.roles.intersection(DRAFTING_ROLES):
        raise PermissionDenied("ギャップ検出には編集者・監督者・管理者のいずれかの権限が必要です。")
    convs = [c for c in conversations if c.tenant == actor.tenant]
    used = usage.calls_with_use(session, [c.call_id for c in convs])
    gaps = [c for c in convs if c.call_id not in used]
    grouped: dict[str, tuple[str, list[str]]] = {}
    for conv in gaps:
        question = extract_question(conv.text)
        if len(normalize(question)) < min_chars:
            continue
        key = normalize(question)
        if key in grouped:
            grouped[key][1].append(conv.call_id)
        else:
            grouped[key] = (question, [conv.call_id])
    existing = _existing_titles(session, actor.tenant)
    candidates: list[GapCandidate] = []
    events: list[Event] = []
    for key, (question, call_ids) in grouped.items():
        if key in existing:
            continue
        item_id: int | None = None
        if create_drafts:
            change = services.create_item(
                session, actor,
                Content.make(question, PLACEHOLDER_ANSWER, category=GAP_CATEGORY),
                reason=f"FAQ未使用の問い合わせ {len(call_ids)} 件から抽出（通話 "
                       f"{', '.join(call_ids[:5])}）",
                requested_by_city=False)
            item_id = change.item.id
            events.extend(change.events)
        candidates.append(GapCandidate(question=question, call_ids=tuple(call_ids),
                                       item_id=item_id))
    return GapReport(examined=len(convs), without_use=len(gaps),
                     candidates=tuple(candidates), events=tuple(events))


def _existing_titles(session: Session, tenant: str) -> set[str]:
    stmt = (select(FaqRevision.title)
            .join(FaqItem, FaqItem.head_revision_id == FaqRevision.id)
            .where((FaqItem.tenant_id == tenant) | FaqItem.tenant_id.is_(None)))
    return {normalize(t) for t in session.scalars(stmt)}
