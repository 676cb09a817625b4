# Two commands do all the set-up on a fresh machine:  make demo  and  make test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA := $(CURDIR)/data
TINY := $(DATA)/tiny

.PHONY: install demo test lab bench sync-notebooks clean-notebooks clean

install: $(STAMP)

# The virtual environment, with the package in editable mode and the dev tools.
# constraints.txt pins torch/torchvision to a tested range; the package itself does not.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# Tiny data, a head trained on cached features of a random backbone, a checkpoint and a prediction. Offline.
demo: $(STAMP)
	$(PY) -m helpers tiny $(TINY)
	FLOWERS_TINY=1 $(PY) -m helpers train $(TINY) --no-augment --cached-features --epochs 15 --batch-size 16 --save-dir checkpoints/demo
	$(PY) -m helpers predict $(TINY)/test/1/test_000.jpg checkpoints/demo/checkpoint.pth --top-k 3

# The unit tests and every notebook (nbval), on the tiny slice with random weights.
test: $(STAMP)
	FLOWERS_TINY=1 FLOWERS_DATA_ROOT=$(DATA) MPLBACKEND=Agg $(PY) -m pytest tests notebooks \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=300 -p no:cacheprovider

lab: $(STAMP)
	$(PY) -m jupyter lab notebooks

# Speed measurements (not tests): prints a table.
bench: $(STAMP)
	$(PY) -m bench

# Rewrite the notebooks' Colab badges and setup cells from the repository address in pyproject.toml.
sync-notebooks: $(STAMP)
	$(PY) tools/sync_notebooks.py

# Strip outputs and execution counts before committing.
clean-notebooks: $(STAMP)
	$(PY) tools/clean_notebooks.py notebooks/*.ipynb

clean:
	rm -rf $(VENV) checkpoints $(TINY)
