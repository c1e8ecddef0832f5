# Madoguchi. `make` lists the targets.
.DEFAULT_GOAL := all
PY := .venv/bin/python

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

lint: ## ruff and mypy
	@$(PY) -m ruff check .
	@$(PY) -m mypy

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
