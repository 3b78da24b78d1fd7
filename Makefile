# The two commands of the README. Each creates .venv when it is missing and installs the
# package with the torch pin of constraints.txt: an unpinned torch resolves to a multi-GB
# CUDA build on these machines.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS := dev,demo,report,lab,mnist,lightning,hf,tensorboard,mlflow,wandb,notebook,ray
# `make test-all` adds parquet and the tests marked `full` (the wheel built and installed into a fresh venv).
MORE_EXTRAS := parquet

.PHONY: demo test test-all bench clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m graddoctor.cli.demo

test: $(STAMP) chromium
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q -m "not full" -n auto --dist loadfile

test-all: $(STAMP) chromium
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS),$(MORE_EXTRAS)]"
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q -n auto --dist loadfile

# The report tests open the HTML report in Debian's headless Chromium (no browser download).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "make: could not install Debian's chromium; the browser tests will be skipped" >&2

bench: $(STAMP)
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
