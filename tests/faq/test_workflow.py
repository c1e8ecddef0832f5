"""Approval workflow on SQLite and PostgreSQL: states, roles, history, optimistic locking,
withdrawal, changes to report, and that no unapproved text reaches operators."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.db import transaction
from common.faq_events import FaqPublished, FaqRevisionChanged
from faq import services, transfer
from faq.content import Actor, Content
from faq.exceptions import InvalidContent, InvalidTransition, PermissionDenied, StaleVersion
from faq.jobs import published_index_items
from faq.search import SearchIndex

from .conftest import publish_new, version_of

SECRET = "未承認の秘密の文言"


def _content(title: str = "住民票の写しはどこで取れますか。",
             body: str = "市民課窓口で取得できます。", **kw: str) -> Content:
    return Content.make(title, body, category="住民票", department="住民記録係",
                        keywords="住民票=じゅうみんひょう|写し", **kw)


def test_draft_to_published_lifecycle(factory: sessionmaker[Session], editor: Actor,
                                      approver: Actor) -> None:
    with transaction(factory) as s:
        change = services.create_item(s, editor, _content())
        item_id = change.item.id
        assert change.item.status == "draft"
        assert change.item.head.number == 1
        assert "+質問/表題: 住民票の写しはどこで取れますか。" in change.item.head.diff
        assert isinstance(change.events[0], FaqRevisionChanged)
        v = services.submit(s, editor, item_id, expected_version=change.item.version).item.version
    with transaction(factory) as s:
        assert services.get_published(s, item_id, tenant="city") is None
        approved = services.approve(s, approver, item_id, expected_version=v, comment="可")
        assert approved.item.status == "approved"
        assert services.get_published(s, item_id, tenant="city") is None
        published = services.publish(s, approver, item_id,
                                     expected_version=approved.item.version)
    assert published.item.status == "published"
    assert [type(e) for e in published.events] == [FaqRevisionChanged, FaqPublished]
    with factory() as s:
        live = services.get_published(s, item_id, tenant="city", channel="phone")
        assert live is not None
        assert live.content.body == "市民課窓口で取得できます。"
        assert live.published_at is not None
        actions = [e[0] for e in services.history(s, approver, item_id)[0].events]
        assert actions == ["created", "submitted", "approved", "published"]


def test_no_unapproved_text_reaches_operators_or_kiosks(
        factory: sessionmaker[Session], editor: Actor, approver: Actor, operator: Actor) -> None:
    item_id = publish_new(factory, editor, approver, _content())
    with transaction(factory) as s:
        v = version_of(factory, editor, item_id)
        services.revise(s, editor, item_id, _content(body=f"{SECRET}（下書き）"),
                        expected_version=v, reason="改訂案")
        services.create_item(s, editor, _content(title=f"{SECRET}の質問", body=SECRET))
    with transaction(factory) as s:  # an approved but unpublished change is not shown either
        third = services.create_item(s, editor, _content(title="承認済み未公開", body=SECRET))
        v3 = services.submit(s, editor, third.item.id,
                             expected_version=third.item.version).item.version
        services.approve(s, approver, third.item.id, expected_version=v3)
    with factory() as s:
        texts = [repr(services.get_published(s, item_id, tenant="city"))]
        texts += [repr(p) for p in services.list_published(s, tenant="city")]
        texts += [repr(p) for p in services.list_published(s)]
        texts.append(transfer.export_csv(s, operator).decode("utf-8-sig"))
        index = SearchIndex.build(published_index_items(s), None)
        texts += [repr(x) for x in index.suggest(SECRET, tenant="city", k=10)]
        texts += [repr(it) for it in index.items]
        for text in texts:
            assert SECRET not in text
        assert len(index) == 1
        for call in (lambda: services.get_item(s, operator, item_id),
                     lambda: services.history(s, operator, item_id),
                     lambda: services.list_items(s, operator),
                     lambda: services.changes_to_report(s, operator),
                     lambda: transfer.export_csv(s, operator, scope="working")):
            with pytest.raises(PermissionDenied):
                call()
        # editors do see the draft, through the role-checked functions
        assert SECRET in services.get_item(s, editor, item_id).head.content.body


def test_returned_revision_keeps_history(factory: sessionmaker[Session], editor: Actor,
                                         approver: Actor) -> None:
    with transaction(factory) as s:
        c = services.create_item(s, editor, _content())
        item_id = c.item.id
        v = services.submit(s, editor, item_id, expected_version=c.item.version).item.version
        with pytest.raises(InvalidContent):
            services.return_for_changes(s, approver, item_id, expected_version=v, comment=" ")
        v = services.return_for_changes(s, approver, item_id, expected_version=v,
                                        comment="手数料の記載を追加してください").item.version
        with pytest.raises(InvalidTransition):
            services.publish(s, approver, item_id, expected_version=v)
        v = services.revise(s, editor, item_id, _content(body="窓口で1通300円で取得できます。"),
                            expected_version=v, reason="差戻しへの対応").item.version
        v = services.submit(s, editor, item_id, expected_version=v).item.version
        v = services.approve(s, approver, item_id, expected_version=v).item.version
        services.publish(s, approver, item_id, expected_version=v)
    with factory() as s:
        revs = services.history(s, editor, item_id)
    assert [(r.number, r.status) for r in revs] == [(1, "returned"), (2, "published")]
    returned = revs[0]
    assert returned.content.body == "市民課窓口で取得できます。"
    assert ("returned", "approver1") == returned.events[-1][:2]
    assert returned.events[-1][3] == "手数料の記載を追加してください"
    assert revs[1].reason == "差戻しへの対応"


def test_roles_are_enforced(factory: sessionmaker[Session], editor: Actor, approver: Actor,
                            operator: Actor, supervisor: Actor) -> None:
    with transaction(factory) as s:
        with pytest.raises(PermissionDenied):
            services.create_item(s, operator, _content())
        with pytest.raises(PermissionDenied):
            services.create_item(s, approver, _content())
        with pytest.raises(PermissionDenied):  # shared items: administrators only
            services.create_item(s, editor, _content(), tenant=None)
        c = services.create_item(s, supervisor, _content())
        v = services.submit(s, supervisor, c.item.id, expected_version=c.item.version).item.version
        for who in (editor, supervisor, operator):
            with pytest.raises(PermissionDenied):
                services.approve(s, who, c.item.id, expected_version=v)
        # an approver who also drafts cannot approve their own revision
        both = Actor("mixed", frozenset({"approver", "editor"}), "city")
        own = services.create_item(s, both, _content(title="自分の版"))
        ov = services.submit(s, both, own.item.id, expected_version=own.item.version).item.version
        with pytest.raises(PermissionDenied, match="自分が作成した版"):
            services.approve(s, both, own.item.id, expected_version=ov)
        v = services.approve(s, approver, c.item.id, expected_version=v).item.version
        with pytest.raises(PermissionDenied):
            services.publish(s, editor, c.item.id, expected_version=v)
        assert services.publish(s, supervisor, c.item.id,
                                expected_version=v).item.status == "published"
        # another municipality's approver cannot touch this tenant's item
        other = Actor("approver9", frozenset({"approver"}), "other-town")
        with pytest.raises(PermissionDenied):
            services.get_item(s, other, c.item.id)


def test_stale_version_is_refused(factory: sessionmaker[Session], editor: Actor) -> None:
    with transaction(factory) as s:
        c = services.create_item(s, editor, _content())
    with transaction(factory) as s:
        services.revise(s, editor, c.item.id, _content(body="A案"),
                        expected_version=c.item.version, reason="A")
    with transaction(factory) as s, pytest.raises(StaleVersion) as err:
        services.revise(s, editor, c.item.id, _content(body="B案"),
                        expected_version=c.item.version, reason="B")
    assert "他の人が先に更新" in err.value.message


def test_concurrent_edits_are_detected(factory: sessionmaker[Session], editor: Actor) -> None:
    """Two sessions read the same version; the second writer loses at flush time."""
    with transaction(factory) as s:
        c = services.create_item(s, editor, _content())
    item_id, v = c.item.id, c.item.version
    second = factory()
    try:
        assert services.get_item(second, editor, item_id).version == v  # B reads now
        second.rollback()
        second.begin()
        from common.models.faq import FaqItem
        second.get(FaqItem, item_id)  # B holds the row at version v in its identity map
        with transaction(factory) as s:  # A writes and commits first
            services.revise(s, editor, item_id, _content(body="A案"), expected_version=v,
                            reason="A")
        with pytest.raises(StaleVersion):
            services.revise(second, editor, item_id, _content(body="B案"), expected_version=v,
                            reason="B")
    finally:
        second.rollback()
        second.close()
    with factory() as s:
        bodies = [r.content.body for r in services.history(s, editor, item_id)]
    assert bodies == ["市民課窓口で取得できます。", "A案"]


def test_withdrawal_goes_through_approval(factory: sessionmaker[Session], editor: Actor,
                                          approver: Actor) -> None:
    item_id = publish_new(factory, editor, approver, _content())
    v = version_of(factory, editor, item_id)
    with transaction(factory) as s:
        v = services.request_withdrawal(s, editor, item_id, expected_version=v,
                                        reason="制度廃止").item.version
        v = services.submit(s, editor, item_id, expected_version=v).item.version
        assert services.get_published(s, item_id, tenant="city") is not None
        v = services.approve(s, approver, item_id, expected_version=v).item.version
        change = services.publish(s, approver, item_id, expected_version=v)
    assert change.item.status == "withdrawn"
    assert any(isinstance(e, FaqPublished) and e.change == "withdraw" for e in change.events)
    with factory() as s:
        assert services.get_published(s, item_id, tenant="city") is None
        assert services.list_published(s, tenant="city") == []
        statuses = [r.status for r in services.history(s, editor, item_id)]
    assert statuses == ["superseded", "withdrawn"]


def test_changes_not_requested_by_city_are_reported_until_acknowledged(
        factory: sessionmaker[Session], editor: Actor, approver: Actor) -> None:
    with transaction(factory) as s:
        asked = services.create_item(s, editor, _content(title="市の依頼による変更"))
        own = services.create_item(s, editor, _content(title="受託者の判断による変更"),
                                   requested_by_city=False)
        assert services.changes_to_report(s, approver) == []  # drafts are not reported yet
        services.submit(s, editor, asked.item.id, expected_version=asked.item.version)
        services.submit(s, editor, own.item.id, expected_version=own.item.version)
        report = services.changes_to_report(s, approver)
        assert [r.content.title for r in report] == ["受託者の判断による変更"]
        with pytest.raises(PermissionDenied):
            services.acknowledge(s, editor, report[0].id)
        services.acknowledge(s, approver, report[0].id, comment="確認しました")
        assert services.changes_to_report(s, approver) == []
        with pytest.raises(InvalidTransition):
            services.acknowledge(s, approver, report[0].id)


def test_tenants_and_channels(factory: sessionmaker[Session], editor: Actor, admin: Actor,
                              approver: Actor) -> None:
    shared = publish_new(factory, admin, approver, _content(title="共通の質問"), tenant=None)
    kiosk = publish_new(factory, editor, approver,
                        _content(title="窓口端末だけの質問", channels="kiosk"))
    other_editor = Actor("ed2", frozenset({"editor"}), "other-town")
    other_approver = Actor("ap2", frozenset({"approver"}), "other-town")
    other = publish_new(factory, other_editor, other_approver, _content(title="隣町の質問"))
    with factory() as s:
        city_phone = {p.id for p in services.list_published(s, tenant="city", channel="phone")}
        city_kiosk = {p.id for p in services.list_published(s, tenant="city", channel="kiosk")}
        town = {p.id for p in services.list_published(s, tenant="other-town")}
        assert services.get_published(s, other, tenant="city") is None
    assert city_phone == {shared}
    assert city_kiosk == {shared, kiosk}
    assert town == {shared, other}


def test_bad_content_is_explained(factory: sessionmaker[Session], editor: Actor) -> None:
    with transaction(factory) as s:
        with pytest.raises(InvalidContent, match="回答が空です"):
            services.create_item(s, editor, Content.make("質問だけ", ""))
        with pytest.raises(InvalidContent, match="チャネル"):
            services.create_item(s, editor, Content.make("質問", "回答", channels="fax"))
        with pytest.raises(InvalidContent, match="https://"):
            services.create_item(s, editor, Content.make("質問", "[申請](javascript:x)"))
        with pytest.raises(InvalidContent, match="節"):
            services.create_item(s, editor, Content.make("操作マニュアル", "",
                                                         manual_type="operation"), kind="manual")


def test_manual_with_sections(factory: sessionmaker[Session], editor: Actor,
                              approver: Actor) -> None:
    manual = Content.make("窓口端末 トラブル対応マニュアル", "", manual_type="troubleshooting",
                          channels="kiosk",
                          sections=[("カメラが映らない", "USBケーブルを差し直してください。"),
                                    ("音声が聞こえない", "ヘッドセットの音量を確認します。")])
    with transaction(factory) as s:
        c = services.create_item(s, editor, manual, kind="manual")
        v = services.submit(s, editor, c.item.id, expected_version=c.item.version).item.version
        v = services.approve(s, approver, c.item.id, expected_version=v).item.version
        services.publish(s, approver, c.item.id, expected_version=v)
    with factory() as s:
        live = services.list_published(s, tenant="city", kind="manual")
    assert [sec[0] for sec in live[0].content.sections] == ["カメラが映らない", "音声が聞こえない"]
    assert "## カメラが映らない" in c.item.head.diff
