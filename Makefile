# The two commands of the README:  make serve  |  make test
# Both create .venv with Python 3.11+ and install the project on first use.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	&& { echo $$p; break; }; done)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench bench-quick

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,browser]'
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/python examples/base/main.py serve

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples bench
	$(VENV)/bin/ruff format --check src tests examples bench
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest

# Benchmarks side by side with pgqueuer, procrastinate and huey (installs them on first use).
bench: $(STAMP)
	$(VENV)/bin/python -m bench

bench-quick: $(STAMP)
	$(VENV)/bin/python -m bench --quick
