"""Shared contract of every Madoguchi process. Imports nothing from the others
(``tests/unit/test_layers.py``); engines that compute something live in packages of
their own (``faq``, ``kpi``).

- configuration: ``settings`` (every section, ``load_settings``), ``config_layers`` (TOML
  and environment layers into typed dataclasses), ``hours`` (service hours),
  ``prompts`` (the announcement catalogue);
- records: ``db`` (engine, sessions, base), ``models`` (every table), ``audit`` (who saw
  or changed what);
- messages between processes: ``events`` (typed, versioned), ``commands`` (to the call
  controller), ``bus`` (Redis streams and pub/sub), ``keys`` (Redis names); one module of
  events and keys per feature: ``console_events``, ``faq_events``, ``kiosk``,
  ``transcription``;
- shared rules: ``masking`` (personal data in free text);
- running a process: ``process`` (one ``main()``), ``logging_``, ``health`` (heartbeats
  and the health view).
"""
