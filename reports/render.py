"""Report output: HTML (Jinja2), PDF (WeasyPrint, Noto CJK fonts, charts as inline SVG)
and Excel (openpyxl, one sheet per table)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from kpi.charts import bar_chart, heatmap_svg
from kpi.definitions import Counts
from kpi.tables import fmt, to_xlsx
from reports.content import ReportContent

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(["html"]))
    env.filters["fmt"] = fmt
    env.filters["cell"] = lambda v: "" if v is None else (f"{v:,}" if isinstance(v, int)
                                                          and not isinstance(v, bool) else v)
    return env


def charts(content: ReportContent) -> dict[str, str]:
    s = content.summary
    days = list(s.daily)
    daily: dict[str, Counts] = s.daily
    if len(days) > 62:
        monthly: dict[str, Counts] = {}
        for day, c in s.daily.items():
            monthly.setdefault(day[:7], Counts()).add(c)
        daily, days = monthly, list(monthly)
    return {
        "daily": bar_chart({"受付 Offered": [daily[d].offered for d in days],
                            "応答 Answered": [daily[d].answered for d in days]},
                           [d[5:] for d in days], title="受付・応答の推移 / Offered and answered"),
        "heatmap": heatmap_svg(s.heatmap(), title="曜日×時間帯 / Weekday × hour"),
        "satisfaction": bar_chart({"件数 Answers": list(s.total.distribution.values())},
                                  [str(k) for k in s.total.distribution], width=320,
                                  title="満足度の分布 / Satisfaction"),
        "staffing": bar_chart({"必要人数 Operators": [r["agents"] for r in content.staffing]},
                              [f"{r['hour']:02d}" for r in content.staffing], width=420,
                              title="必要オペレーター数 / Operators needed (Erlang C)"),
    }


# --------------------------------------------------------------------------- outputs
def render_html(content: ReportContent) -> str:
    content.charts = {k: Markup(v) for k, v in charts(content).items()}  # nosec B704 # kpi.charts escapes its text
    return _env().get_template("report.html").render(r=content)


def write_pdf(html: str, path: Path) -> None:
    from weasyprint import HTML  # lazy: at the top (Pango) it adds ~0.5 s to every rq start

    HTML(string=html, base_url=str(TEMPLATES)).write_pdf(str(path))


def write_all(content: ReportContent, folder: Path,
              progress: Callable[[int, str], None] | None = None) -> dict[str, str]:
    """Write report.html, report.pdf and report.xlsx into ``folder``; returns the names."""
    def step(pct: int, what: str) -> None:
        if progress is not None:
            progress(pct, what)

    folder.mkdir(parents=True, exist_ok=True)
    html = render_html(content)
    (folder / "report.html").write_text(html, encoding="utf-8")
    step(60, "html")
    (folder / "report.xlsx").write_bytes(to_xlsx(content.tables))
    step(70, "xlsx")
    write_pdf(html, folder / "report.pdf")
    step(95, "pdf")
    return {"html": "report.html", "pdf": "report.pdf", "xlsx": "report.xlsx"}
