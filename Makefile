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
# The page's browser test drives Debian's chromium through its chromedriver.
TEST_TOOLS := chromium:chromium chromedriver:chromium-driver

.PHONY: setup sysdeps testdeps data demo test bench bench-peers bench-encoder clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,postgres]'
	# clip-retrieval's own ClipClient for the server tests: its file alone is loaded, so none of its (heavy, numpy<2) deps
	$(BIN)/pip install --quiet --no-deps clip-retrieval==2.45.0
	touch $(STAMP)

setup: sysdeps $(STAMP)

# $(call install_missing,TOOL:PACKAGE ...): apt-get install the packages of the tools not on PATH.
define install_missing
	@missing=""; for pair in $(1); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing (Debian/Ubuntu package names)"; exit 1; fi; fi
endef

sysdeps:
	$(call install_missing,$(SYSTEM_TOOLS))

testdeps:
	$(call install_missing,$(TEST_TOOLS))

data: setup
	$(BIN)/mmgen data fetch all --data-dir $(DATA)

# The demo's joint encoder: trained once on the product protocol's training split (held-out
# concepts never seen, in any style or icon set), then reused. MODEL_MINUTES bounds its training loop;
# ENCODER_FLAGS passes more `mmgen train encoder` options (its defaults were chosen on the protocol's
# development split: README, *Many styles*).
MODEL         ?= product
MODEL_MINUTES ?= 8
ENCODER_FLAGS ?=
# The demo's captioner: trained once with the held-out concepts left out, then reused.
CAPTION_MINUTES ?= 6
PROTO         := $(WS)/protocols/product
TWEMOJI_PNG   := $(DATA)/npm/node_modules/emoji-datasource-twitter/img/twitter/64
SEARCH        := $(BIN)/mmgen search --workspace $(WS)

demo: data
	test -f $(PROTO)/icons-heldout.jsonl || $(BIN)/mmgen data protocol product -o $(PROTO) --data-dir $(DATA)
	test -f $(WS)/models/$(MODEL)/manifest.json || \
	  $(BIN)/mmgen train encoder $(PROTO)/train.jsonl --name $(MODEL) --workspace $(WS) --minutes $(MODEL_MINUTES) $(ENCODER_FLAGS)
	for source in emoji emoji-styles icons openclipart; do \
	  $(BIN)/mmgen index $$source --workspace $(WS) --encoder mmgen:$(MODEL) || exit 1; done
	$(BIN)/mmgen info --workspace $(WS)
	@echo "--- text -> image (robot and skull are concepts held out of training, in every style and icon set)"
	$(SEARCH) "robot" -k 5
	$(SEARCH) "skull" -k 5 --where style=fluent-emoji-flat
	$(SEARCH) "red apple" -k 5 --where style=twemoji
	$(SEARCH) "bicycle" -k 5 --where corpus=tabler
	@echo "--- image -> text, for a held-out Twemoji image (skull)"
	$(SEARCH) --image $(TWEMOJI_PNG)/1f480.png --to text -k 5
	@echo "--- text -> text (the joint encoder's text side is MiniLM)"
	$(SEARCH) "a house with a garden" --to text -k 5 --where corpus=openclipart
	@echo "--- hybrid: vectors fused with keywords (BM25 over captions, file names, tags); ranks of both sides shown"
	$(SEARCH) "robot" -k 5 --hybrid
	@echo "--- grouped: one result per concept, its styles folded under it"
	$(SEARCH) "face vomiting" --to text -k 3 --group
	@echo "--- held-out recall of the demo model (concepts unseen in training, against the full pool)"
	$(BIN)/mmgen eval retrieval $(PROTO)/heldout-vs-pool.jsonl --encoder mmgen:$(MODEL) --workspace $(WS)
	test -f $(WS)/models/captioner/manifest.json || \
	  $(BIN)/mmgen train captioner --workspace $(WS) --exclude $(PROTO)/heldout-concepts.jsonl --minutes $(CAPTION_MINUTES)
	@echo "--- captions of held-out Twemoji images; true names: skull, robot, sleeping face, orange heart"
	@echo "    (concepts the captioner never trained on; their other styles are in the index it retrieves from)"
	$(BIN)/mmgen caption $(TWEMOJI_PNG)/1f480.png $(TWEMOJI_PNG)/1f916.png $(TWEMOJI_PNG)/1f634.png \
	  $(TWEMOJI_PNG)/1f9e1.png --workspace $(WS)
	@echo "--- browse and query it over HTTP (clip-retrieval's ClipClient works too, at /knn-service):"
	@echo "    $(BIN)/mmgen serve --workspace $(WS)   then open http://localhost:1234/"

test: setup testdeps
	$(BIN)/python -m pytest

bench: data
	$(BIN)/python benchmarks/bench_index_search.py --workspace build/bench

bench-peers: setup
	$(BIN)/python benchmarks/compare_peers.py --json build/peers/compare-peers.json
	$(BIN)/python benchmarks/compare_image_peers.py --json build/peers/compare-image-peers.json

bench-encoder: data
	$(BIN)/python benchmarks/bench_encoder.py --workspace build/bench-encoder --minutes 30

clean:
	rm -rf $(VENV) build .pytest_cache
