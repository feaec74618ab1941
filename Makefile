# Two entry points (see README): `make demo` and `make test`.
# Both create or reuse a local virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: demo test test-slow venv lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch 2.14.1 + torchvision 0.29.1 are the pair that import together here (see README).
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m wrel demo

# The default suite leaves out tests marked slow (pyproject.toml addopts: -m 'not slow').
test: venv
	bash scripts/install_browser.sh || echo "browser tests will be skipped"
	$(PY) -m pytest

# Only the slow tests (real training runs, large images); CI runs them after `make test`.
test-slow: venv
	$(PY) -m pytest -m slow

lint: venv
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache
