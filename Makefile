# Every target works on a fresh machine with nothing but Python: the first one that needs
# the package creates .venv and installs nncli into it (editable, with the test extra).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint quickstart bench clean sweep sweep-quick sweep-lr sweep-lr-asha sweep-reg

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

quickstart: $(STAMP)
	$(BIN)/nncli train configs/quickstart.yaml

# Speed and memory targets, measured one run after another (never in timed tests); bench_load
# times the threads nncli chooses against each fixed choice, quiet and beside a busy loop;
# bench_conv_ideas times ideas for the CNN's convolutions that were measured and not taken. The MLP and
# CNN benchmarks compare with ../shared/bench/torch_ref.py (bench_eval.py with its CNN scoring the
# 10,000 test images, bench/torch_eval.py) run from a separate PyTorch venv
# (TORCH_PYTHON, default /tmp/torch-ref/bin/python); without it nncli is timed alone and the
# benchmark prints how to make one:
#   python3 -m venv /tmp/torch-ref && /tmp/torch-ref/bin/pip install torch==2.13.0 numpy
NNCLI_DATA_DIR ?= ../shared/data
bench: $(STAMP)
	$(BIN)/python bench/bench_data.py --data-dir $(NNCLI_DATA_DIR)
	NNCLI_DATA_DIR=$(NNCLI_DATA_DIR) $(BIN)/python bench/bench_mlp.py
	NNCLI_DATA_DIR=$(NNCLI_DATA_DIR) $(BIN)/python bench/bench_cnn.py
	NNCLI_DATA_DIR=$(NNCLI_DATA_DIR) $(BIN)/python bench/bench_eval.py
	$(BIN)/python bench/bench_conv_ideas.py
	NNCLI_DATA_DIR=$(NNCLI_DATA_DIR) $(BIN)/python bench/bench_load.py

# Sweeps (nncli sweep): runs go to runs/sweeps/<name>/, a second invocation runs only what is
# missing, and summary.md ranks the trials. SWEEP=path runs any sweep file.
sweep: $(STAMP)
	@test -n "$(SWEEP)" || { echo "usage: make sweep SWEEP=configs/sweeps/quick.yaml"; exit 2; }
	NNCLI_DATA_DIR=$(NNCLI_DATA_DIR) $(BIN)/nncli sweep $(SWEEP)

sweep-quick: $(STAMP)
	$(BIN)/nncli sweep configs/sweeps/quick.yaml

sweep-lr: $(STAMP)
	NNCLI_DATA_DIR=$(NNCLI_DATA_DIR) $(BIN)/nncli sweep configs/sweeps/lr.yaml

sweep-lr-asha: $(STAMP)
	NNCLI_DATA_DIR=$(NNCLI_DATA_DIR) $(BIN)/nncli sweep configs/sweeps/lr_asha.yaml

sweep-reg: $(STAMP)
	NNCLI_DATA_DIR=$(NNCLI_DATA_DIR) $(BIN)/nncli sweep configs/sweeps/reg.yaml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
