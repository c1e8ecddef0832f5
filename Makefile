# Madoguchi. `make` lists the targets.
.DEFAULT_GOAL := all
PY := .venv/bin/python
# the project's own packages (what mypy checks; never .venv or tests)
PACKAGES := common ari_app kiosk_bridge kiosk_agent web faq kpi reports stack transcriber
# e.g. make lint PIP_AUDIT_FLAGS="--vulnerability-service osv"
PIP_AUDIT_FLAGS ?=

all: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

setup: ## install what the running system needs (idempotent)
	@scripts/setup.sh run

run: ## set up and start the whole system on its embedded defaults (Ctrl-C stops it)
	@scripts/setup.sh run
	@$(PY) -m stack.run

down: ## stop a development Asterisk left running
	@$(PY) -m stack.asterisk stop --instance dev

test: ## install what the tests need and run them all (what CI runs)
	@scripts/test.sh

lint: ## ruff, mypy, bandit (our packages) and pip-audit (the installed, pinned dependencies)
	@$(PY) -c "import bandit, pip_audit" 2>/dev/null || \
	  { echo "make lint: bandit and pip-audit are not installed: run scripts/setup.sh test" >&2; exit 1; }
	@$(PY) -m ruff check .
	@$(PY) -m mypy
	@mkdir -p .cache
	@# bandit warns "nosec encountered ..., but no failed test" for every other call on a
	@# line whose finding a nosec marked (PyCQA/bandit#1041): only those lines are dropped
	@$(PY) -m bandit -q -r $(PACKAGES) 2>.cache/bandit.err; status=$$?; \
	  grep -v 'but no failed test on file' .cache/bandit.err >&2; exit $$status
	@# every installed distribution but our own editable one, looked up by name and version
	@if $(PY) -m pip_audit --strict --skip-editable --progress-spinner off \
	    --cache-dir .cache/pip-audit $(PIP_AUDIT_FLAGS) >.cache/pip-audit.txt 2>&1; then \
	    cat .cache/pip-audit.txt; \
	  else cat .cache/pip-audit.txt >&2; \
	    if grep -qE 'could not be audited|ConnectionError|Max retries|NameResolution|timed out' \
	        .cache/pip-audit.txt; then \
	      echo "make lint: pip-audit could not reach its vulnerability database (by default" \
	        "the package index's JSON API; the OSV database with" \
	        "PIP_AUDIT_FLAGS=\"--vulnerability-service osv\"), so no dependency was checked." \
	        "Run it where one of them answers." >&2; \
	    else \
	      echo "make lint: pip-audit found known vulnerabilities (above): raise those pins in" \
	        "pyproject.toml" >&2; \
	    fi; exit 1; fi

bench: ## run every benchmark in bench/ (writes bench/results/*.json)
	@scripts/setup.sh test
	@for b in bench/[a-z]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

phones: ## print every phone's SIP credentials
	@$(PY) -m stack.phones

test-phones: ## bundled test phones: register op01 (or PHONES="op01 op02") and answer every call
	@$(PY) -m stack.testphones $(or $(PHONES),op01)

test-call: ## place one test call into the running system and print what it recorded
	@$(PY) -m stack.testcall

kiosk-url: ## a development kiosk's start URL (KIOSK=k02; default the first kiosk)
	@$(PY) -m web.cli kiosk dev-url $(or $(KIOSK),$$($(PY) -c 'from common.settings import load_settings; print(load_settings().kiosks[0].id)'))

create-admin: ## create an administrator account (asks for the password)
	@$(PY) -m web.cli create-admin

seed-dev: ## development: a user for each role nobody holds yet, passwords printed once
	@$(PY) -m web.cli seed-dev

.PHONY: all setup run down test lint bench phones test-phones test-call kiosk-url create-admin seed-dev
