# The two set-up commands (see README): `make demo` and `make test`.
# Both create .venv if needed and install the core, every plugin under plugins/ and the
# example third-party plugin in editable mode, with the pinned torch build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PLUGINS := $(sort $(dir $(wildcard plugins/*/setup.cfg)))
STAMP := $(VENV)/.advinterp-installed
PYTEST_ARGS ?=

.PHONY: install demo test bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml $(wildcard plugins/*/setup.cfg) examples/custom_plugin/setup.cfg
	$(PIP) install --disable-pip-version-check -q $(TORCH_PINS)
	$(PIP) install --disable-pip-version-check -q $(TORCH_PINS) -e '.[test]' $(foreach p,$(PLUGINS),-e $(p)) -e examples/custom_plugin
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/advinterp demo

test: install
	MPLBACKEND=Agg $(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	MPLBACKEND=Agg $(PY) benchmarks/run_all.py

clean-venv:
	rm -rf $(VENV)
