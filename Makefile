# One-command set-up: `make demo` (main job) and `make test` (test suite) each create the
# virtual environment, install pinned dependencies and the system tools they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WS     ?= indexes
DATA   ?= data
export MMGEN_DATA ?= $(abspath $(DATA))
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

# Debian packages: rsvg-convert renders SVG, npm fetches the emoji corpora, PostgreSQL backs the store tests.
SYSTEM_TOOLS := rsvg-convert:librsvg2-bin npm:npm

.PHONY: setup sysdeps data demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,postgres]'
	touch $(STAMP)

setup: sysdeps $(STAMP)

sysdeps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing (Debian/Ubuntu package names)"; exit 1; fi; fi

data: setup
	$(BIN)/mmgen data fetch all --data-dir $(DATA)

demo: data
	$(BIN)/mmgen index emoji --workspace $(WS)
	$(BIN)/mmgen index openclipart --workspace $(WS)
	$(BIN)/mmgen info --workspace $(WS)
	$(BIN)/mmgen search "red apple" --workspace $(WS) -k 5
	$(BIN)/mmgen search "school bus" --workspace $(WS) -k 5
	$(BIN)/mmgen search "cat face" --workspace $(WS) -k 5 --where style=twemoji
	$(BIN)/mmgen search "a house with a garden" --workspace $(WS) -k 5 --where corpus=openclipart

test: setup
	$(BIN)/python -m pytest

bench: data
	$(BIN)/python benchmarks/bench_index_search.py --workspace build/bench

clean:
	rm -rf $(VENV) build .pytest_cache
