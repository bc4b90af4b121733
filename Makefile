# Two entry points for a fresh Linux machine with Python 3.11:
#   make up    set everything up, then run the whole local stack (Triton + gateway)
#   make test  set everything up, then run lint, type checks and the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup up test lint build clean

setup: $(STAMP)

# The Open Voice OS skills pinned in constraints.txt go in without their dependencies (which
# do not resolve with ours): language-id training only reads their locale files.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[train,triton,loadtest,dev]'
	$(BIN)/pip install -q --no-deps -c constraints.txt $$(grep -E '^ovos-skill-[a-z0-9-]+==' constraints.txt)
	touch $(STAMP)

up: setup
	test -f model_repository/digits_cnn/config.pbtxt || $(BIN)/modelgate build
	$(BIN)/modelgate up

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	bash scripts/ensure-prometheus.sh
	$(BIN)/pytest

build: setup
	$(BIN)/modelgate build

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
