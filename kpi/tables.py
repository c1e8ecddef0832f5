"""KPI tables shared by the dashboard exports and the reports: one ``Table`` per view,
written as HTML (by the templates), CSV, or an Excel workbook with one sheet per table.

Headings are Japanese first with the English after a slash, as in the reports.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font

from common.settings import KpiSettings, Settings
from kpi.definitions import CATALOGUE, Counts, meets, target_of
from kpi.summary import Summary

WEEKDAYS_JA = ("月", "火", "水", "木", "金", "土", "日")


@dataclass
class Table:
    key: str  # also the Excel sheet name (ASCII, at most 31 characters)
    title: str  # "日本語 / English"
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)


class Bilingual(str):
    """A heading in both languages: ``"日本語 / English"`` as a string (the reports, CSV
    and Excel show both), with each language apart for a page shown in one (the web
    dashboard's ``in_language`` filter)."""

    ja: str
    en: str

    def __new__(cls, ja: str, en: str) -> Bilingual:
        value = super().__new__(cls, f"{ja} / {en}")
        value.ja, value.en = ja, en
        return value


def bilingual(ja: str, en: str) -> str:
    return Bilingual(ja, en)


def fmt(value: float | int | None, unit: str = "") -> str:
    """A KPI value for people: '-' when undefined, one decimal for rates and averages."""
    if value is None:
        return "-"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "s":
        return f"{value:.1f}秒"
    if unit == "pt":
        return f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else f"{value:.1f}"


def _num(value: float | int | None, digits: int = 1) -> float | int | None:
    if value is None or isinstance(value, int):
        return value
    return round(value, digits)


@dataclass(frozen=True)
class Names:
    services: Mapping[str, str]
    departments: Mapping[str, str]

    @classmethod
    def from_settings(cls, settings: Settings, tenant: str) -> Names:
        return cls(services={s.id: s.name for s in settings.services if s.tenant == tenant},
                   departments={d.id: d.name for d in settings.departments
                                if d.tenant == tenant})


DISPOSITION_NAMES = {
    "resolved_faq": "FAQで解決", "e_application_help": "オンライン申請の支援",
    "complaint": "苦情・要望", "escalated": "職員へ引継ぎ", "other": "その他", "": "未記入",
}
CHANNEL_NAMES = {"phone": "電話", "kiosk": "リモート窓口"}
HOURS_NAMES = {"weekend": "土日", "holiday": "祝日", "year_end": "年末年始",
               "special_closed": "臨時休業", "before_opening": "開庁前",
               "after_closing": "閉庁後", "": "不明"}

KPI_ROW_HEADERS = [bilingual("期間", "Period"), bilingual("受付", "Offered"),
                   bilingual("応答", "Answered"), bilingual("放棄", "Abandoned"),
                   bilingual("短時間放棄", "Short abandons"),
                   bilingual("サービスレベル(%)", "Service level (%)"),
                   bilingual("平均応答速度(秒)", "ASA (s)"),
                   bilingual("平均処理時間(秒)", "AHT (s)"),
                   bilingual("満足度", "Satisfaction")]


def kpi_row(label: str, c: Counts) -> list[Any]:
    """One row under KPI_ROW_HEADERS."""
    return [label, c.offered, c.answered, c.abandoned, c.short_abandoned,
            _num(c.service_level), _num(c.asa), _num(c.aht), _num(c.satisfaction, 2)]


def kpi_table(kpi: KpiSettings, current: Counts, previous: Counts | None = None) -> Table:
    headers = [bilingual("指標", "KPI"), bilingual("実績", "Actual"),
               bilingual("目標", "Target"), bilingual("達成", "Met")]
    if previous is not None:
        headers += [bilingual("前期間", "Previous"), bilingual("増減", "Change")]
    table = Table("kpis", bilingual("KPI実績と目標", "KPIs against targets"), headers)
    for d in CATALOGUE:
        value = current.value(d.key)
        target = target_of(kpi, d.key)
        ok = meets(kpi, d.key, value)
        row: list[Any] = [bilingual(d.ja, d.en), _num(value, 2), target,
                          "-" if ok is None else ("達成" if ok else "未達")]
        if previous is not None:
            before = previous.value(d.key)
            row += [_num(before, 2),
                    None if value is None or before is None else _num(value - before, 2)]
        table.rows.append(row)
    return table


def build_tables(summary: Summary, kpi: KpiSettings, names: Names,
                 previous: Counts | None = None) -> list[Table]:
    """Every table of the dashboard and the reports for one summary."""
    tables = [kpi_table(kpi, summary.total, previous)]
    daily = Table("daily", bilingual("日別の推移", "Per day"), list(KPI_ROW_HEADERS))
    daily.rows = [kpi_row(day, c) for day, c in summary.daily.items()]
    tables.append(daily)
    hourly = Table("hourly", bilingual("時間帯別（全日の合計）", "Per hour of day"),
                   [bilingual("時", "Hour"), *KPI_ROW_HEADERS[1:]])
    per_hour: dict[int, Counts] = {}
    for label, c in summary.hourly.items():
        per_hour.setdefault(int(label[11:13]), Counts()).add(c)
    hourly.rows = [kpi_row(f"{h:02d}:00", c) for h, c in sorted(per_hour.items())]
    tables.append(hourly)
    heat = summary.heatmap()
    hours = sorted({h for (_d, h) in heat})
    heatmap = Table("heatmap", bilingual("曜日×時間帯の受付件数", "Offered by weekday and hour"),
                    [bilingual("曜日", "Weekday"), *[f"{h:02d}" for h in hours]])
    heatmap.rows = [[WEEKDAYS_JA[d], *[heat.get((d, h), 0) for h in hours]] for d in range(7)]
    tables.append(heatmap)
    ops = Table("operators", bilingual("オペレーター別", "Per operator"),
                [bilingual("オペレーター", "Operator"), bilingual("応答", "Answered"),
                 bilingual("平均通話(秒)", "Avg talk (s)"),
                 bilingual("平均保留(秒)", "Avg hold (s)"),
                 bilingual("平均後処理(秒)", "Avg wrap-up (s)"),
                 bilingual("平均処理時間(秒)", "AHT (s)"), bilingual("一次解決率(%)", "FCR (%)"),
                 bilingual("転送", "Escalations"), bilingual("満足度", "Satisfaction")])
    ops.rows = [[op, c.answered, _num(c.avg_talk), _num(c.avg_hold), _num(c.avg_wrapup),
                 _num(c.aht), _num(c.fcr_rate), c.escalated, _num(c.satisfaction, 2)]
                for op, c in summary.operators.items()]
    tables.append(ops)
    svc = Table("services", bilingual("サービス・チャネル別", "Per service and channel"),
                [bilingual("サービス", "Service"), bilingual("チャネル", "Channel"),
                 *KPI_ROW_HEADERS[1:]])
    svc.rows = [[names.services.get(s, s), CHANNEL_NAMES.get(ch, ch), *kpi_row("", c)[1:]]
                for (s, ch), c in summary.services.items()]
    tables.append(svc)
    dept = Table("departments", bilingual("部署別の転送（エスカレーション）",
                                          "Transfers by department"),
                 [bilingual("部署", "Department"), bilingual("転送試行", "Attempted"),
                  bilingual("職員応答", "Answered"), bilingual("失敗", "Failed"),
                  bilingual("戻り", "Returned"), bilingual("転送中の放棄", "Abandoned")])
    dept.rows = [[names.departments.get(d, d or "-"), t.attempted, t.answered, t.failed,
                  t.returned, t.abandoned] for d, t in summary.departments.items()]
    tables.append(dept)
    tables.append(_counts_table("procedures", bilingual("手続・対応区分別", "Procedures handled"),
                                bilingual("区分", "Category"), summary.procedures,
                                DISPOSITION_NAMES))
    tables.append(_counts_table("kiosks", bilingual("リモート窓口の設置場所別利用",
                                                    "Kiosk sessions per location"),
                                bilingual("設置場所", "Location"), summary.kiosk_locations, {}))
    sat = Table("satisfaction", bilingual("満足度の分布", "Satisfaction distribution"),
                [bilingual("評価", "Score"), bilingual("件数", "Answers")])
    sat.rows = [[score, n] for score, n in summary.total.distribution.items()]
    tables.append(sat)
    tables.append(_counts_table("out_of_hours", bilingual("時間外着信の内訳",
                                                          "Out-of-hours calls"),
                                bilingual("理由", "Reason"), summary.out_of_hours, HOURS_NAMES))
    return tables


def staffing_table(rows: Iterable[Mapping[str, Any]], kpi: KpiSettings) -> Table:
    table = Table("staffing", bilingual(
        f"時間帯別の必要オペレーター数（Erlang C、{kpi.service_level_seconds}秒以内 "
        f"{kpi.service_level_target:g}%）", "Operators needed per hour (Erlang C)"),
        [bilingual("時", "Hour"), bilingual("受付合計", "Offered"), bilingual("日数", "Days"),
         bilingual("1時間あたり受付", "Calls per hour"), bilingual("平均処理時間(秒)", "AHT (s)"),
         bilingual("必要オペレーター数", "Operators needed")])
    table.rows = [[f"{r['hour']:02d}:00", r["offered"], r["days"], _num(r["calls_per_hour"]),
                   _num(r["aht"]), r["agents"]] for r in rows]
    return table


def _counts_table(key: str, title: str, label: str, counts: Mapping[str, int],
                  names: Mapping[str, str]) -> Table:
    table = Table(key, title, [label, bilingual("件数", "Count")])
    table.rows = [[names.get(k, k), n] for k, n in counts.items()]
    return table


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.headers)
    writer.writerows(["" if v is None else v for v in row] for row in table.rows)
    return "\ufeff" + out.getvalue()  # BOM: Excel opens Japanese CSV correctly


def to_xlsx(tables: Sequence[Table]) -> bytes:
    """One sheet per table: title in A1, headers in row 2, data from row 3."""
    wb = Workbook()
    first = True
    for table in tables:
        ws = wb.active if first else wb.create_sheet()
        first = False
        assert ws is not None  # nosec B101 # type narrowing, not a check
        ws.title = table.key[:31]
        ws.append([table.title])
        ws["A1"].font = Font(bold=True)
        ws.append(table.headers)
        for row in table.rows:
            ws.append(["" if v is None else v for v in row])
        for i, _h in enumerate(table.headers):
            ws.column_dimensions[ws.cell(row=2, column=i + 1).column_letter].width = 16
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
