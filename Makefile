# Two commands do everything on a fresh machine:
#   make demo   embedded PostgreSQL + demo production database + one full refresh
#   make test   the whole test suite (lint included)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint ui bench bench-scrub install postgres clean

$(INSTALLED): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

postgres:
	@scripts/ensure-postgres.sh

install: $(INSTALLED) postgres

demo: install
	$(BIN)/refresh-pipeline demo

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Not part of the test suite: the refresh against a plain clone, at scale S (make bench BENCH_ARGS="--scale 4")
BENCH_ARGS ?= --scale 1 --steps
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Not part of the test suite: scrub on one long text against the same text line by line
bench-scrub: install
	$(BIN)/python bench/scrub_sizes.py $(BENCH_ARGS)

ui: install
	$(BIN)/refresh-pipeline ui --config .work/demo.yaml

clean:
	-$(BIN)/refresh-pipeline server stop --config .work/demo.yaml
	rm -rf .work $(VENV)
