# adni_lightning — common tasks. `make install test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/synthetic.yaml

# Every package pinned to the versions of the environment that gave the README's figures (`make lock` writes it).
# `make install LOCK=` installs the newest versions pyproject.toml allows instead.
LOCK ?= requirements/lock.txt
# torch comes alone from this index, before everything else: PyPI's Linux torch is a CUDA build of several GB.
# A CUDA machine: make install TORCH_INDEX=https://download.pytorch.org/whl/cu130 (the cuXXX of its driver).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH ?= $(or $(if $(LOCK),$(shell grep -m1 '^torch==' $(LOCK))),torch)
# An unreachable index must cost seconds: one try, a short timeout, then the default index.
FAIL_FAST := --timeout 10 --retries 1

.PHONY: install torch lock lint typecheck format test test-slow train cv tensorboard notebook bench reproduce clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null && echo "keeping the torch in $(VENV)" || $(MAKE) --no-print-directory torch
	$(BIN)/pip install --quiet $(if $(LOCK),--constraint $(LOCK)) -e ".[dev]"

# torch alone (its dependencies come with the project, pinned by the lock).
torch: $(BIN)/python
	$(BIN)/pip install --quiet --no-deps $(FAIL_FAST) --index-url $(TORCH_INDEX) "$(TORCH)" \
	  || { echo "$(TORCH_INDEX) has no $(TORCH) or cannot be reached: installing it from the default index" \
	       "(on Linux x86_64 that is a CUDA build)"; $(BIN)/pip install --quiet --no-deps "$(TORCH)"; }

# Pin every package of $(VENV) except the project itself; torch without its local label (+cpu, +cu130), so the
# same lock fits a CPU and a CUDA build of that version.
lock:
	@mkdir -p $(dir $(LOCK))
	{ echo "# make lock: every package of the environment that gave the README's figures (Python" \
	    "$$($(BIN)/python -c 'import platform; print(platform.python_version())')). make install uses it."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v -i '^adni.lightning' | sed 's/^torch==\([^+]*\)+.*/torch==\1/'; \
	} > $(LOCK).tmp && mv $(LOCK).tmp $(LOCK)

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy on the package, configured in pyproject.toml ([tool.mypy]): batch keys and the class/label vocabulary checked.
typecheck:
	$(BIN)/mypy

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

# The notebook executed headless on the run its RUN_DIR names (runs/synthetic unless edited), into runs/notebook.
notebook:
	$(BIN)/jupyter nbconvert --to notebook --execute notebooks/explore.ipynb --output-dir runs/notebook

tensorboard:
	$(BIN)/tensorboard --logdir runs

bench:
	$(BIN)/python benchmarks/data_path.py

# The default run from scratch, compared with the README's figures: a report and exit 1 when they differ.
# `make reproduce WRITE=1` makes the new figures the README's.
reproduce:
	$(BIN)/python benchmarks/default_run.py $(if $(WRITE),--write-readme)

clean:
	rm -rf runs data/synthetic/.cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
