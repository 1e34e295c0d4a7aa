# ShopLake: `make run` serves the app, `make test` runs the whole suite.
# Both set everything up on a fresh clone (venv, pinned packages, JVM jars).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
JARS := .cache/jars/spark/.complete .cache/jars/kafka/.complete
# Spark's classes in a class-data-sharing archive: a new JVM starts seconds sooner.
ARCHIVE := .cache/jvm/.complete
PORT ?= 8501
PYTEST_ARGS ?=
# Test files run in three worker processes (pytest-xdist), a file's tests together in one.
# A test is mostly a Spark driver and its JVM, and a file's browser, broker, cluster and
# subprocess waits leave a core idle; three workers keep both cores 95 % busy (vmstat).
# `make test`, quiet machine: 15:59 with two, 13:11 with three (docs/decisions.md).
TEST_WORKERS ?= 3

.PHONY: setup run test test-fast lint format bench browser clean

setup: $(STAMP) $(JARS) $(ARCHIVE)

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

$(JARS): $(STAMP) pipeline/jvm.py
	$(PY) -m pipeline.jvm

$(ARCHIVE): $(JARS)
	$(PY) -m pipeline.jvm archive
	@touch $(ARCHIVE)

browser:
	@bash scripts/ensure_browser.sh

run: setup
	$(VENV)/bin/streamlit run Home.py --server.port $(PORT) --server.address localhost

test: setup browser
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not browser and not kafka and not cluster" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) -m pipeline bench

clean:
	rm -rf $(VENV) .cache
