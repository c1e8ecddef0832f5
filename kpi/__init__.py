"""KPIs of the contact center: the one package that computes them all (docs/kpi.md).

Every figure is computed from the ``calls`` summary columns and a few ``call_events``
kinds by one aggregate SQL query per request (grouped by interval and dimensions), so
the dashboard, the exports and the reports always agree. Intervals are cut in the
site's time zone. The same code runs on SQLite and PostgreSQL. A plain synchronous
library like ``faq``: callers (web views, rq jobs) pass a SQLAlchemy ``Session``.

Modules, each importing only the ones above it:

- ``definitions``: the KPI catalogue (labels, units, targets), ``Counts`` (the additive
  sums every KPI is derived from), ``meets``/``target_of``;
- ``periods``: local-date periods (months, the April fiscal year, interim and final
  report ranges) and their UTC bounds;
- ``erlang``: Erlang C and the operators needed for the service-level target;
- ``query``: the SQL, ``aggregate`` (``Filters``, dimensions, the roll-up ``GRAIN``)
  and the transfers per department;
- ``rollups``: the hourly roll-ups (``rollup``, ``rollup_recent``) and their readers;
- ``summary``: ``summarize``, the whole picture of a period (``Summary``);
- ``tables``: the tables of the dashboard exports and the reports (HTML, CSV, Excel);
- ``charts``: inline SVG charts for the dashboard and the PDF reports.

The engine's API (``__all__``: what callers outside the package use) is also here, for
``import kpi`` then ``kpi.summarize(...)``; the package's own modules and ``reports``
import each name from the module that defines it.
"""

from kpi.definitions import (
    BY_KEY,
    CATALOGUE,
    SURVEY_SCORES,
    Counts,
    KpiDef,
    meets,
    target_of,
    total,
)
from kpi.erlang import agents_needed, erlang_c, erlang_service_level
from kpi.periods import (
    contract_year,
    final_range,
    interim_range,
    local_range,
    month_range,
    previous_month,
)
from kpi.query import (
    DIMENSIONS,
    GRAIN,
    INTERVALS,
    TRANSFER_RESULTS,
    Filters,
    TransferCounts,
    aggregate,
    bucket_expr,
    transfers_by_department,
)
from kpi.rollups import rollup, rollup_recent
from kpi.summary import Summary, summarize

__all__ = [
    "BY_KEY", "CATALOGUE", "SURVEY_SCORES", "Counts", "KpiDef", "meets", "target_of", "total",
    "agents_needed", "erlang_c", "erlang_service_level", "contract_year", "final_range",
    "interim_range", "local_range", "month_range", "previous_month", "DIMENSIONS", "GRAIN",
    "INTERVALS", "TRANSFER_RESULTS", "Filters", "TransferCounts", "aggregate", "bucket_expr",
    "transfers_by_department", "rollup", "rollup_recent", "Summary", "summarize",
]
