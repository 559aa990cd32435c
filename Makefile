# SandTrap: `make run` starts the honeypot, `make test` runs every check. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?=
PYTEST_ARGS ?=

.PHONY: run test lint typecheck unit image docker test-engine venv bench bench-smoke test-tools clean help web vendor

help:
	@echo "make run    - set up, build the target image if needed, start SandTrap (CONFIG=file.yaml)"
	@echo "make test   - set up, then ruff, mypy and pytest (with a real Docker engine)"
	@echo "make image  - build the target image (skipped when up to date) and SandTrap's image"
	@echo "make web    - start the analyst's web console on 127.0.0.1:8080 (CONFIG=file.yaml)"
	@echo "make vendor - re-vendor the console's asciinema-player from npm (needs npm; result is committed)"
	@echo "make bench  - run the benchmarks and write docs/performance.md"
	@echo "make bench-smoke - a quick run of the benchmark harness (CI), writes nothing"

$(VENV)/.stamp: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "is ignored" || true
	@$(BIN)/python -c "import sandtrap" || { echo "make: installing sandtrap into $(VENV) failed" >&2; exit 1; }
	@touch $@

venv: $(VENV)/.stamp

docker:
	@QUIET=1 scripts/ensure-docker

# The tests also run sandboxes under gVisor: as root, register Debian's runsc with the engine
# (installed when missing; a reload, not a restart). Elsewhere the runsc tests skip.
test-engine: docker
	@if [ "$$(id -u)" -eq 0 ]; then QUIET=1 scripts/ensure-docker --runsc; fi

# System packages: debootstrap builds the offline Debian base; the tests drive real OpenSSH clients
# (ssh, scp, sftp through sshpass) and compare the persona with Debian's real sshd; docker-compose
# runs the deployment test (docker-compose.yml); the web console's browser tests drive Debian's
# chromium through Playwright (tests/browser).
BUILD_PACKAGES := debootstrap
# rsyslog and postgresql: the syslog and postgresql outputs are tested against a real rsyslogd and
# a PostgreSQL server the tests start (tests/integration/test_outputs_{syslog,postgresql}.py);
# lxcfs: the realism checks; nftables: the network sinkhole's image and tests.
TEST_PACKAGES := openssh-client openssh-server openssh-sftp-server sshpass docker-compose lxcfs nftables rsyslog postgresql chromium
# Threat analysis (issue 19): python-magic needs libmagic; py-tlsh builds with g++.
ANALYSIS_PACKAGES := libmagic1 g++

# The target image, then SandTrap's own (Dockerfile; layer cache makes an unchanged tree instant).
image: venv docker
	@scripts/ensure-packages $(BUILD_PACKAGES)
	@SANDTRAP=$(BIN)/sandtrap scripts/build_images.sh

test-tools:
	@scripts/ensure-packages $(TEST_PACKAGES) $(ANALYSIS_PACKAGES)

run: image
	@$(BIN)/sandtrap run $(if $(CONFIG),--config $(CONFIG),)

web: venv
	@$(BIN)/sandtrap web $(if $(CONFIG),--config $(CONFIG),)

# The console's browser library is vendored from npm and committed (src/sandtrap/web/static/vendor,
# versions and licences in VENDORED.json), so nothing here needs node; this target refreshes it.
vendor:
	@scripts/vendor-web

lint: venv
	@$(BIN)/ruff check src tests $(wildcard bench)
	@$(BIN)/ruff format --check src tests $(wildcard bench)

typecheck: venv
	@$(BIN)/mypy

unit: venv
	@$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

test: lint typecheck image test-tools test-engine
	@$(BIN)/pytest --cov --cov-report=term --cov-fail-under=80 $(PYTEST_ARGS)

bench: image
	$(BIN)/python -m bench --write docs/performance.md

bench-smoke: image
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
