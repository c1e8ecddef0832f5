"""reports: rq jobs for everything slow or scheduled (KPI roll-ups, reports, purges,
health history)."""
