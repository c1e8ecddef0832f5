"""KPI dashboard and reports for supervisors and administrators.

``/kpi/`` shows today (live: reload the page) or any date range, filtered by service,
channel and operator: KPIs against targets, a time series, the weekday x hour heat map,
the per-operator table and the other breakdowns, every table exportable as CSV or Excel.
``/kpi/reports`` lists generated reports with their progress and downloads, and queues
new ones (rq job ``reports.jobs.generate_report``, referenced by name).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup
from rq import Queue
from sqlalchemy import select
from werkzeug.wrappers import Response as WerkzeugResponse

import kpi
from common.models.accounts import ADMINISTRATOR, SUPERVISOR
from common.models.reports import REPORT_KINDS, Report
from kpi.charts import bar_chart, heatmap_svg
from kpi.tables import (
    KPI_ROW_HEADERS,
    Names,
    Table,
    bilingual,
    build_tables,
    kpi_row,
    to_csv,
    to_xlsx,
)
from web.access import audit_event, current_user, ensure_tenant, login_required
from web.db import get_db, get_redis, get_settings
from web.forms import field
from web.views import register_nav

bp = Blueprint("kpi", __name__, url_prefix="/kpi")
ROLES = {SUPERVISOR, ADMINISTRATOR}
MAX_DAYS = 400
REPORT_QUEUE = "reports"
REPORT_JOB = "reports.jobs.generate_report"
FILE_TYPES = {"pdf": "application/pdf", "html": "text/html; charset=utf-8",
              "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}

register_nav("kpi.dashboard", _l("KPIs"), ROLES, order=40)
register_nav("kpi.reports", _l("Reports"), ROLES, order=45)


def kind_labels() -> dict[str, str]:
    return {"monthly": _("Monthly report"), "interim": _("Interim report"),
            "final": _("Final report"), "custom": _("Report for a period")}


def status_labels() -> dict[str, str]:
    return {"queued": _("Waiting"), "running": _("Generating"), "done": _("Finished"),
            "failed": _("Failed")}


def _tenant() -> str:
    user = current_user()
    assert user is not None  # nosec B101 # login_required ran
    return user.tenant_id


def _today() -> date:
    return datetime.now(ZoneInfo(get_settings().site.timezone)).date()


def _date_arg(name: str, default: date) -> date:
    raw = request.args.get(name, "")
    if not raw:
        return default
    try:
        return date.fromisoformat(raw[:10])
    except ValueError:
        abort(400)


def _query() -> tuple[date, date, kpi.Filters]:
    """Period [from, to] (inclusive local dates; default today) and the filters."""
    today = _today()
    start = _date_arg("from", today)
    last = _date_arg("to", start)
    if last < start or (last - start).days >= MAX_DAYS:
        abort(400)
    settings = get_settings()
    tenant = _tenant()
    service = request.args.get("service", "")[:64]
    if service and service not in {s.id for s in settings.services if s.tenant == tenant}:
        service = ""
    channel = request.args.get("channel", "")
    if channel not in ("phone", "kiosk"):
        channel = ""
    operator = request.args.get("operator", "")[:64]
    if operator and operator not in {e for e, _x in settings.operators.endpoints()}:
        operator = ""
    return start, last + timedelta(days=1), kpi.Filters(service or None, channel or None,
                                                         operator or None)


def _summary() -> tuple[kpi.Summary, list[Table], date, date, kpi.Filters]:
    settings = get_settings()
    start, end, filters = _query()
    summary = kpi.summarize(get_db(), tenant=_tenant(), start=start, end=end,
                            kpi=settings.kpi, tz=settings.site.timezone, filters=filters)
    tables = build_tables(summary, settings.kpi, Names.from_settings(settings, _tenant()))
    if end - start == timedelta(days=1):  # one day: also every 15 minutes (live query)
        a, b = kpi.local_range(start, end, settings.site.timezone)
        quarters = kpi.aggregate(get_db(), tenant=_tenant(), start=a, end=b, kpi=settings.kpi,
                                 tz=settings.site.timezone, interval="15min", filters=filters)
        table = Table("quarters", bilingual("15分ごと", "Every 15 minutes"),
                      list(KPI_ROW_HEADERS))
        table.rows = [kpi_row(label[11:], c) for (label,), c in sorted(quarters.items())]
        tables.insert(2, table)
    elif (end - start).days > 62:  # long ranges: also per month
        months: dict[str, kpi.Counts] = {}
        for day, c in summary.daily.items():
            months.setdefault(day[:7], kpi.Counts()).add(c)
        table = Table("monthly", bilingual("月別の推移", "Per month"), list(KPI_ROW_HEADERS))
        table.rows = [kpi_row(m, c) for m, c in sorted(months.items())]
        tables.insert(1, table)
    return summary, tables, start, end, filters


@bp.get("/")
@login_required(roles=ROLES)
def dashboard() -> str:
    settings = get_settings()
    summary, tables, start, end, filters = _summary()
    one_day = end - start == timedelta(days=1)
    series = summary.hourly if one_day else summary.daily
    labels = [k[11:13] if one_day else k[5:] for k in series]
    chart = bar_chart({_("Offered"): [c.offered for c in series.values()],
                       _("Answered"): [c.answered for c in series.values()]}, labels,
                      title=_("Offered and answered"))
    heat = heatmap_svg(summary.heatmap(), title=_("Offered by weekday and hour"))
    tenant = _tenant()
    return render_template(
        "kpi/dashboard.html", tables=tables, summary=summary, start=start,
        last=end - timedelta(days=1), filters=filters, chart=Markup(chart),  # nosec B704 # kpi.charts escapes its text
        heatmap=Markup(heat), live=one_day and start == _today(),  # nosec B704 # kpi.charts escapes its text
        services=[s for s in settings.services if s.tenant == tenant],
        operators=[e for e, _x in settings.operators.endpoints()],
        query=request.args.to_dict())


@bp.get("/export.<fmt>")
@login_required(roles=ROLES)
def export(fmt: str) -> Response:
    if fmt not in ("csv", "xlsx"):
        abort(404)
    _summary_, tables, start, end, _f = _summary()
    wanted = request.args.get("table", "")
    chosen = [t for t in tables if t.key == wanted] if wanted else tables
    if not chosen or (fmt == "csv" and len(chosen) != 1):
        abort(404)
    last = end - timedelta(days=1)
    name = f"kpi-{chosen[0].key if len(chosen) == 1 else 'all'}-{start:%Y%m%d}-{last:%Y%m%d}"
    audit_event("kpi.export", object_type="kpi", object_id=wanted or "all")
    if fmt == "csv":
        return Response(to_csv(chosen[0]), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    return Response(to_xlsx(chosen), mimetype=FILE_TYPES["xlsx"],
                    headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'})


@bp.get("/summary.json")
@login_required(roles=ROLES)
def summary_json() -> Response:
    summary, _t, start, end, _f = _summary()
    return jsonify({"from": start.isoformat(), "to": (end - timedelta(days=1)).isoformat(),
                    "kpis": summary.total.as_dict(),
                    "daily": {d: c.as_dict() for d, c in summary.daily.items()}})


# --------------------------------------------------------------------------- reports
def _reports(tenant: str) -> list[Report]:
    stmt = (select(Report).where(Report.tenant_id == tenant)
            .order_by(Report.created_at.desc(), Report.id.desc()).limit(100))
    return list(get_db().scalars(stmt))


@bp.get("/reports")
@login_required(roles=ROLES)
def reports() -> str:
    rows = _reports(_tenant())
    today = _today()
    prev, _e = kpi.previous_month(today)
    return render_template("kpi/reports.html", reports=rows, kinds=kind_labels(),
                           states=status_labels(),
                           busy=any(r.status in ("queued", "running") for r in rows),
                           default_month=f"{prev:%Y-%m}",
                           default_year=kpi.contract_year(today))


@bp.get("/reports.json")
@login_required(roles=ROLES)
def reports_json() -> Response:
    return jsonify({"reports": [
        {"id": r.id, "kind": r.kind, "from": r.period_start.isoformat(),
         "to": r.period_end.isoformat(), "status": r.status, "progress": r.progress,
         "files": sorted(r.files or {})} for r in _reports(_tenant())]})


def _period(kind: str) -> tuple[date, date] | None:
    try:
        if kind == "monthly":
            year, month = field("month", 7).split("-")
            return kpi.month_range(int(year), int(month))
        if kind in ("interim", "final"):
            year_ = int(field("year", 4))
            return kpi.interim_range(year_) if kind == "interim" else kpi.final_range(year_)
        if kind == "custom":
            start = date.fromisoformat(field("from", 10))
            last = date.fromisoformat(field("to", 10))
            return (start, last + timedelta(days=1)) if last >= start else None
    except ValueError:
        return None
    return None


@bp.post("/reports")
@login_required(roles=ROLES)
def request_report() -> WerkzeugResponse:
    kind = field("kind", 16)
    period = _period(kind) if kind in REPORT_KINDS else None
    if period is None or not date(2000, 1, 1) <= period[0] < period[1] <= date(2100, 1, 1) \
            or (period[1] - period[0]).days > 800:
        flash(_("Choose the kind of report and a valid period."), "error")
        return redirect(url_for("kpi.reports"))
    user = current_user()
    assert user is not None  # nosec B101 # login_required ran
    db = get_db()
    report = Report(tenant_id=user.tenant_id, kind=kind, period_start=period[0],
                    period_end=period[1], status="queued", progress=0,
                    requested_by=user.username, created_at=datetime.now(UTC), files={})
    db.add(report)
    db.commit()
    job = Queue(REPORT_QUEUE, connection=get_redis()).enqueue(REPORT_JOB, report.id,
                                                              job_timeout=1800)
    report.job_id = job.id
    db.commit()
    audit_event("report.request", object_type="report", object_id=report.id)
    flash(_("The report is being generated."), "success")
    return redirect(url_for("kpi.reports"))


@bp.get("/reports/<int:report_id>/report.<fmt>")
@login_required(roles=ROLES)
def download(report_id: int, fmt: str) -> Any:
    report = get_db().get(Report, report_id)
    if report is None:
        abort(404)
    ensure_tenant(report.tenant_id, object_type="report", object_id=report_id)
    name = (report.files or {}).get(fmt)
    if fmt not in FILE_TYPES or report.status != "done" or not name:
        abort(404)
    path = get_settings().data_dir / "reports" / str(report.id) / str(name)
    if not path.is_file():
        abort(404)
    audit_event("report.download", object_type="report", object_id=report_id)
    download_name = (f"{report.kind}-{report.period_start:%Y%m%d}-"
                     f"{report.period_end - timedelta(days=1):%Y%m%d}.{fmt}")
    return send_file(path, mimetype=FILE_TYPES[fmt], as_attachment=fmt != "html",
                     download_name=download_name)
