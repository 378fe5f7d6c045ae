VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench bench-quick clean system-deps hub-deps

# What the tests need beyond Python: Debian's chromium (the browser tests drive it with
# Playwright, whose own browser download cannot work here) and curl (a notebook shows a call).
SYSTEM_DEPS := chromium curl
# The JupyterHub tests run the real proxy, configurable-http-proxy from npm, installed here
# (git ignores it) rather than globally (tests/support/hub.py looks for it here).
HUB_DIR := .hub
CHP := $(HUB_DIR)/node_modules/.bin/configurable-http-proxy

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m asyncnb.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check asyncnb jupyter_extension tests bench tools
	$(VENV)/bin/ruff format --check asyncnb jupyter_extension tests bench tools
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

system-deps:
	@missing=""; for c in $(SYSTEM_DEPS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
	  else \
	    echo "make test needs$$missing: install it (Debian: sudo apt-get install$$missing), then run make test again"; \
	    exit 1; \
	  fi; \
	fi

hub-deps:
	@if [ ! -x $(CHP) ]; then \
	  if ! command -v npm >/dev/null 2>&1; then \
	    echo "make test needs npm for configurable-http-proxy: install Node.js 20 or later with npm (Debian: sudo apt-get install nodejs npm), then run make test again"; \
	    exit 1; \
	  fi; \
	  echo "installing configurable-http-proxy (npm, into $(HUB_DIR))"; \
	  npm install --prefix $(HUB_DIR) --no-audit --no-fund --loglevel=error configurable-http-proxy >/dev/null; \
	fi

test: $(STAMP) system-deps hub-deps lint typecheck
	$(PY) -m pytest -q

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

bench: $(STAMP)
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	$(PY) -m bench.report

bench-quick: $(STAMP)
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	$(PY) -m bench.report --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
