"""Report generation end to end: a real rq SimpleWorker runs the job on real Redis, the
PDF is made by WeasyPrint and read back with pdftotext, the Excel file with openpyxl; the
first page is rendered to a PNG kept under test-artifacts/."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import redis
from openpyxl import load_workbook
from rq import Queue, SimpleWorker
from sqlalchemy.orm import Session, sessionmaker

from common.db import transaction
from common.models.calls import Call
from common.models.faq import FaqItem, FaqRevision, FaqUsage
from common.models.health import HealthSample
from common.models.reports import Report
from common.settings import Settings
from reports import jobs
from tests.reports.synthetic import jst


def add_faq_and_health(factory: sessionmaker[Session]) -> None:
    now = datetime(2026, 9, 1, tzinfo=UTC)
    with transaction(factory) as s:
        item = FaqItem(kind="faq", tenant_id="city", created_at=now, created_by="editor")
        s.add(item)
        s.flush()
        rev = FaqRevision(item_id=item.id, number=1, status="published", author="editor",
                          created_at=now, title="住民票の写しの取り方")
        s.add(rev)
        s.flush()
        item.head_revision_id = item.published_revision_id = rev.id
        for kind, call in (("shown", "C1"), ("used", "C1"), ("resolved", "C14")):
            s.add(FaqUsage(item_id=item.id, tenant_id="city", kind=kind, call_id=call,
                           actor="op01", at=jst(10, 1, 9, 3)))
        # A conversation answered without the FAQ: a gap candidate.
        call = s.get(Call, "C2")
        assert call is not None
        call.notes = "マイナンバーカードの暗証番号を忘れたのですがどうすればいいですか"
        for minute, ok in ((0, True), (1, False), (2, False), (3, True)):
            s.add(HealthSample(at=jst(10, 9, 3, minute), component="asterisk", ok=ok,
                               detail="" if ok else "ARI connection lost"))


def run_worker(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        SimpleWorker([Queue("reports", connection=client)], connection=client).work(burst=True)
    finally:
        client.close()


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The job loads its own settings: point them at the test database, Redis, folder."""
    monkeypatch.setenv("MADOGUCHI_SITE__DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MADOGUCHI_DATABASE__URL", settings.database_url)
    monkeypatch.setenv("MADOGUCHI_REDIS__URL", settings.redis.url)
    return settings


def test_monthly_report_end_to_end(env: Settings, month: sessionmaker[Session],
                                   artifacts_dir: Path, tmp_path: Path) -> None:
    add_faq_and_health(month)
    ids = jobs.monthly_reports(today="2026-11-01")
    assert len(ids) == 1
    run_worker(env.redis.url)
    with month() as s:
        report = s.get(Report, ids[0])
        assert report is not None
        assert (report.status, report.progress, report.kind) == ("done", 100, "monthly")
        assert (report.period_start, report.period_end) == (date(2026, 10, 1), date(2026, 11, 1))
        assert report.job_id and report.finished_at is not None
        files = dict(report.files)
    folder = jobs.report_folder(env, ids[0])
    pdf = folder / files["pdf"]
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          check=True, text=True).stdout
    for heading in ("月次報告書", "KPI実績と目標", "時間帯別の必要オペレーター数",
                    "よく使われたFAQ", "FAQの不足", "部署別の転送", "リモート窓口の設置場所別利用",
                    "満足度の分布", "障害・異常", "改善提案", "中央公民館"):
        assert heading in text, heading
    # Figures of the synthetic month (hand-computed in tests/reports/synthetic.py).
    for figure in ("サービスレベル 50.0%", "平均応答速度 11.6秒", "満足度 3.50",
                   "放棄率 25.0%", "住民票の写しの取り方", "ARI connection lost",
                   "マイナンバーカードの暗証番号を忘れた"):
        assert figure in text.replace("\n", " "), figure
    wb = load_workbook(folder / files["xlsx"])
    assert {"kpis", "staffing", "daily", "operators", "departments", "faq_top", "faq_gaps",
            "incidents", "suggestions"} <= set(wb.sheetnames)
    kpis = {row[0]: row[1] for row in wb["kpis"].iter_rows(min_row=3, values_only=True)}
    assert kpis["サービスレベル / Service level"] == 50
    assert kpis["平均処理時間 / Average handle time"] == 255
    assert kpis["応答件数 / Answered"] == 8
    ops = {row[0]: row[1] for row in wb["operators"].iter_rows(min_row=3, values_only=True)}
    assert ops == {"op01": 3, "op02": 2, "op03": 1, "op04": 2}
    html = (folder / files["html"]).read_text(encoding="utf-8")
    assert "<svg" in html and "<script" not in html
    if shutil.which("pdftoppm"):
        # this run's own page image (tests run in parallel: nothing shared is looked at)
        subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(pdf),
                        str(tmp_path / "report-monthly")], check=True)
        (page,) = tmp_path.glob("report-monthly*.png")
        assert page.stat().st_size > 1000, "the PDF's first page rendered empty"
        shutil.copy(page, artifacts_dir / f"report-monthly-{env.database_url.split(':')[0]}.png")


def test_failed_generation_is_recorded(env: Settings, factory: sessionmaker[Session],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with transaction(factory) as s:
        report_id = jobs.create_report(s, tenant="city", kind="interim",
                                       start=date(2026, 4, 1), end=date(2026, 12, 1)).id
    from reports import render

    def broken(*_a: object, **_k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(render, "write_pdf", broken)
    with pytest.raises(OSError):
        jobs.generate_report(report_id)
    with factory() as s:
        row = s.get(Report, report_id)
        assert row is not None and row.status == "failed" and "disk full" in row.message


def test_bad_periods_are_refused(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        with pytest.raises(ValueError):
            jobs.create_report(s, tenant="city", kind="weekly", start=date(2026, 1, 1),
                               end=date(2026, 2, 1))
        with pytest.raises(ValueError):
            jobs.create_report(s, tenant="city", kind="custom", start=date(2026, 2, 1),
                               end=date(2026, 2, 1))


def test_cron_jobs(env: Settings, month: sessionmaker[Session]) -> None:
    from sqlalchemy import func, select

    from common.models.reports import KpiRollup, KpiRollupState, KpiTransferRollup
    from reports.worker import build_cron

    client = redis.Redis.from_url(env.redis.url)
    try:
        cron = build_cron(env, client)
        registered = {job.name: job for job in cron.get_jobs()}
    finally:
        client.close()
    assert registered["monthly_reports"].cron == "0 3 1 * *"
    assert registered["kpi_rollup"].interval == 300
    done = jobs.kpi_rollup()
    assert set(done["complete_until"]) == {"city"}
    with month() as s:
        state = s.get(KpiRollupState, "city")
        assert state is not None
        total = sum(sums[0] for sums in s.scalars(select(KpiRollup.sums)))  # contacts first
        assert total == 18  # every synthetic call, September to November
        assert s.scalar(select(func.count()).select_from(KpiTransferRollup)) == 4
