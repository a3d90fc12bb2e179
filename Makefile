# clinrisk — every target is one to three commands; `make test` works on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint typecheck test run train bench openapi check-openapi system-deps lock clean

# requirements.lock pins the whole development environment (tests, Spark, browser driver);
# requirements-runtime.lock is its subset for the service image (Dockerfile).
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock && $(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Browser tests need Debian's chromium, Spark needs a JRE: installed when missing (root, apt).
system-deps:
	@command -v chromium >/dev/null && command -v java >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium openjdk-17-jre-headless; }

test: system-deps lint typecheck
	$(BIN)/pytest

train: install
	for m in diabetes readmission cvd; do $(BIN)/clinrisk train $$m || exit 1; done

run: install
	$(BIN)/python -m service.devserver

bench: install
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python bench/api_load.py && $(BIN)/python bench/api_load.py --workers 2
	$(BIN)/python bench/batch.py
	$(BIN)/python bench/startup.py && $(BIN)/python bench/image_deps.py
	$(BIN)/python bench/faults.py
	$(BIN)/python bench/cds_latency.py

openapi: install
	$(BIN)/python -m service.openapi > openapi.yaml

check-openapi: install
	$(BIN)/python -m service.openapi | diff -u openapi.yaml -

lock: install
	$(BIN)/pip freeze --exclude-editable | grep -v -i '^py-spy' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
