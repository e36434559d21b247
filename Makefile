# The two commands a user needs: `make generate CATALOG=...` and `make test`.
# Both create the project-local virtual environment (.venv) on demand from
# pyproject.toml and the pinned constraints.txt.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= data/catalog
ARGS ?=
SAMPLE := data/sample/catalog.parquet

# Prefect keeps its state in the project and sends no analytics.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: install generate demo colourways test test-slow lint query gallery verify maintain weights runs logs ui sample-data clean help

help:
	@echo "make generate CATALOG=path/to/catalog.parquet [OUT=dir] [PAIRS=pairs.parquet] [ARGS='--flags']"
	@echo "make demo [WEIGHTS=PATH]   # the sample catalog on CPU: real weights (auto) or random"
	@echo "make test        # the test suite"
	@echo "make lint        # ruff: lint and format check"
	@echo "make query SQL='select ...' [OUT=dir] [ARGS='--version N | --as-of TIME | --format csv -o FILE']"
	@echo "make gallery [OUT=dir] [ARGS='--version N | -o FILE']   # OUT/gallery.html"
	@echo "make colourways [OUT=dir] ARGS='--palette FILE | --from-image IMG | --inks N [--where SQL]'"
	@echo "make verify [OUT=dir] [ARGS=--fix]   # PNGs match the catalog; orphans listed"
	@echo "make maintain [OUT=dir] [ARGS='--retention-hours H | --dry-run']   # compact, vacuum, checkpoint"
	@echo "make weights [ARGS='--network vgg19 | --url URL']   # the VGG weights into the cache --weights auto reads"
	@echo "make runs | make logs RUN=<id> | make ui   # past runs in Prefect"
	@echo "make sample-data # regenerate data/sample from data/make_sample.py"
	@echo "make bench | bench-plan | bench-catalog | bench-curate | bench-scales | bench-max-size | bench-pipeline [ARGS=...]   # docs/BENCHMARKS.md"
	@echo "make bench-gpu [GPU_PYTHON=python3] [ARGS=...]   # on a GPU machine: every GPU measurement, 8 min"
	@echo "make bench-quality [WEIGHTS=PATH] [ARGS=...]   # real weights: time to the paper's style loss at 256 px"

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

generate: $(STAMP)
	@test -n "$(CATALOG)" || { echo "usage: make generate CATALOG=path/to/catalog.parquet [OUT=dir] [ARGS='--flags']" >&2; exit 2; }
	$(BIN)/designs generate "$(CATALOG)" --out "$(OUT)" $(if $(PAIRS),--pairs "$(PAIRS)") $(ARGS)

# The weights: WEIGHTS=PATH (any known file), else --weights auto where it finds a
# file or can download the paper's, else random weights with one line saying so
# (python -m flows.demo_weights). Real weights: the shipped defaults at a CPU size,
# 192 px and 200 steps (auto: coarse-to-fine at 96 and 192 px for the garments): the six
# sample designs took 101 s on 2 cores (README, "Try it on a CPU").
WEIGHTS ?=
DEMO_FLAGS := --size 192 --steps 200
# Random weights: a TV weight for 128 px instead of 512 (TV sums over pixels), a
# learning rate for 50 steps instead of 1000, and style weights raised because
# random VGG19 features (at the Caffe network's scale) carry no real texture: the
# textures' colours show (a sweep of two).
DEMO_RANDOM_FLAGS := --size 128 --steps 50 --tv-weight 1 --learning-rate 0.05 --grid style_weight=10,100
# The sample pairs: masked garments, a colour-keeping design, a blend and two
# seamless repeats (a half-drop and a brick).
DEMO_PAIRS := --pairs data/sample/pairs.parquet
# Then the half-drop repeats recoloured into four flat inks (their colourways sheet
# shows each beside its parent).
DEMO_COLOURWAYS := --inks 4 --where "params.repeat = 'half-drop'"

demo: $(STAMP)
	@weights=$$($(BIN)/python -m flows.demo_weights $(if $(WEIGHTS),"$(WEIGHTS)")) || exit 2; \
	if [ "$$weights" = random ]; then flags='$(DEMO_RANDOM_FLAGS)'; else flags='$(DEMO_FLAGS)'; fi; \
	echo "$(BIN)/designs generate $(SAMPLE) --out $(OUT) --weights $$weights $$flags $(DEMO_PAIRS) $(ARGS)"; \
	$(BIN)/designs generate $(SAMPLE) --out "$(OUT)" --weights "$$weights" $$flags $(DEMO_PAIRS) $(ARGS)
	$(BIN)/designs colourways "$(OUT)" $(DEMO_COLOURWAYS)

# Recolour finished designs: ARGS='--palette FILE | --from-image IMG | --inks N [--where SQL] [--version N]'.
colourways: $(STAMP)
	@test -n "$(ARGS)" || { echo "usage: make colourways [OUT=dir] ARGS='--palette FILE | --from-image IMG | --inks N [--where SQL]'" >&2; exit 2; }
	$(BIN)/designs colourways "$(OUT)" $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q --run-slow $(ARGS)

