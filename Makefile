# paysys: set-up and run. Every target that needs Python depends on the venv, which is
# (re)installed only when the lock file changes (stamp file .venv/.installed).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# the whole dependency tree, pinned with hashes (pip-compile --generate-hashes of requirements-dev.txt):
# a fresh clone installs exactly what CI tested
LOCK    := requirements-dev.lock
# the interpreter the venv is built from: python3.11 when on PATH, else python3 (>= 3.11 either way)
ifeq ($(origin PYTHON),undefined)
PYTHON  := $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
endif
PORT    ?= 8000
QUEUE   ?=
ARGS    ?=
# every worker's queue (tests/test_topology.py checks it against paysys/topology.py)
QUEUES  := core orders polling funds points accounting notifications notify_delivery check_back maintenance sandbox

# Procfile commands (python, celery) resolve to the venv's; every process of the stack gets the
# same public address.
run demo scenarios: export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
run demo scenarios: export PORT := $(PORT)
run demo scenarios: export PUBLIC_BASE_URL ?= http://127.0.0.1:$(PORT)

.PHONY: help venv run demo scenarios test lint lint-imports mutate migrate worker beat clean

help:
	@echo "paysys make targets:"
	@echo "  make run                 migrate, print where to click, run web + one worker per queue + beat, restarting any that exits (PORT=$(PORT))"
	@echo "  make demo                pay four orders over HTTP (three at the bank, one from a wallet) against PUBLIC_BASE_URL (starts the stack if nothing answers)"
	@echo "  make scenarios           the course's nine fault scenarios, one table row each (starts the stack if nothing answers)"
	@echo "  make test [ARGS=...]     run the test suite (.venv/bin/pytest ARGS)"
	@echo "  make lint-imports        check the import rules between the layers (.importlinter)"
	@echo "  make lint                ruff: the tree is formatted (ruff format --check) and passes ruff check (ruff.toml)"
	@echo "  make mutate [MUTATE=...] mutation testing of the money and messaging core (slow; setup.cfg [mutmut])"
	@echo "  make migrate             create and migrate every service database"
	@echo "  make worker QUEUE=NAME   run one service's Celery worker alone (NAME: $(QUEUES))"
	@echo "  make beat                run the beat scheduler alone"
	@echo "  make venv                create .venv and install the hashed lock ($(LOCK))"
	@echo "  make clean               delete var/ (embedded databases, broker, demo merchant) and caches"

venv: $(STAMP)

$(STAMP): $(LOCK)
	@if [ -z "$(PYTHON)" ]; then \
		echo "error: no python3.11 or python3 on PATH; install Python 3.11 or newer (or run: make PYTHON=/path/to/python3.x venv)" >&2; exit 1; fi
	@if ! "$(PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
		echo "error: $(PYTHON) is Python $$("$(PYTHON)" -c 'import platform; print(platform.python_version())'); paysys needs 3.11 or newer." >&2; \
		echo "       install python3.11 (or newer) or run: make PYTHON=/path/to/python3.11 venv" >&2; exit 1; fi
	@if [ -x "$(PY)" ] && ! "$(PY)" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
		echo "removing $(VENV): it was built with a Python older than 3.11"; rm -rf "$(VENV)"; fi
	@if [ ! -x "$(PY)" ]; then echo "creating $(VENV) with $(PYTHON)"; "$(PYTHON)" -m venv "$(VENV)"; fi
	@"$(PY)" -m pip install --disable-pip-version-check -q --require-hashes -r $(LOCK) || { \
		echo "error: pip install -r $(LOCK) failed." >&2; \
		echo "       mysqlclient builds from source: on Debian/Ubuntu run 'apt-get install -y libmariadb-dev pkg-config' and retry." >&2; \
		exit 1; }
	@touch "$(STAMP)"
	@echo "$(VENV) is ready ($$("$(PY)" -c 'import platform; print(platform.python_version())'))"

migrate: venv
	$(PY) manage.py migrate_all

# migrates inside runstack, once it knows no other stack holds this folder or the port
run: venv
	$(PY) manage.py runstack --migrate

demo: venv
	$(PY) manage.py demo

scenarios: venv
	$(PY) manage.py scenario all

test: venv
	$(VENV)/bin/pytest $(ARGS)

lint-imports: venv
	$(VENV)/bin/lint-imports

lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# mutmut runs the embedded default (SQLite files under mutants/var/): one mutant at a time, since
# the mutants share those files. Each run starts afresh (mutmut would keep a survivor's verdict
# after the test that kills it was added). MUTATE narrows it, e.g. MUTATE='paysys.core.money*'.
MUTATE ?=
mutate: venv
	rm -rf mutants
	env -u DATABASE_URL -u CELERY_BROKER_URL $(VENV)/bin/mutmut run --max-children 1 $(MUTATE)
	@mkdir -p var
	$(VENV)/bin/mutmut results --all true > var/mutmut-results.txt || true
	@echo "survivors: $(VENV)/bin/mutmut results; one mutant: mutmut show <name>; all: var/mutmut-results.txt"

worker: venv
	@if [ -z "$(QUEUE)" ]; then echo "usage: make worker QUEUE=<$(shell echo $(QUEUES) | tr ' ' '|')>" >&2; exit 2; fi
	@case " $(QUEUES) " in *" $(QUEUE) "*) ;; *) echo "error: unknown queue '$(QUEUE)'; one of: $(QUEUES)" >&2; exit 2;; esac
	$(VENV)/bin/celery -A paysys worker -Q $(QUEUE) -n $(QUEUE)@%h --concurrency=1 --loglevel=INFO

beat: venv
	$(VENV)/bin/celery -A paysys beat --loglevel=INFO

clean:
	rm -rf var/ mutants/ staticfiles/ .pytest_cache/ .hypothesis/
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
