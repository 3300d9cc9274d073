# The two set-up commands (see README): `make demo` and `make test`.
# Both create .venv if needed and install the core, every plugin under plugins/ and the
# example third-party plugin in editable mode, with the pinned torch build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# plugins/advinterp-gridablate compiles against the venv's torch: it is installed on its own,
# after torch, without build isolation (see its README); the other plugins install together.
GRIDABLATE := plugins/advinterp-gridablate
PLUGINS := $(filter-out $(GRIDABLATE)/,$(sort $(dir $(wildcard plugins/*/setup.cfg))))
STAMP := $(VENV)/.advinterp-installed
GRIDABLATE_STAMP := $(VENV)/.advinterp-gridablate-installed
PYTEST_ARGS ?=

.PHONY: install browser demo test bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml $(wildcard plugins/*/setup.cfg) examples/custom_plugin/setup.cfg
	$(PIP) install --disable-pip-version-check -q $(TORCH_PINS)
	$(PIP) install --disable-pip-version-check -q $(TORCH_PINS) -e '.[test]' $(foreach p,$(PLUGINS),-e $(p)) -e examples/custom_plugin
	touch $(STAMP)

# Rebuilt when its sources change or the venv was reinstalled. A failed compilation does not
# fail this step: the plugin then installs without its compiled module (`advinterp list` says why).
$(GRIDABLATE_STAMP): $(STAMP) $(GRIDABLATE)/setup.py $(GRIDABLATE)/setup.cfg $(wildcard $(GRIDABLATE)/csrc/*)
	$(PIP) install --disable-pip-version-check -q 'setuptools>=64'
	$(PIP) install --disable-pip-version-check -q --no-build-isolation -e $(GRIDABLATE)
	$(PY) -c "import advinterp_gridablate as g; print('advinterp-gridablate:', g.status())"
	touch $(GRIDABLATE_STAMP)

install: $(STAMP) $(GRIDABLATE_STAMP)

demo: install
	$(VENV)/bin/advinterp demo

# The report's browser test (tests/test_report_browser.py) drives Debian's chromium through
# playwright; `playwright install` (a browser download) is never used. As root, install the
# distribution's chromium when it is missing. Never fatal: without chromium the browser test
# skips, saying why — or fails where ADVINTERP_REQUIRE_BROWSER is set (.ci/run sets it).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then why="not root"; \
	elif ! command -v apt-get >/dev/null; then why="no apt-get"; \
	else echo "browser: installing chromium (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && exit 0; \
	  why="apt-get install chromium failed"; fi; \
	echo "browser: no $(CHROMIUM) ($$why): install Debian's chromium, or the report's browser test skips"

test: install browser
	MPLBACKEND=Agg $(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	MPLBACKEND=Agg $(PY) benchmarks/run_all.py

clean-venv:
	rm -rf $(VENV)
