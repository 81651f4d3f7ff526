# Two commands do everything: `make demo` and `make test`. Each sets itself up first.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    ?= runs/digits_lt_demo
SHARDS  ?= data/digits_lt
# Keep Ray on loopback and accelerate away from any user default_config.yaml (docs/distributed.md, docs/tune.md).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export HF_HOME := $(CURDIR)/.cache/hf

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/python -m adpm_dist.data.prepare --dataset digits_lt --out $(SHARDS) --overwrite
	ACCELERATE_USE_CPU=$${ACCELERATE_USE_CPU-1} $(BIN)/accelerate launch --num_processes 1 --num_machines 1 \
	    --mixed_precision no --dynamo_backend no \
	    launch/train.py --config configs/digits_lt.yaml data.shards=$(SHARDS) run.output_dir=$(DEMO) run.overwrite=true
	$(BIN)/python -m adpm_dist.evaluate show $(DEMO)

test: setup
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf runs data .cache
