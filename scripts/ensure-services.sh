#!/usr/bin/env bash
# Make sure the local PostgreSQL (for the second test pass) is running; start it with
# Debian's cluster tools when it is installed but stopped. Redis for tests is started by
# the test session itself on a free port.
set -euo pipefail
if command -v pg_lsclusters >/dev/null 2>&1; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    ver=$(pg_lsclusters -h | awk 'NR==1{print $1}')
    if [ -n "$ver" ]; then
      echo "starting PostgreSQL $ver"
      pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    fi
  fi
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.5; done
  # trust authentication for the local test user, as on the development machines
  if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    echo "PostgreSQL is running but user postgres cannot log in over 127.0.0.1;" \
         "the PostgreSQL tests will be skipped (set MADOGUCHI_TEST_PG to a working URL)" >&2
  fi
fi
