# The two commands of the README: `make test` and `make demo`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-all venv clean-venv

venv: $(STAMP)

# Reinstall when setup.py changes; the editable install picks up source edits by itself.
$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# Also runs the tests marked slow.
test-all: $(STAMP)
	$(PY) -m pytest -q --runslow tests

clean-venv:
	rm -rf $(VENV)
