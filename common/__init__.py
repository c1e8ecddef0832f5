"""Shared contract of every Madoguchi process: settings, database models, event and
command schemas, Redis key names. Imports nothing from the services."""
