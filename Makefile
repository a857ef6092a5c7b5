# The two commands a newcomer needs: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test ui-check lint format bench clean constraints

# constraints.txt pins every package the tests run with; `make constraints` refreshes it.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/runbooks demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -rs

# The local stack's Prefect UI in headless chromium (Debian's package): the run's pages and
# artifact load with the stack's data. Screenshots in build/ui-check/.
ui-check: $(STAMP)
	$(BIN)/python -m scripts.ui_check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m bench.alisim_bench
	$(BIN)/python -m bench.ros_bench
	$(BIN)/python -m bench.runbook_bench
	$(BIN)/python -m bench.side_by_side
	$(BIN)/python -m bench.burst_profile

constraints:
	rm -rf .constraints-venv
	$(PYTHON) -m venv .constraints-venv
	.constraints-venv/bin/python -m pip install --quiet -e '.[dev,bench]'
	.constraints-venv/bin/python -m pip freeze --exclude-editable > constraints.txt
	rm -rf .constraints-venv

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
