#!/usr/bin/env bash
# Install what the tests need and run them all: lint, type check, then pytest (unit and
# integration, SQLite and PostgreSQL). This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh test
scripts/ensure-services.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
.venv/bin/python -m pytest "$@"
echo "make test: $(( $(date +%s) - start )) s"
