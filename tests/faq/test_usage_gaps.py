"""Usage counts per item and the gap finder (conversations where no suggestion was used
become masked candidate drafts in the approval workflow)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.db import transaction
from common.models.calls import Call
from faq import gaps, services, usage
from faq.content import Actor, Content
from faq.exceptions import FaqError, NoSuchItem, PermissionDenied

from .conftest import publish_new


def test_usage_counts(factory: sessionmaker[Session], editor: Actor, approver: Actor) -> None:
    a = publish_new(factory, editor, approver, Content.make("質問A", "回答A"))
    b = publish_new(factory, editor, approver, Content.make("質問B", "回答B"))
    old = datetime.now(UTC) - timedelta(days=40)
    with transaction(factory) as s:
        usage.record_shown(s, [a, b], tenant="city", call_id="c1", actor="op01")
        usage.record_shown(s, [a], tenant="city", call_id="c2", actor="op01")
        usage.record(s, a, "opened", tenant="city", call_id="c1", actor="op01")
        usage.record(s, a, "used", tenant="city", call_id="c1", actor="op01")
        usage.record(s, a, "resolved", tenant="city", call_id="c1", actor="op01")
        usage.record(s, b, "opened", tenant="city", call_id="k1", channel="kiosk", at=old)
        usage.record(s, a, "shown", tenant="other-town")
        with pytest.raises(FaqError, match="shown/opened/used/resolved"):
            usage.record(s, a, "liked", tenant="city")
        with pytest.raises(NoSuchItem):
            usage.record(s, 9999, "shown", tenant="city")
    with factory() as s:
        counts = usage.counts(s, tenant="city")
        recent = usage.counts(s, tenant="city", since=datetime.now(UTC) - timedelta(days=7))
        assert usage.calls_with_use(s, ["c1", "c2", "k1"]) == {"c1"}
    assert (counts[a].shown, counts[a].opened, counts[a].used, counts[a].resolved) == (2, 1, 1, 1)
    assert (counts[b].shown, counts[b].opened) == (1, 1)
    assert recent[b].opened == 0


def test_extract_question_masks_personal_data() -> None:
    text = ("もしもし えー 山田と申します 電話番号は090-1234-5678 です。"
            "あの 住所は サンプル市中央町3-12-5 なんですけど 住民票 を 郵送 で 取れます か")
    question = gaps.extract_question(text)
    assert "090" not in question and "1234" not in question
    assert "中央町3" not in question
    assert "住民票を郵送で取れますか" in question
    assert gaps.extract_question("") == ""


def test_gap_finder_creates_masked_drafts(factory: sessionmaker[Session], editor: Actor,
                                          approver: Actor, operator: Actor) -> None:
    used_item = publish_new(factory, editor, approver, Content.make("住民票の手数料は？", "300円"))
    convs = [
        gaps.Conversation("c1", "city", "住民票 の 手数料 は いくら です か"),
        gaps.Conversation("c2", "city",
                          "えー 犬 の 登録 って どこ で できます か 番号は 4821 です"),
        gaps.Conversation("c3", "city", "あの 犬 の 登録 って どこ で できます か"),
        gaps.Conversation("c4", "city", "はい"),
        gaps.Conversation("c5", "other-town", "隣町 の 質問 です か"),
    ]
    with transaction(factory) as s:
        usage.record(s, used_item, "used", tenant="city", call_id="c1", actor="op01")
    with transaction(factory) as s:
        with pytest.raises(PermissionDenied):
            gaps.find_gaps(s, operator, convs)
        report = gaps.find_gaps(s, editor, convs)
    assert (report.examined, report.without_use) == (4, 3)
    assert len(report.candidates) == 1  # c2 and c3 merged; "はい" too short
    cand = report.candidates[0]
    assert cand.call_ids == ("c2", "c3")
    assert cand.question.startswith("犬の登録ってどこでできますか")
    assert "4821" not in cand.question
    assert cand.item_id is not None
    with factory() as s:
        view = services.get_item(s, editor, cand.item_id)
        assert view.status == "draft"
        assert view.head.requested_by_city is False
        assert view.head.content.body == gaps.PLACEHOLDER_ANSWER
        assert services.get_published(s, cand.item_id, tenant="city") is None
        # running again does not duplicate the candidate
        again = gaps.find_gaps(s, editor, convs)
        assert again.candidates == ()
    with transaction(factory) as s:  # once submitted, it is a change to report to the city
        services.submit(s, editor, cand.item_id, expected_version=view.version)
        assert [r.item_id for r in services.changes_to_report(s, approver)] == [cand.item_id]


def test_conversations_from_calls(factory: sessionmaker[Session], editor: Actor) -> None:
    now = datetime.now(UTC)
    with transaction(factory) as s:
        s.add_all([
            Call(id="call-1", tenant_id="city", arrived_at=now, status="ended",
                 notes="マイナンバーカード の 写真 は スマホ で 撮って も いい ん です か"),
            Call(id="call-2", tenant_id="city", arrived_at=now, status="active", notes="通話中"),
            Call(id="call-3", tenant_id="city", arrived_at=now - timedelta(days=3),
                 status="ended", notes="古い 通話 です か"),
        ])
    with transaction(factory) as s:
        convs = gaps.conversations_from_calls(s, tenant="city", since=now - timedelta(hours=1),
                                              until=now + timedelta(hours=1))
        assert [c.call_id for c in convs] == ["call-1"]
        report = gaps.find_gaps(s, editor, convs)
    assert report.candidates[0].question.startswith("マイナンバーカードの写真はスマホで")
