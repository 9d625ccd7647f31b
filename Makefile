# make up    — install what is missing, build + deploy apps/*, serve on 127.0.0.1:8080 with ./fazt.db
# make test  — install what is missing, run the test suite
# make bench — run the benchmarks and write bench/README.md
# make bench-docs N=10000000 — only the documents benchmark (fazt-host vs PostgreSQL) at N documents
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
SDK := guest-sdk

export PATH := $(BIN):$(PATH)

N ?= 1000000

.PHONY: up test bench bench-docs bench-deps deps clean

deps: $(VENV)/.installed $(SDK)/node_modules/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { apt-get update -q && apt-get install -yq python3 python3-venv python3-dev; }
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run: make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

$(SDK)/node_modules/.installed: $(SDK)/package.json $(SDK)/package-lock.json
	@command -v npm >/dev/null || { apt-get update -q && apt-get install -yq nodejs npm; }
	cd $(SDK) && npm ci --no-audit --no-fund
	@touch $@

up: deps
	$(BIN)/fazt-host up --deploy $(wildcard apps/*)

test: deps
	$(BIN)/pytest -q tests

# psycopg for the documents benchmark's PostgreSQL side, and the PostgreSQL 15 server itself.
bench-deps: deps $(VENV)/.bench-installed
	@test -x /usr/lib/postgresql/15/bin/initdb || { apt-get update -q && apt-get install -yq postgresql; }

$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev,bench]'
	@touch $@

bench: bench-deps
	@command -v wrk >/dev/null || { apt-get update -q && apt-get install -yq wrk; }
	$(BIN)/python bench/run.py

bench-docs: bench-deps
	$(BIN)/python bench/run.py --only docs --docs-n $(N)

clean:
	rm -rf $(VENV) $(SDK)/node_modules
