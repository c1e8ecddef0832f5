#!/usr/bin/env bash
# Install what Madoguchi needs on a Debian machine, idempotently.
#   scripts/setup.sh run    the running system (make run)
#   scripts/setup.sh test   the running system plus what the tests need (make test)
# Re-running installs nothing that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-run}"

lists=(scripts/packages-run.txt)
[ "$what" = "test" ] && lists+=(scripts/packages-test.txt)

missing=()
for pkg in $(grep -hvE '^\s*(#|$)' "${lists[@]}" | awk '{print $1}'); do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: needs root to install packages (run as root or with sudo)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's kamailio package enables its own service (the stock configuration on every
# address, port 5060, where an Asterisk may listen): the project runs Kamailio itself
# (stack/edge.py), so the packaged service stays off.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled kamailio >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    systemctl disable --now kamailio >/dev/null 2>&1 || true
  else
    echo "setup: the packaged kamailio service is enabled; disable it (it may take port" \
         "5060): sudo systemctl disable --now kamailio" >&2
  fi
fi

# Python environment (a venv in .venv; the pinned dependencies from pyproject.toml).
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$what
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  extra=""
  [ "$what" = "test" ] && extra="[test]"
  echo "setup: installing Python packages into .venv"
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e ".$extra"; } >.venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    echo "setup: pip install failed (log above, also in .venv/pip.log)" >&2
    exit 1
  fi
  touch "$stamp"
fi

# Asterisk 22: the host's, or a Debian sid root file system built once into .cache/.
.venv/bin/python -m stack.asterisk provide

# The Japanese prompts and Asterisk's Japanese words, synthesised with Open JTalk into
# .cache/voice (docs/prompts.md): a few seconds the first time, then only what changed.
.venv/bin/python -m stack.voice build
