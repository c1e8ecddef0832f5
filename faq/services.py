"""Content and approval workflow of FAQ items and manuals.

Every function takes the caller's SQLAlchemy ``Session`` (the caller owns the
transaction) and, when it changes or reveals unpublished content, an ``Actor`` whose
roles it checks. Mutating functions also take ``expected_version``: the item version
the user's screen was built from; a different current version raises ``StaleVersion``.

Workflow of one revision::

    draft --submit--> submitted --approve--> approved --publish--> published
      ^                   |                                    (previous: superseded)
      +-- revise <-- returned (comment required)

A withdrawal is a revision with ``change="withdraw"`` that goes through the same steps;
publishing it takes the item off the air. Functions return a ``Change`` whose events
the caller publishes after commit (``faq.notify.after_commit``).

Reading functions for operators and kiosks (``get_published``, ``list_published``)
return published content only; unpublished text is reachable only through the
functions that require an editing or approving role.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from common.events import Event, utcnow
from common.faq_events import FaqPublished, FaqRevisionChanged
from common.models.faq import FaqItem, FaqRevision, FaqWorkflowEvent
from faq.content import (
    ADMINISTRATOR,
    APPROVER,
    DRAFTING_ROLES,
    PUBLISHING_ROLES,
    READING_ROLES,
    Actor,
    Content,
    render_diff,
)
from faq.exceptions import (
    FaqError,
    InvalidContent,
    InvalidTransition,
    NoSuchItem,
    PermissionDenied,
    StaleVersion,
)

logger = logging.getLogger(__name__)

STATUS_LABELS = {
    "draft": "下書き", "submitted": "承認待ち", "returned": "差戻し", "approved": "承認済み",
    "published": "公開中", "superseded": "旧版", "withdrawn": "公開停止",
    "discarded": "破棄",
}
PENDING = ("submitted", "approved")


@dataclass(frozen=True)
class RevisionView:
    id: int
    item_id: int
    number: int
    change: str
    status: str
    author: str
    created_at: datetime
    reason: str
    requested_by_city: bool
    acknowledged_by: str | None
    content: Content
    diff: str
    events: tuple[tuple[str, str, datetime, str], ...] = ()  # (action, actor, at, comment)


@dataclass(frozen=True)
class ItemView:
    """The editor's view of one item: head (latest) revision and what is live."""

    id: int
    kind: str
    tenant: str | None
    version: int
    head: RevisionView
    published_revision_id: int | None

    @property
    def status(self) -> str:
        return self.head.status


@dataclass(frozen=True)
class PublishedItem:
    """What operators and kiosks see: published content only."""

    id: int
    kind: str
    tenant: str | None
    revision_id: int
    revision_number: int
    published_at: datetime | None
    content: Content


