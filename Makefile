# Two commands for a newcomer: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PEOPLE ?= 5000
UI_PORT ?= 3000
SANDBOX_PORT ?= 8765
SIZE ?= 10000
LIMIT_SCALE ?= 1
UNTIL ?= hourly
FROM ?=

.PHONY: install run shell test soak bench pipeline eval lint validate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The sandbox, the Dagster UI on http://127.0.0.1:$(UI_PORT) and a first full run; Ctrl-C stops it all.
run: install
	$(BIN)/cdp run --people $(PEOPLE) --ui-port $(UI_PORT) --sandbox-port $(SANDBOX_PORT)

## A bash shell with `make run`'s environment: cdp, dg, dagster and the venv's python first on PATH, the sandbox's
## credentials, DAGSTER_HOME, the warehouse and the URLs (`cdp env`'s lines, read after ~/.bashrc so that a PATH
## set there, by pyenv or conda say, does not hide the venv); exit leaves it.
shell: install
	@$(BIN)/cdp env --ui-port $(UI_PORT) --sandbox-port $(SANDBOX_PORT) > $(VENV)/stack.env
	@printf '%s\n' '[ -f ~/.bashrc ] && . ~/.bashrc' '. $(abspath $(VENV))/stack.env' 'unset MAKELEVEL MAKEFLAGS MFLAGS' \
		'echo "cdp, dg and make run'"'"'s environment are set here (UI $$CDP_UI_URL); exit to leave"' > $(VENV)/stack.bashrc
	@exec bash --rcfile $(VENV)/stack.bashrc -i

## The test suite.
test: install
	$(BIN)/python -m pytest

## The soak: twelve hourly runs and a nightly one under injected faults, then nothing lost or sent twice.
soak: install
	$(BIN)/python -m pytest -m soak -n0 tests/test_soak.py

## The benchmark at SIZE people (10000, 100000 or 1000000): every stage timed, the targets judged, docs/benchmarks.md.
## LIMIT_SCALE multiplies every rate limit (sandbox and connectors alike); UNTIL is the last stage to run; FROM
## resumes a stopped run at that stage, on the world and warehouse it left.
bench: install
	$(BIN)/cdp bench --people $(SIZE) --limit-scale $(LIMIT_SCALE) --until $(UNTIL) $(if $(FROM),--from $(FROM)) --markdown docs/benchmarks.md

## One headless run of every asset against a freshly started sandbox, with a summary.
pipeline: install
	$(BIN)/cdp pipeline --people $(PEOPLE)

## A headless run into data/eval/$(PEOPLE), then identity resolution scored against the world's truth
## (docs/identity.md).
eval: install
	$(BIN)/cdp eval --people $(PEOPLE) --markdown docs/identity.md

lint: install
	$(BIN)/ruff check .

## dg check defs in make run's environment (`cdp env`): the definitions load only where every base URL, secret and
## the privacy key are set.
validate: install
	eval "$$($(BIN)/cdp env --ui-port $(UI_PORT) --sandbox-port $(SANDBOX_PORT))" && \
		VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/dg check defs

clean:
	rm -rf data .pytest_cache
