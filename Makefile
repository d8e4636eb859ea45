# adni_lightning — common tasks. `make install test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/synthetic.yaml

.PHONY: install lint format test test-slow train cv tensorboard bench reproduce clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# CPU torch first: an unpinned torch would pull a multi-GB CUDA build. On a GPU machine install the
# CUDA build of torch yourself before `make install`.
install: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test:
	$(BIN)/python -m pytest -q -m "not slow"

test-slow:
	$(BIN)/python -m pytest -q -m slow

train:
	$(BIN)/python -m adni_lightning fit --config $(CONFIG)

cv:
	$(BIN)/python -m adni_lightning cv --config $(CONFIG) --folds 5

tensorboard:
	$(BIN)/tensorboard --logdir runs

bench:
	$(BIN)/python benchmarks/data_path.py

# The README's figures for the default run, measured again from scratch and written into README.md.
reproduce:
	$(BIN)/python benchmarks/default_run.py --write-readme

clean:
	rm -rf runs data/synthetic/.cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