@dataclass(frozen=True)
class Change:
    item: ItemView
    events: tuple[Event, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------- helpers


def _require(actor: Actor, roles: frozenset[str] | set[str], what: str) -> None:
    if not actor.roles.intersection(roles):
        names = "・".join(sorted(roles))
        raise PermissionDenied(
            f"{what}には権限（{names}）が必要です。ユーザー {actor.user_id} にはありません。",
            user=actor.user_id, needed=sorted(roles))


def _check_tenant(actor: Actor, item: FaqItem) -> None:
    if item.tenant_id is None:
        return
    if item.tenant_id != actor.tenant:
        raise PermissionDenied(
            f"項目 {item.id} は他の団体（{item.tenant_id}）のものです。操作できません。",
            item_id=item.id)


def _load(session: Session, item_id: int, *, lock: bool = False) -> FaqItem:
    stmt = select(FaqItem).where(FaqItem.id == item_id)
    if lock:
        stmt = stmt.with_for_update()
    item = session.scalars(stmt).one_or_none()
    if item is None:
        raise NoSuchItem(item_id)
    return item


def _head(session: Session, item: FaqItem) -> FaqRevision:
    rev = session.get(FaqRevision, item.head_revision_id) if item.head_revision_id else None
    if rev is None:
        raise FaqError(
            f"項目 {item.id} に版がありません（データ不整合）。管理者に連絡してください。")
    return rev


def _check_version(item: FaqItem, expected_version: int) -> None:
    if item.version != expected_version:
        raise StaleVersion(item.id, expected_version, item.version)


def _bump(session: Session, item: FaqItem) -> None:
    item.version = item.version + 1
    try:
        session.flush()
    except StaleDataError:
        raise StaleVersion(item.id, item.version - 1, None) from None


def _log(session: Session, item: FaqItem, rev: FaqRevision, action: str, actor: Actor,
         comment: str = "") -> FaqWorkflowEvent:
    ev = FaqWorkflowEvent(item_id=item.id, revision_id=rev.id, action=action,
                          actor=actor.user_id, at=utcnow(), comment=comment)
    session.add(ev)
    return ev


def _rev_view(session: Session, rev: FaqRevision, with_events: bool = False) -> RevisionView:
    events: tuple[tuple[str, str, datetime, str], ...] = ()
    if with_events:
        rows = session.scalars(select(FaqWorkflowEvent)
                               .where(FaqWorkflowEvent.revision_id == rev.id)
                               .order_by(FaqWorkflowEvent.id)).all()
        events = tuple((e.action, e.actor, e.at, e.comment) for e in rows)
    return RevisionView(
        id=rev.id, item_id=rev.item_id, number=rev.number, change=rev.change,
        status=rev.status, author=rev.author, created_at=rev.created_at, reason=rev.reason,
        requested_by_city=rev.requested_by_city, acknowledged_by=rev.acknowledged_by,
        content=Content.from_row(rev), diff=rev.diff, events=events)


def _item_view(session: Session, item: FaqItem) -> ItemView:
    return ItemView(id=item.id, kind=item.kind, tenant=item.tenant_id, version=item.version,
                    head=_rev_view(session, _head(session, item)),
                    published_revision_id=item.published_revision_id)


def _changed(session: Session, item: FaqItem, rev: FaqRevision, action: str,
             actor: Actor, extra: tuple[Event, ...] = ()) -> Change:
    event = FaqRevisionChanged(item_id=item.id, revision_id=rev.id,
                               tenant=item.tenant_id or "", action=action,
                               actor=actor.user_id, status=rev.status)
    return Change(item=_item_view(session, item), events=(event, *extra))


def _published_content(session: Session, item: FaqItem) -> tuple[FaqRevision | None,
                                                                   Content | None]:
    if item.published_revision_id is None:
        return None, None
    pub = session.get(FaqRevision, item.published_revision_id)
    return pub, (Content.from_row(pub) if pub is not None else None)


def _new_revision(session: Session, item: FaqItem, actor: Actor, content: Content, *,
                  change: str, reason: str, requested_by_city: bool) -> FaqRevision:
    number = 1
    if item.id is not None:
        last = session.scalars(select(FaqRevision.number).where(FaqRevision.item_id == item.id)
                               .order_by(FaqRevision.number.desc()).limit(1)).first()
        number = (last or 0) + 1
    pub, pub_content = _published_content(session, item) if item.id is not None else (None,
                                                                                        None)
    old_label = f"公開版 第{pub.number}版" if pub is not None else "（公開版なし）"
    diff = render_diff(pub_content, content, old_label, f"第{number}版")
    rev = FaqRevision(item_id=item.id, number=number, change=change, status="draft",
                      author=actor.user_id, created_at=utcnow(), reason=reason.strip(),
                      requested_by_city=requested_by_city, diff=diff,
                      based_on_revision_id=pub.id if pub is not None else None,
                      **content.to_columns())
    session.add(rev)
    session.flush()
    return rev


# --------------------------------------------------------------------- drafting


def create_item(session: Session, actor: Actor, content: Content, *, kind: str = "faq",
                tenant: str | None = "", reason: str = "新規作成",
                requested_by_city: bool = True) -> Change:
    """A new item with revision 1 as a draft.

    ``tenant``: "" (default) = the actor's tenant; None = shared by every tenant (only an
    administrator may create shared items).
    """
    _require(actor, DRAFTING_ROLES, "FAQ・マニュアルの作成")
    content.validate(kind)
    if not reason.strip():
        raise InvalidContent("変更理由を入力してください。")
    if tenant is None:
        _require(actor, {ADMINISTRATOR}, "全団体共通の項目の作成")
    tenant_id = actor.tenant if tenant == "" else tenant
    if tenant_id is not None and tenant_id != actor.tenant:
        raise PermissionDenied(f"他の団体（{tenant_id}）の項目は作成できません。")
    item = FaqItem(kind=kind, tenant_id=tenant_id, created_at=utcnow(),
                   created_by=actor.user_id, version=1)
    session.add(item)
    session.flush()
    rev = _new_revision(session, item, actor, content, change="edit", reason=reason,
                        requested_by_city=requested_by_city)
    item.head_revision_id = rev.id
    _log(session, item, rev, "created", actor, reason)
    session.flush()
    return _changed(session, item, rev, "created", actor)


def revise(session: Session, actor: Actor, item_id: int, content: Content, *,
           expected_version: int, reason: str, requested_by_city: bool = True) -> Change:
    """Write a new draft revision (the previous draft, if any, is kept as history)."""
    _require(actor, DRAFTING_ROLES, "FAQ・マニュアルの編集")
    if not reason.strip():
        raise InvalidContent("変更理由を入力してください。")
    item = _load(session, item_id, lock=True)
    _check_tenant(actor, item)
    if item.tenant_id is None:
        _require(actor, {ADMINISTRATOR}, "全団体共通の項目の編集")
    _check_version(item, expected_version)
    content.validate(item.kind)
    head = _head(session, item)
    if head.status in PENDING:
        raise InvalidTransition(
            f"項目 {item.id} の第{head.number}版は{STATUS_LABELS[head.status]}です。"
            "差し戻されるか公開されるまで編集できません。")
    if head.status == "draft":
        head.status = "superseded"
    rev = _new_revision(session, item, actor, content, change="edit", reason=reason,
                        requested_by_city=requested_by_city)
    item.head_revision_id = rev.id
    _log(session, item, rev, "created", actor, reason)
    _bump(session, item)
    return _changed(session, item, rev, "created", actor)


def request_withdrawal(session: Session, actor: Actor, item_id: int, *,
                       expected_version: int, reason: str,
                       requested_by_city: bool = True) -> Change:
    """A draft that, once submitted, approved and published, takes the item off the air."""
    _require(actor, DRAFTING_ROLES, "公開停止の申請")
    if not reason.strip():
        raise InvalidContent("公開停止の理由を入力してください。")
    item = _load(session, item_id, lock=True)
    _check_tenant(actor, item)
    _check_version(item, expected_version)
    head = _head(session, item)
    pub, pub_content = _published_content(session, item)
    if pub is None or pub_content is None:
        raise InvalidTransition(f"項目 {item.id} は公開されていないため、公開停止できません。")
    if head.status in PENDING:
        raise InvalidTransition(
            f"項目 {item.id} には{STATUS_LABELS[head.status]}の版があります。"
            "先に処理してください。")
    if head.status == "draft":
        head.status = "superseded"
    rev = _new_revision(session, item, actor, pub_content, change="withdraw", reason=reason,
                        requested_by_city=requested_by_city)
    rev.diff = f"公開停止: 第{pub.number}版の公開を停止します。"
    item.head_revision_id = rev.id
    _log(session, item, rev, "created", actor, reason)
    _bump(session, item)
    return _changed(session, item, rev, "created", actor)


def submit(session: Session, actor: Actor, item_id: int, *, expected_version: int,
           comment: str = "") -> Change:
    """Send the draft (or a returned revision) to the city's approver."""
    _require(actor, DRAFTING_ROLES, "承認申請")
    item = _load(session, item_id, lock=True)
    _check_tenant(actor, item)
    _check_version(item, expected_version)
    head = _head(session, item)
    if head.status not in ("draft", "returned"):
        raise InvalidTransition(
            f"第{head.number}版は{STATUS_LABELS.get(head.status, head.status)}のため申請できません"
            "（申請できるのは下書きと差戻しの版です）。")
    head.status = "submitted"
    _log(session, item, head, "submitted", actor, comment)
    _bump(session, item)
    return _changed(session, item, head, "submitted", actor)


def approve(session: Session, actor: Actor, item_id: int, *, expected_version: int,
            comment: str = "") -> Change:
    """The city's approver accepts the submitted revision (not their own)."""
    _require(actor, {APPROVER}, "承認")
    item = _load(session, item_id, lock=True)
    _check_tenant(actor, item)
    _check_version(item, expected_version)
    head = _head(session, item)
    if head.status != "submitted":
        raise InvalidTransition(
            f"第{head.number}版は{STATUS_LABELS.get(head.status, head.status)}です。"
            "承認できるのは承認待ちの版だけです。")
    if head.author == actor.user_id:
        raise PermissionDenied("自分が作成した版は承認できません。別の承認者に依頼してください。")
    head.status = "approved"
    _log(session, item, head, "approved", actor, comment)
    _bump(session, item)
    return _changed(session, item, head, "approved", actor)


def return_for_changes(session: Session, actor: Actor, item_id: int, *,
                       expected_version: int, comment: str) -> Change:
    """The approver sends the revision back with a comment; it stays in the history."""
    _require(actor, {APPROVER}, "差戻し")
    if not comment.strip():
        raise InvalidContent("差戻しの理由（コメント）を入力してください。")
    item = _load(session, item_id, lock=True)
    _check_tenant(actor, item)
    _check_version(item, expected_version)
    head = _head(session, item)
    if head.status not in ("submitted", "approved"):
        raise InvalidTransition(
            f"第{head.number}版は{STATUS_LABELS.get(head.status, head.status)}"
            "のため差し戻せません。")
    head.status = "returned"
    _log(session, item, head, "returned", actor, comment)
    _bump(session, item)
    return _changed(session, item, head, "returned", actor)


def publish(session: Session, actor: Actor, item_id: int, *, expected_version: int) -> Change:
    """Make the approved revision live (or, for a withdrawal, take the item off the air)."""
    _require(actor, PUBLISHING_ROLES, "公開")
    item = _load(session, item_id, lock=True)
    _check_tenant(actor, item)
    _check_version(item, expected_version)
    head = _head(session, item)
    if head.status != "approved":
        raise InvalidTransition(
            f"第{head.number}版は{STATUS_LABELS.get(head.status, head.status)}です。"
            "公開できるのは市が承認した版だけです。")
    old, _ = _published_content(session, item)
    if old is not None:
        old.status = "superseded"
    if head.change == "withdraw":
        head.status = "withdrawn"
        item.published_revision_id = None
        action = "withdrawn"
    else:
        head.status = "published"
        item.published_revision_id = head.id
        action = "published"
    _log(session, item, head, action, actor)
    _bump(session, item)
    published = FaqPublished(item_id=item.id, revision_id=head.id, tenant=item.tenant_id or "",
                             change=head.change, actor=actor.user_id)
    return _changed(session, item, head, action, actor, (published,))


def discard_draft(session: Session, actor: Actor, item_id: int, *,
                  expected_version: int) -> Change:
    """Drop the head draft or returned revision; the item falls back to what is live."""
    _require(actor, DRAFTING_ROLES, "下書きの破棄")
    item = _load(session, item_id, lock=True)
    _check_tenant(actor, item)
    _check_version(item, expected_version)
    head = _head(session, item)
    if head.status not in ("draft", "returned"):
        raise InvalidTransition("破棄できるのは下書きと差戻しの版だけです。")
    head.status = "discarded"
    _log(session, item, head, "discarded", actor)
    if item.published_revision_id is not None:
        item.head_revision_id = item.published_revision_id
    _bump(session, item)
    return _changed(session, item, head, "discarded", actor)


# --------------------------------------------------------------------- city reporting


def changes_to_report(session: Session, actor: Actor) -> list[RevisionView]:
    """Changes not requested by the city, from submission on, until acknowledged (12(3))."""
    _require(actor, READING_ROLES, "報告対象の変更の閲覧")
    stmt = (select(FaqRevision).join(FaqItem, FaqItem.id == FaqRevision.item_id)
            .where(FaqRevision.requested_by_city.is_(False),
                   FaqRevision.acknowledged_at.is_(None),
                   FaqRevision.status.not_in(("draft", "discarded", "superseded")),
                   or_(FaqItem.tenant_id == actor.tenant, FaqItem.tenant_id.is_(None)))
            .order_by(FaqRevision.created_at, FaqRevision.id))
    return [_rev_view(session, r, with_events=True) for r in session.scalars(stmt)]


def acknowledge(session: Session, actor: Actor, revision_id: int, comment: str = "") -> Change:
    """The city confirms it has seen a change it did not request."""
    _require(actor, {APPROVER}, "変更報告の確認")
    rev = session.get(FaqRevision, revision_id)
    if rev is None:
        raise NoSuchItem(revision_id)
    item = _load(session, rev.item_id)
    _check_tenant(actor, item)
    if rev.requested_by_city or rev.acknowledged_at is not None:
        raise InvalidTransition(f"版 {revision_id} は報告対象ではないか、確認済みです。")
    rev.acknowledged_by = actor.user_id
    rev.acknowledged_at = utcnow()
    _log(session, item, rev, "acknowledged", actor, comment)
    _bump(session, item)
    return _changed(session, item, rev, "acknowledged", actor)


# --------------------------------------------------------------------- editor reading


def get_item(session: Session, actor: Actor, item_id: int) -> ItemView:
    """The editor's view, including unpublished text (editing/approving roles only)."""
    _require(actor, READING_ROLES, "未公開の内容の閲覧")
    item = _load(session, item_id)
    _check_tenant(actor, item)
    return _item_view(session, item)


def history(session: Session, actor: Actor, item_id: int) -> list[RevisionView]:
    """Every revision of the item with its workflow log, oldest first."""
    _require(actor, READING_ROLES, "履歴の閲覧")
    item = _load(session, item_id)
    _check_tenant(actor, item)
    revs = session.scalars(select(FaqRevision).where(FaqRevision.item_id == item.id)
                           .order_by(FaqRevision.number)).all()
    return [_rev_view(session, r, with_events=True) for r in revs]


def list_items(session: Session, actor: Actor, *, status: str | None = None,
               kind: str | None = None) -> list[ItemView]:
    """Items of the actor's tenant and shared ones, filtered by head status (editors)."""
    _require(actor, READING_ROLES, "一覧の閲覧")
    stmt: Any = (select(FaqItem, FaqRevision)
                         .join(FaqRevision, FaqRevision.id == FaqItem.head_revision_id)
                         .where(or_(FaqItem.tenant_id == actor.tenant,
                                    FaqItem.tenant_id.is_(None)))
                         .order_by(FaqItem.id))
    if status:
        stmt = stmt.where(FaqRevision.status == status)
    if kind:
        stmt = stmt.where(FaqItem.kind == kind)
    out = []
    for item, rev in session.execute(stmt):
        out.append(ItemView(id=item.id, kind=item.kind, tenant=item.tenant_id,
                            version=item.version, head=_rev_view(session, rev),
                            published_revision_id=item.published_revision_id))
    return out


# --------------------------------------------------------------------- published reading


def _visible(stmt: Any, tenant: str, channel: str | None) -> Any:
    stmt = stmt.where(or_(FaqItem.tenant_id == tenant, FaqItem.tenant_id.is_(None)),
                      FaqRevision.status == "published")
    if channel is not None:
        stmt = stmt.where(FaqRevision.channels.in_((channel, "both")))
    return stmt


def _published_view(session: Session, item: FaqItem, rev: FaqRevision) -> PublishedItem:
    at = session.scalars(select(FaqWorkflowEvent.at)
                         .where(FaqWorkflowEvent.revision_id == rev.id,
                                FaqWorkflowEvent.action == "published")
                         .order_by(FaqWorkflowEvent.id.desc()).limit(1)).first()
    return PublishedItem(id=item.id, kind=item.kind, tenant=item.tenant_id,
                         revision_id=rev.id, revision_number=rev.number, published_at=at,
                         content=Content.from_row(rev))


def get_published(session: Session, item_id: int, *, tenant: str,
                  channel: str | None = None) -> PublishedItem | None:
    """The live content of one item for an operator or kiosk, or None if not shown."""
    stmt = _visible(select(FaqItem, FaqRevision)
                    .join(FaqRevision, FaqRevision.id == FaqItem.published_revision_id)
                    .where(FaqItem.id == item_id), tenant, channel)
    row = session.execute(stmt).first()
    return _published_view(session, row[0], row[1]) if row else None


def list_published(session: Session, *, tenant: str | None = None, channel: str | None = None,
                   kind: str | None = None) -> list[PublishedItem]:
    """Every live item for ``tenant`` (None = all tenants, for the index builder)."""
    stmt: Any = (select(FaqItem, FaqRevision)
                         .join(FaqRevision, FaqRevision.id == FaqItem.published_revision_id)
                         .where(FaqRevision.status == "published")
                         .order_by(FaqItem.id))
    if tenant is not None:
        stmt = _visible(stmt, tenant, channel)
    elif channel is not None:
        stmt = stmt.where(FaqRevision.channels.in_((channel, "both")))
    if kind:
        stmt = stmt.where(FaqItem.kind == kind)
    return [PublishedItem(id=item.id, kind=item.kind, tenant=item.tenant_id,
                          revision_id=rev.id, revision_number=rev.number, published_at=None,
                          content=Content.from_row(rev))
            for item, rev in session.execute(stmt)]
