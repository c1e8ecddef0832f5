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

.PHONY: all setup run down test lint bench phones
