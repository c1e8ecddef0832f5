"""What the KPIs are: the catalogue (labels, units, targets), the additive ``Counts``
every KPI is derived from, and whether a value meets its target (docs/kpi.md)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from common.settings import KpiSettings

SURVEY_SCORES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class KpiDef:
    """One KPI: its key, Japanese and English labels, unit and target (if any)."""

    key: str
    ja: str
    en: str
    unit: str = ""  # "" count, "%" percent, "s" seconds, "pt" score
    target: str | None = None  # KpiSettings attribute
    higher_is_better: bool = True


CATALOGUE: tuple[KpiDef, ...] = (
    KpiDef("contacts", "総着信・利用件数", "Contacts"),
    KpiDef("offered", "受付件数（待ち行列）", "Offered"),
    KpiDef("answered", "応答件数", "Answered"),
    KpiDef("abandoned", "放棄件数", "Abandoned"),
    KpiDef("short_abandoned", "短時間放棄件数", "Short abandons"),
    KpiDef("abandon_rate", "放棄率", "Abandon rate", "%", "abandon_target", False),
    KpiDef("service_level", "サービスレベル", "Service level", "%", "service_level_target"),
    KpiDef("service_level_asterisk", "サービスレベル（放棄含む）", "Service level (Asterisk)",
           "%"),
    KpiDef("asa", "平均応答速度", "Average speed of answer", "s", "asa_target", False),
    KpiDef("max_wait", "最長応答待ち時間", "Longest wait to answer", "s"),
    KpiDef("aht", "平均処理時間", "Average handle time", "s", "aht_target", False),
    KpiDef("callbacks_requested", "折り返し依頼", "Callbacks requested"),
    KpiDef("callbacks_completed", "折り返し完了", "Callbacks completed"),
    KpiDef("escalated", "職員への転送（エスカレーション）", "Escalations"),
    KpiDef("fcr", "一次解決率", "First-contact resolution", "%", "fcr_target"),
    KpiDef("faq_resolved_share", "FAQで解決した割合", "Resolved by FAQ", "%"),
    KpiDef("satisfaction", "満足度（平均）", "Satisfaction (average)", "pt",
           "satisfaction_target"),
    KpiDef("surveys", "満足度回答数", "Survey answers"),
    KpiDef("kiosk_sessions", "リモート窓口利用件数", "Kiosk sessions"),
    KpiDef("out_of_hours", "時間外着信", "Out-of-hours calls"),
)
BY_KEY = {d.key: d for d in CATALOGUE}


@dataclass
class Counts:
    """Additive sums for one group; the KPIs are derived from them (see docs/kpi.md)."""

    contacts: int = 0
    out_of_hours: int = 0
    rejected: int = 0
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    callback_outcome: int = 0
    answered_in_sl: int = 0
    abandoned_in_sl: int = 0
    wait_sum: int = 0
    wait_max: int = 0
    talk_sum: int = 0
    hold_sum: int = 0
    wrapup_sum: int = 0
    callbacks_requested: int = 0
    callbacks_completed: int = 0
    escalated: int = 0
    resolved_faq: int = 0
    fcr: int = 0
    kiosk_sessions: int = 0
    surveys: int = 0
    survey_sum: int = 0
    s1: int = 0
    s2: int = 0
    s3: int = 0
    s4: int = 0
    s5: int = 0

    def add(self, other: Counts) -> None:
        for f in fields(self):
            if f.name == "wait_max":
                self.wait_max = max(self.wait_max, other.wait_max)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    # ----- derived KPIs (None when the denominator is zero)
    @property
    def abandon_rate(self) -> float | None:
        return _pct(self.abandoned - self.short_abandoned, self.offered - self.short_abandoned)

    @property
    def service_level(self) -> float | None:
        return _pct(self.answered_in_sl, self.offered - self.short_abandoned)

    @property
    def service_level_asterisk(self) -> float | None:
        return _pct(self.answered_in_sl + self.abandoned_in_sl, self.answered + self.abandoned)

    @property
    def asa(self) -> float | None:
        return _div(self.wait_sum, self.answered)

    @property
    def max_wait(self) -> int | None:
        return self.wait_max if self.answered else None

    @property
    def aht(self) -> float | None:
        return _div(self.talk_sum + self.wrapup_sum, self.answered)

    @property
    def avg_talk(self) -> float | None:
        return _div(self.talk_sum, self.answered)

    @property
    def avg_hold(self) -> float | None:
        return _div(self.hold_sum, self.answered)

    @property
    def avg_wrapup(self) -> float | None:
        return _div(self.wrapup_sum, self.answered)

    @property
    def fcr_rate(self) -> float | None:
        return _pct(self.fcr, self.answered)

    @property
    def faq_resolved_share(self) -> float | None:
        return _pct(self.resolved_faq, self.answered)

    @property
    def satisfaction(self) -> float | None:
        return _div(self.survey_sum, self.surveys)

    @property
    def distribution(self) -> dict[int, int]:
        return {s: getattr(self, f"s{s}") for s in SURVEY_SCORES}

    def value(self, key: str) -> float | int | None:
        """The value of a catalogue KPI by key."""
        if key == "fcr":
            return self.fcr_rate
        value: float | int | None = getattr(self, key)
        return value

    def as_dict(self) -> dict[str, float | int | None]:
        return {d.key: self.value(d.key) for d in CATALOGUE}


#: The ``Counts`` field names in order: the layout of a roll-up row's ``sums``.
COUNT_FIELDS = tuple(f.name for f in fields(Counts))


def _div(a: int, b: int) -> float | None:
    return a / b if b else None


def _pct(a: int, b: int) -> float | None:
    return 100.0 * a / b if b > 0 else None


def total(groups: Iterable[Counts]) -> Counts:
    acc = Counts()
    for c in groups:
        acc.add(c)
    return acc


def target_of(kpi: KpiSettings, key: str) -> float | None:
    d = BY_KEY.get(key)
    if d is None or d.target is None:
        return None
    return float(getattr(kpi, d.target))


def meets(kpi: KpiSettings, key: str, value: float | int | None) -> bool | None:
    """Whether ``value`` meets the KPI's target (None: no target or no value)."""
    target = target_of(kpi, key)
    if target is None or value is None:
        return None
    return value >= target if BY_KEY[key].higher_is_better else value <= target
