# The project's commands. Each makes .venv from the pinned lock file first (once, and again
# whenever pyproject.toml or requirements-dev.lock changes), so a fresh machine needs only Python 3.11+.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench chaos population install lock clean browser oidc

run: $(STAMP)
	$(BIN)/ipc-hub up

# --hazard-log: the run fails unless every test docs/safety/hazard-log.yaml names exists and passes
# in it (tests/safety/plugin.py); a subset run without the option is not checked.
test: $(STAMP) browser oidc
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --hazard-log docs/safety/hazard-log.yaml

# The browser tests drive Debian's Chromium (Playwright's own browser downloads are not used).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); } || true

# A real OpenID Connect provider for the sign-in tests (npm oidc-provider, pinned by tests/oidc/package-lock.json).
oidc: tests/oidc/node_modules/.installed
tests/oidc/node_modules/.installed: tests/oidc/package.json tests/oidc/package-lock.json
	@command -v npm >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q nodejs npm >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q nodejs npm >/dev/null)); } || true
	cd tests/oidc && npm ci --no-audit --no-fund --silent
	@touch $@

bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q wrk >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null)); } || true
	$(BIN)/python -m tests.bench.run $(BENCH_ARGS)

# At least 100,000 envelopes from all four sources while parts of the hub are killed with kill -9;
# prints what was acknowledged and recorded (tests/chaos/run.py). A short run is part of `make test`.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.run $(CHAOS_ARGS)

# Issue 16's check on 10,000 people built through the real feeds (HL7 v2, GP FHIR bundles, MOD
# handovers): each cohort finds exactly the right people (tests/population/run.py). Not in `make test`
# (it takes many minutes); POPULATION_ARGS="--people 1000" for a shorter run.
population: $(STAMP)
	$(BIN)/python -m tests.population.run $(POPULATION_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "IPC Hub needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

# Re-pin the whole dependency tree after changing pyproject.toml: requirements.lock is what the
# production image installs, requirements-dev.lock adds the test tools.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install -q .
	.lockenv/bin/pip freeze --exclude ipc-hub | sort > requirements.lock
	.lockenv/bin/pip install -q ".[test]"
	.lockenv/bin/pip freeze --exclude ipc-hub | sort > requirements-dev.lock
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .pytest_cache .bench tests/oidc/node_modules tests/browser/screenshots
