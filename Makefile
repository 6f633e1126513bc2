# Ember — make targets. `make setup` installs everything a fresh Debian/Ubuntu
# host needs (as root); `make test` runs the whole suite; `make bench` measures.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := runc mmdebstrap uidmap e2fsprogs util-linux golang-github-containers-common python3-venv nftables iproute2 curl qemu-system-x86 qemu-utils cpio
EMBER_TEST_DATA_DIR ?= /var/lib/ember-test
export EMBER_TEST_DATA_DIR

EMBER_DATA_DIR ?= /var/lib/ember

.PHONY: setup system-packages venv compat-deps image test test-unit lint typecheck bench demo clean

setup: system-packages venv

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,compat]'
	touch $@

venv: $(VENV)/.installed

# Vercel's official JS SDK and CLI, pinned by tests/compat/js/package-lock.json.
COMPAT_JS := tests/compat/js
$(COMPAT_JS)/node_modules/.installed: $(COMPAT_JS)/package.json $(COMPAT_JS)/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: installing Debian's nodejs and npm (tests are run on Node.js 20)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm; }
	cd $(COMPAT_JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

compat-deps: $(COMPAT_JS)/node_modules/.installed

# The base image for tests (cached by recipe hash: instant once built).
image: setup
	$(VENV)/bin/ember image build --data-dir $(EMBER_TEST_DATA_DIR)
	$(VENV)/bin/ember image guest --data-dir $(EMBER_TEST_DATA_DIR)

test: setup image compat-deps
	$(PY) -m pytest -m "integration or not integration" tests

test-unit: venv
	$(PY) -m pytest tests/unit

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: venv
	$(VENV)/bin/mypy

# The quickstart: the base image (cached), emberd on a free port, a sandbox used,
# stopped and resumed through the SDK, emberd stopped again.
demo: setup
	$(VENV)/bin/ember image build --data-dir $(EMBER_DATA_DIR)
	$(PY) examples/demo.py --data-dir $(EMBER_DATA_DIR)

bench: setup image
	$(PY) bench/run.py $(if $(QUICK),--quick) --data-dir $(EMBER_TEST_DATA_DIR)

clean:
	rm -rf $(VENV) build dist src/*.egg-info $(COMPAT_JS)/node_modules
