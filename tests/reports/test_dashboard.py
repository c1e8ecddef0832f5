"""The KPI dashboard and the reports pages: roles, figures of the synthetic month,
CSV/Excel exports, report generation through a real rq worker and downloads."""

from __future__ import annotations

import csv
import io

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from openpyxl import load_workbook
from rq import Queue, SimpleWorker

from common.db import transaction
from common.models.reports import Report
from common.settings import Settings
from tests.reports import synthetic
from tests.web.conftest import MakeUser, csrf, login
from web.db import resources

OCT = {"from": "2026-10-01", "to": "2026-10-31"}


@pytest.fixture
def loaded(app: Flask) -> Flask:
    with transaction(resources(app).factory) as session:
        synthetic.load(session)
    return app


@pytest.fixture
def sup(loaded: Flask, make_user: MakeUser) -> FlaskClient:
    make_user("sup", {"supervisor"})
    c = loaded.test_client()
    assert login(c, "sup").status_code == 302
    return c


def test_roles(loaded: Flask, make_user: MakeUser) -> None:
    anon = loaded.test_client()
    assert anon.get("/kpi/").status_code == 302
    make_user("op", {"operator"})
    c = loaded.test_client()
    login(c, "op")
    assert c.get("/kpi/").status_code == 403
    assert c.get("/kpi/reports").status_code == 403
    make_user("adm", {"administrator"})
    c = loaded.test_client()
    login(c, "adm")
    assert c.get("/kpi/", query_string=OCT).status_code == 200


def test_dashboard_shows_the_month(sup: FlaskClient) -> None:
    page = sup.get("/kpi/", query_string=OCT).get_data(as_text=True)
    assert "KPI実績と目標" in page and "<svg" in page and "中央公民館" in page
    data = sup.get("/kpi/summary.json", query_string=OCT).get_json()
    assert data["kpis"] == synthetic.EXPECTED_TOTAL
    kiosk = sup.get("/kpi/summary.json", query_string={**OCT, "channel": "kiosk"}).get_json()
    assert (kiosk["kpis"]["offered"], kiosk["kpis"]["answered"]) == (3, 2)
    today = sup.get("/kpi/")
    assert today.status_code == 200 and 'http-equiv="refresh"' in today.get_data(as_text=True)
    assert sup.get("/kpi/", query_string={"from": "bad"}).status_code == 400
    assert sup.get("/kpi/", query_string={"from": "2026-10-02", "to": "2026-10-01"}
                   ).status_code == 400


def test_exports(sup: FlaskClient) -> None:
    resp = sup.get("/kpi/export.csv", query_string={**OCT, "table": "operators"})
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    assert {r[0]: int(r[1]) for r in rows[1:]} == {"op01": 3, "op02": 2, "op03": 1, "op04": 2}
    resp = sup.get("/kpi/export.xlsx", query_string=OCT)
    wb = load_workbook(io.BytesIO(resp.data))
    assert {"kpis", "daily", "hourly", "heatmap", "operators", "services", "departments",
            "procedures", "kiosks", "satisfaction", "out_of_hours"} == set(wb.sheetnames)
    dist = {r[0]: r[1] for r in wb["satisfaction"].iter_rows(min_row=3, values_only=True)}
    assert dist == {1: 0, 2: 1, 3: 1, 4: 1, 5: 1}
    assert sup.get("/kpi/export.csv", query_string={**OCT, "table": "nope"}).status_code == 404
    assert sup.get("/kpi/export.csv", query_string=OCT).status_code == 404
    assert sup.get("/kpi/export.pdf", query_string=OCT).status_code == 404


def test_generate_and_download(sup: FlaskClient, loaded: Flask, web_settings: Settings,
                               make_user: MakeUser, monkeypatch: pytest.MonkeyPatch) -> None:
    token = csrf(sup, "/kpi/reports")
    assert sup.post("/kpi/reports", data={"kind": "monthly", "month": "2026-13",
                                          "csrf_token": token}).status_code == 302
    assert sup.post("/kpi/reports", data={"kind": "monthly", "month": "2026-10",
                                          "csrf_token": token}).status_code == 302
    with resources(loaded).factory() as s:
        rows = s.query(Report).all()
    assert [(r.kind, r.status, str(r.period_start)) for r in rows] == [
        ("monthly", "queued", "2026-10-01")]
    page = sup.get("/kpi/reports").get_data(as_text=True)
    assert 'http-equiv="refresh"' in page and "<progress" in page
    monkeypatch.setenv("MADOGUCHI_SITE__DATA_DIR", str(web_settings.data_dir))
    monkeypatch.setenv("MADOGUCHI_DATABASE__URL", web_settings.database_url)
    monkeypatch.setenv("MADOGUCHI_REDIS__URL", web_settings.redis.url)
    client = redis.Redis.from_url(web_settings.redis.url)
    SimpleWorker([Queue("reports", connection=client)], connection=client).work(burst=True)
    client.close()
    listing = sup.get("/kpi/reports.json").get_json()["reports"]
    assert listing[0]["status"] == "done" and listing[0]["files"] == ["html", "pdf", "xlsx"]
    rid = listing[0]["id"]
    pdf = sup.get(f"/kpi/reports/{rid}/report.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    pdf.close()
    xlsx = sup.get(f"/kpi/reports/{rid}/report.xlsx")
    assert load_workbook(io.BytesIO(xlsx.data))["kpis"]["A1"].value.startswith("KPI実績と目標")
    xlsx.close()
    assert sup.get(f"/kpi/reports/{rid}/report.exe").status_code == 404
    make_user("townsup", {"supervisor"}, tenant_id="town")
    other = loaded.test_client()
    login(other, "townsup")
    assert other.get(f"/kpi/reports/{rid}/report.pdf").status_code == 404
    assert other.get("/kpi/reports.json").get_json()["reports"] == []


def test_quarter_hours_and_months(sup: FlaskClient) -> None:
    day = {"from": "2026-10-01", "to": "2026-10-01"}
    resp = sup.get("/kpi/export.csv", query_string={**day, "table": "quarters"})
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    assert [(r[0], r[1]) for r in rows[1:]] == [("00:00", "0"), ("09:00", "2")]
    year = {"from": "2026-04-01", "to": "2027-03-31"}
    resp = sup.get("/kpi/export.csv", query_string={**year, "table": "monthly"})
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [("2026-09", "0", "0"),
                                                       ("2026-10", "13", "8"),
                                                       ("2026-11", "1", "1")]
