# Every target works on a fresh machine with nothing but Python: the first one that needs
# the package creates .venv and installs nncli into it (editable, with the test extra).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint quickstart bench clean

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

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
