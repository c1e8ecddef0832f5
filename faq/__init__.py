"""FAQ and manual base: one source for phone and kiosk, city approval of every change.

A plain synchronous library: nothing here does I/O at import. Callers (web views, rq
jobs, the live-transcript suggester) pass a SQLAlchemy ``Session`` and an ``Actor``;
each function enforces the actor's roles itself.

Modules: ``services`` (content and workflow), ``transfer`` (CSV/Excel import and
export), ``search`` (suggest), ``store`` (the shared search index in Redis), ``jobs``
(rq re-index job), ``usage`` (usage counts), ``gaps`` (gap finder), ``seed`` (sample
content).
"""
