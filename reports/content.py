"""What a report says: KPIs against targets and the previous period, busiest hours with
the Erlang C staffing estimate, FAQ use and gaps, escalations, kiosk use, satisfaction,
incidents from the health history, and improvement suggestions that each cite the
figure they rest on. Everything comes from ``kpi`` (the one KPI package)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.models.faq import FaqItem, FaqRevision
from common.models.health import HealthSample
from common.settings import Settings
from faq import gaps, usage
from faq.content import Actor
from kpi.definitions import Counts
from kpi.periods import local_range, month_range, previous_month
from kpi.query import aggregate
from kpi.summary import Summary, summarize
from kpi.tables import (
    Names,
    Table,
    bilingual,
    build_tables,
    fmt,
    kpi_row,
    staffing_table,
)

KIND_TITLES = {
    "monthly": ("月次報告書", "Monthly report"),
    "interim": ("中間報告書", "Interim report"),
    "final": ("最終報告書", "Final report"),
    "custom": ("実績報告書", "Report"),
}


@dataclass
class Suggestion:
    text: str  # Japanese
    text_en: str
    figure: str  # the figure it rests on, e.g. "サービスレベル 72.3%（目標 80%）"


@dataclass
class Incident:
    component: str
    start: datetime
    end: datetime
    samples: int
    detail: str


@dataclass
class ReportContent:
    tenant: str
    tenant_name: str
    kind: str
    start: date
    end: date  # exclusive
    title: str
    title_en: str
    summary: Summary
    previous: Counts
    tables: list[Table]
    staffing: list[dict[str, Any]]
    busiest: list[dict[str, Any]]
    faq_top: list[dict[str, Any]]
    faq_gaps: list[dict[str, Any]]
    incidents: list[Incident]
    suggestions: list[Suggestion]
    generated_at: datetime
    charts: dict[str, str] = field(default_factory=dict)

    @property
    def period_label(self) -> str:
        last = self.end - timedelta(days=1)
        return f"{self.start:%Y年%m月%d日} ～ {last:%Y年%m月%d日}"


def previous_period(kind: str, start: date, end: date) -> tuple[date, date]:
    """The period the trends compare with: the month before (monthly), else the same
    length immediately before."""
    if kind == "monthly" or (start.day == 1 and end == month_range(start.year, start.month)[1]):
        return previous_month(start)
    return start - (end - start), start


def build(session: Session, settings: Settings, *, tenant: str, kind: str, start: date,
          end: date, now: datetime) -> ReportContent:
    tz = settings.site.timezone
    k = settings.kpi
    summary = summarize(session, tenant=tenant, start=start, end=end, kpi=k, tz=tz)
    p0, p1 = previous_period(kind, start, end)
    a, b = local_range(p0, p1, tz)
    previous = aggregate(session, tenant=tenant, start=a, end=b, kpi=k, tz=tz).get(
        (), Counts())
    names = Names.from_settings(settings, tenant)
    tables = build_tables(summary, k, names, previous)
    if (end - start).days > 62:  # long periods: one row per month instead of per day
        monthly: dict[str, Counts] = {}
        for day, c in summary.daily.items():
            monthly.setdefault(day[:7], Counts()).add(c)
        tables[1] = _monthly_table(tables[1], monthly)
    staffing = summary.staffing(k)
    tables.insert(1, staffing_table(staffing, k))
    busiest = sorted(staffing, key=lambda r: (-r["calls_per_hour"], r["hour"]))[:5]
    a, b = local_range(start, end, tz)
    faq_top = _faq_top(session, tenant, a, b)
    faq_gaps = _faq_gaps(session, tenant, a, b)
    incidents = _incidents(session, a, b)
    tables.append(_list_table("faq_top", bilingual("よく使われたFAQ", "Top FAQ items"),
                              [bilingual("番号", "No."), bilingual("質問", "Question"),
                               bilingual("表示", "Shown"), bilingual("回答に使用", "Used"),
                               bilingual("解決", "Resolved")],
                              [[r["id"], r["title"], r["shown"], r["used"], r["resolved"]]
                               for r in faq_top]))
    tables.append(_list_table("faq_gaps", bilingual("FAQの不足（FAQ未使用の問い合わせ）",
                                                    "FAQ gaps"),
                              [bilingual("問い合わせ内容", "Question"),
                               bilingual("件数", "Calls")],
                              [[g["question"], g["calls"]] for g in faq_gaps]))
    tables.append(_list_table("incidents", bilingual("障害・異常（ヘルス履歴）", "Incidents"),
                              [bilingual("構成要素", "Component"), bilingual("開始", "Start"),
                               bilingual("終了", "End"), bilingual("検知回数", "Samples"),
                               bilingual("内容", "Detail")],
                              [[i.component, _local(i.start, tz), _local(i.end, tz), i.samples,
                                i.detail] for i in incidents]))
    suggestions = suggest(summary, previous, staffing, faq_gaps, incidents, settings, names)
    tables.append(_list_table("suggestions", bilingual("改善提案", "Improvement suggestions"),
                              [bilingual("提案", "Suggestion"), bilingual("根拠", "Figure")],
                              [[s.text, s.figure] for s in suggestions]))
    title, title_en = KIND_TITLES.get(kind, KIND_TITLES["custom"])
    tenant_name = next((t.name for t in settings.tenants if t.id == tenant), tenant)
    return ReportContent(
        tenant=tenant, tenant_name=tenant_name, kind=kind, start=start, end=end, title=title,
        title_en=title_en, summary=summary, previous=previous, tables=tables,
        staffing=staffing, busiest=busiest, faq_top=faq_top, faq_gaps=faq_gaps,
        incidents=incidents, suggestions=suggestions, generated_at=now)


def _local(at: datetime, tz: str) -> str:
    return at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def _list_table(key: str, title: str, headers: list[str], rows: list[list[Any]]) -> Table:
    return Table(key, title, headers, rows)


def _monthly_table(daily: Table, monthly: dict[str, Counts]) -> Table:
    table = Table("monthly", bilingual("月別の推移", "Per month"), daily.headers)
    table.rows = [kpi_row(m, c) for m, c in sorted(monthly.items())]
    return table


def _faq_top(session: Session, tenant: str, a: datetime, b: datetime,
             limit: int = 10) -> list[dict[str, Any]]:
    counts = usage.counts(session, tenant=tenant, since=a, until=b)
    top = sorted(counts.values(), key=lambda c: (-(c.used + c.resolved), -c.shown, c.item_id))
    top = top[:limit]
    titles: dict[int, str] = {}
    if top:
        stmt = (select(FaqItem.id, FaqRevision.title)
                .join(FaqRevision, FaqRevision.id == FaqItem.head_revision_id)
                .where(FaqItem.id.in_([c.item_id for c in top])))
        titles = {i: t for i, t in session.execute(stmt)}
    return [{"id": c.item_id, "title": titles.get(c.item_id, ""), "shown": c.shown,
             "used": c.used, "resolved": c.resolved} for c in top]


def _faq_gaps(session: Session, tenant: str, a: datetime, b: datetime,
              limit: int = 10) -> list[dict[str, Any]]:
    actor = Actor("report", frozenset({"supervisor"}), tenant)
    convs = [c for c in gaps.conversations_from_calls(session, tenant=tenant, since=a, until=b)
             if c.text]
    found = gaps.find_gaps(session, actor, convs, create_drafts=False)
    ranked = sorted(found.candidates, key=lambda g: (-len(g.call_ids), g.question))
    return [{"question": g.question, "calls": len(g.call_ids)} for g in ranked[:limit]]


def _incidents(session: Session, a: datetime, b: datetime) -> list[Incident]:
    """Runs of consecutive failed health samples per component."""
    stmt = (select(HealthSample).where(HealthSample.at >= a, HealthSample.at < b)
            .order_by(HealthSample.component, HealthSample.at))
    out: list[Incident] = []
    open_: dict[str, Incident] = {}
    for s in session.scalars(stmt):
        cur = open_.get(s.component)
        if not s.ok:
            if cur is None:
                cur = Incident(s.component, s.at, s.at, 0, s.detail[:200])
                open_[s.component] = cur
                out.append(cur)
            cur.end = s.at
            cur.samples += 1
        elif cur is not None:
            cur.end = s.at  # recovered at this sample
            del open_[s.component]
    return out


def suggest(s: Summary, previous: Counts, staffing: list[dict[str, Any]],
            faq_gaps: list[dict[str, Any]], incidents: list[Incident], settings: Settings,
            names: Names) -> list[Suggestion]:
    """Improvement suggestions derived from the numbers, each citing its figure."""
    k = settings.kpi
    t = s.total
    out: list[Suggestion] = []
    sl = t.service_level
    if sl is not None and sl < k.service_level_target and staffing:
        peak = max(staffing, key=lambda r: (r["agents"], r["calls_per_hour"]))
        out.append(Suggestion(
            f"サービスレベルが目標を下回りました。{peak['hour']:02d}時台はErlang Cの推計で"
            f"オペレーター{peak['agents']}名の配置が必要です。この時間帯の配置を見直してください。",
            f"Service level below target; the {peak['hour']:02d}:00 hour needs "
            f"{peak['agents']} operators (Erlang C).",
            f"サービスレベル {fmt(sl, '%')}（目標 {k.service_level_target:g}%）、"
            f"{peak['hour']:02d}時台 1時間あたり{peak['calls_per_hour']:.1f}件"))
    ab = t.abandon_rate
    if ab is not None and ab > k.abandon_target:
        out.append(Suggestion(
            "放棄率が目標を超えています。待ち時間の案内と折り返し予約の案内を早めてください。",
            "Abandon rate above target: announce the wait and offer callbacks earlier.",
            f"放棄率 {fmt(ab, '%')}（目標 {k.abandon_target:g}%以下）、放棄 {t.abandoned}件"))
    asa = t.asa
    if asa is not None and asa > k.asa_target:
        out.append(Suggestion(
            "平均応答速度が目標より遅くなっています。最繁時間帯の休憩・研修の時間をずらしてください。",
            "Average speed of answer above target: move breaks out of the busiest hours.",
            f"平均応答速度 {fmt(asa, 's')}（目標 {k.asa_target:g}秒以下）"))
    if s.departments:
        dept, tc = max(s.departments.items(), key=lambda kv: (kv[1].attempted, kv[0]))
        share = 100.0 * tc.attempted / t.answered if t.answered else 0.0
        name = names.departments.get(dept, dept)
        out.append(Suggestion(
            f"職員への転送は{name}が最も多くなっています。よくある内容をFAQ・マニュアルに追加し、"
            "一次解決を増やして職員の時間を生み出してください。",
            f"Most transfers go to {dept}: add its frequent questions to the FAQ.",
            f"{name}への転送 {tc.attempted}件（応答件数の{share:.1f}%）"))
    if faq_gaps:
        n = sum(g["calls"] for g in faq_gaps)
        out.append(Suggestion(
            f"FAQを使わずに対応した問い合わせから{len(faq_gaps)}件のFAQ候補が見つかりました。"
            "承認手続を経てFAQに追加してください。",
            f"{len(faq_gaps)} FAQ candidates found in calls answered without the FAQ.",
            f"FAQ未使用の問い合わせ {n}件、上位「{faq_gaps[0]['question']}」"))
    sat = t.satisfaction
    if sat is not None and sat < k.satisfaction_target:
        low = t.s1 + t.s2
        out.append(Suggestion(
            "満足度が目標を下回りました。評価1・2の通話の記録を確認し、応対の改善点を共有してください。",
            "Satisfaction below target: review the calls rated 1 or 2.",
            f"満足度 {sat:.2f}（目標 {k.satisfaction_target:g}）、評価1・2 {low}件"))
    if t.contacts and t.out_of_hours * 10 >= t.contacts:
        out.append(Suggestion(
            "時間外の着信が多くなっています。時間外案内でオンライン申請と受付時間を案内してください。",
            "Many calls out of hours: point callers to the online services.",
            f"時間外着信 {t.out_of_hours}件（全体の{100.0 * t.out_of_hours / t.contacts:.1f}%）"))
    prev_offered = previous.offered
    if prev_offered and t.offered > prev_offered * 1.2:
        out.append(Suggestion(
            "受付件数が前期間より2割以上増えました。増加した時間帯の体制を確認してください。",
            "Offered calls rose by more than 20 %: check staffing in the busier hours.",
            f"受付 {t.offered}件（前期間 {prev_offered}件）"))
    if incidents:
        out.append(Suggestion(
            "システムの異常が記録されています。原因と再発防止策を報告してください。",
            "Incidents were recorded: report their causes and prevention.",
            f"異常 {len(incidents)}件（最初: {incidents[0].component}）"))
    return out
