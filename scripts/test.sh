#!/usr/bin/env bash
# Install what the tests need and run them all: lint, type check, then pytest. This is
# what CI runs (.ci/run). docs/testing.md says what runs where and why.
#
#   scripts/test.sh                    everything, in two passes (below)
#   scripts/test.sh tests/web -n 2     pytest with these arguments, after lint
#
# Pass 1: the folders whose tests share no real-time resource (no Asterisk, no audio,
# no browser), spread over every core with pytest-xdist. Pass 2: everything else, one test
# at a time, so calls, audio and browsers never compete for the 2 cores with other tests.
# A new test folder runs in pass 2 until it is listed in PARALLEL.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh test
scripts/ensure-services.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
if [ "$#" -gt 0 ]; then
  .venv/bin/python -m pytest "$@"
  echo "make test: $(( $(date +%s) - start )) s"
  exit 0
fi
PARALLEL=(tests/unit tests/web tests/faq tests/reports)
ignore=()
for folder in "${PARALLEL[@]}"; do ignore+=("--ignore=$folder"); done
# JUnit reports of both passes: `scripts/durations.py test-artifacts/junit-*.xml`
reports=test-artifacts
mkdir -p "$reports"
status=0
.venv/bin/python -m pytest -n auto --junitxml="$reports/junit-parallel.xml" \
  "${PARALLEL[@]}" || status=$?
echo "make test: pass 1 (parallel) done at $(( $(date +%s) - start )) s"
.venv/bin/python -m pytest -p no:xdist --junitxml="$reports/junit-serial.xml" \
  tests "${ignore[@]}" || status=$?
echo "make test: $(( $(date +%s) - start )) s"
exit "$status"