# ruff's settings are in pyproject.toml; `ruff format` owns the line length.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Tables: designs, runs, commits, embeddings, curation, reviews (docs/ANALYSTS.md).
query: $(STAMP)
	@test -n "$$SQL" || { echo "usage: make query SQL=\"select ...\" [OUT=dir] [ARGS='--version N | --as-of TIME | --format csv -o FILE']" >&2; exit 2; }
	$(BIN)/designs query --out "$(OUT)" $(ARGS) "$$SQL"

gallery: $(STAMP)
	$(BIN)/designs gallery "$(OUT)" $(ARGS)

verify: $(STAMP)
	$(BIN)/designs verify "$(OUT)" $(ARGS)

# Compaction, vacuum (files no version of the last week reads), checkpoint.
maintain: $(STAMP)
	$(BIN)/designs maintain "$(OUT)" $(ARGS)

# The VGG weights into the cache --weights auto reads, checksum checked; then what is where.
weights: $(STAMP)
	$(BIN)/designs weights fetch $(ARGS)
	$(BIN)/designs weights list

# Whole flow-run ids (Prefect's own table cuts them), for make logs RUN=<id>.
runs: $(STAMP)
	$(BIN)/python -m flows.runs --limit 20

logs: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make logs RUN=<flow-run-id> (see make runs)" >&2; exit 2; }
	$(BIN)/prefect flow-run logs "$(RUN)"

# Nightly runs: a persistent local Prefect server (state in .prefect, UI on
# http://127.0.0.1:4200) and a deployment of `generate` served on a cron
# schedule; Ctrl-C stops both. ARGS: the flags of `designs generate`, and
# --timezone TZ, --interval SECONDS, --name NAME (python -m flows.deploy --help).
CRON ?= 0 2 * * *
.PHONY: serve
serve: $(STAMP)
	@test -n "$(CATALOG)" || { echo "usage: make serve CATALOG=path/to/catalog.parquet [OUT=dir] [PAIRS=pairs.parquet] [CRON='0 2 * * *'] [ARGS='--flags']" >&2; exit 2; }
	$(BIN)/python -m flows.deploy "$(CATALOG)" --out "$(OUT)" $(if $(PAIRS),--pairs "$(PAIRS)") --cron "$(CRON)" --server $(ARGS)

ui: $(STAMP)
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

sample-data: $(STAMP)
	$(BIN)/python data/make_sample.py

# Throughput of the engine against the naive loop, side by side (docs/BENCHMARKS.md):
# on a CPU short sizes (64 px) then the convolution-dominated one (192 px), full on a GPU;
# ARGS: python -m benchmarks --help. The benchmarks
# live in benchmarks/, outside the installed package: they run from the repo's root.
# bench-plan: planning 1,000 x 1,000 pairings (seconds, peak memory, profile).
# bench-scales: coarse-to-fine timed to the single-scale loss; bench-max-size: peak
# memory by size and the largest size that fits; bench-pipeline: device busy with
# decoding and writing overlapped, and without.
.PHONY: bench bench-plan bench-catalog bench-scales bench-max-size bench-pipeline bench-gpu
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ARGS)

# Every GPU measurement in one command, 8 minutes in all, for a GPU machine with only
# torch, numpy and Pillow: no .venv, no install (GPU_PYTHON: the interpreter that has them).
# Rows and a per-step summary go to docs/BENCHMARKS.md; ARGS: python -m benchmarks.gpu --help.
GPU_PYTHON ?= python3
bench-gpu:
	PYTHONPATH=. $(GPU_PYTHON) -m benchmarks.gpu $(ARGS)

bench-scales: $(STAMP)
	$(BIN)/python -m benchmarks --scales $(ARGS)

bench-max-size: $(STAMP)
	$(BIN)/python -m benchmarks --max-size $(ARGS)

bench-pipeline: $(STAMP)
	$(BIN)/python -m benchmarks --pipeline $(ARGS)

bench-plan: $(STAMP)
	$(BIN)/python -m benchmarks --plan $(ARGS)

# designs curate's grouping (benchmarks/curate.py) at 10k, 100k and 1M designs: synthetic
# 256-dim float16 embeddings with planted near-duplicate groups; time, CPU time, peak RSS,
# precision and recall against the planted groups, each size in its own process.
.PHONY: bench-curate
bench-curate: $(STAMP)
	$(BIN)/python -m benchmarks --curate $(ARGS)

# Speed at equal quality on real weights (benchmarks/quality.py): the paper's loop,
# coarse-to-fine, L-BFGS and the shipped default timed to the style loss of the paper's
# 1000 steps at 256 px; WEIGHTS: a real VGG file (default ../shared/weights' VGG16; refused
# in one line, status 2, where there is none). About 6 minutes on a quiet 2-core CPU, the
# paper's 1000 steps most of it (ARGS="--quality-reuse bench-quality.json" reuses them).
.PHONY: bench-quality
bench-quality: $(STAMP)
	$(BIN)/python -m benchmarks --quality $(if $(WEIGHTS),--weights $(WEIGHTS)) $(ARGS)

# The design catalog at 10k, 100k, 1M and 10M rows (the 10M table takes ~15 GB of disk
# under $TMPDIR, or ARGS=--catalog-dir DIR); ARGS=--catalog-sizes 10000 for a quick look.
bench-catalog: $(STAMP)
	$(BIN)/python -m benchmarks --catalog $(ARGS)

clean:
	rm -rf $(VENV) .prefect .pytest_cache
