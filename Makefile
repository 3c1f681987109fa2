# One command to run the service, one to test it. Python 3.11+ is the only prerequisite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)

.PHONY: install run test test-django-suite lint format lock db-start db-stop db-status clean \
	bench-db bench-fanout bench-aggregate loadtest capacity

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + ")")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

## Serve on 127.0.0.1:8000 (BIND, WEB_CONCURRENCY override) with gunicorn + gevent.
run: install
	$(PY) manage.py migrate --noinput
	exec $(VENV)/bin/gunicorn -c gunicorn.conf.py

## Run the test suite (what CI runs).
test: install
	$(PY) -m pytest

## Django's own database-backend tests on its stock PostgreSQL backend and on
## ours, plain and under gevent; fails when an outcome differs (about 3 minutes).
test-django-suite: install
	$(PY) -m tests.django_suite.run

## Short Locust runs of every scenario against fresh servers, then the guards of
## loadtests/guards.toml; non-zero exit when one fails (under 2 minutes).
## LOADTEST_ARGS passes options, e.g. LOADTEST_ARGS="--env HTTP_POOL_MAXSIZE=1".
loadtest: install
	$(PY) -m loadtests.loadtest $(LOADTEST_ARGS)

## Step-load run, USL fit, knee and a workers/hosts recommendation with a
## confirming run; report under reports/ (about 3 minutes). CAPACITY_ARGS passes
## options, e.g. CAPACITY_ARGS="--scenario W2 --target-rps 5000".
capacity: install
	$(PY) -m loadtests.capacity $(CAPACITY_ARGS)

## The benchmarks: python -m loadtests.bench runs one workload on several
## servers in the same rounds (3 rounds at 10/100/400 users) and prints medians
## and same-round ratios; see loadtests/README.md. BENCH_ARGS adds options, e.g.
## BENCH_ARGS="--compare <git rev>" (also run that revision, repeatable) or
## BENCH_ARGS="--rounds 1 --seconds 10 --users 100".
BENCH_ARGS ?=

## W2 on gevent + pool vs gthread, each on its defaults and on the other's database budget (about 12 minutes).
bench-db: install
	$(PY) -m loadtests.bench --workload W2 --compare gthread $(BENCH_ARGS)

## W1 fan-out HTTP on 2 gevent workers against the stub, and the asyncio baseline
## (aiohttp under uvicorn) in the same rounds (about 7 minutes).
bench-fanout: install
	$(PY) -m loadtests.bench --workload W1 --compare asyncio $(BENCH_ARGS)

## The aggregation API (5 HTTP + 1 SQL sources) at 10/100/400 users (~4 minutes).
bench-aggregate: install
	$(PY) -m loadtests.bench --workload AGG $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Re-resolve requirements.in into exact pins in requirements.txt.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --disable-pip-version-check -r requirements.in
	{ sed -n '1,2p' requirements.txt; .venv-lock/bin/pip freeze --exclude-editable | sort -f; } > requirements.txt.new
	mv requirements.txt.new requirements.txt
	rm -rf .venv-lock

## The embedded development PostgreSQL (.data/postgres); `make run` starts it.
db-start: install
	$(PY) -m project.embedded_pg start
db-stop: install
	$(PY) -m project.embedded_pg stop
db-status: install
	$(PY) -m project.embedded_pg status

clean: db-stop
	rm -rf $(VENV) .pytest_cache .ruff_cache
