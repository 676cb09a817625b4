# Two commands do all the set-up on a fresh machine:  make demo  and  make test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA := $(CURDIR)/data
TINY := $(DATA)/tiny

# Colab's stack, for `make test-colab`: the versions and the Python version live in constraints-colab.txt.
COLAB_VENV := .venv-colab
COLAB_STAMP := $(COLAB_VENV)/.installed
COLAB_PYTHON_VERSION := $(shell sed -n 's/^\# python: *//p' constraints-colab.txt)
COLAB_PYTHON ?= $(firstword $(wildcard $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions/$(COLAB_PYTHON_VERSION)*/bin/python$(COLAB_PYTHON_VERSION)) $(shell command -v python$(COLAB_PYTHON_VERSION)))

.PHONY: install demo test test-colab lab bench sync-notebooks clean-notebooks clean

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
# FLOWERS_PRECISION=float32: the recorded notebook outputs are float32's, whatever the caller exported.
TEST_COMMAND = FLOWERS_TINY=1 FLOWERS_PRECISION=float32 MPLBACKEND=Agg $(1) -m pytest tests notebooks \
	--nbval-lax --nbval-current-env --nbval-cell-timeout=300 -p no:cacheprovider $(2)
test: $(STAMP)
	FLOWERS_DATA_ROOT=$(DATA) $(call TEST_COMMAND,$(PY))

# The same suite on Colab's versions (constraints-colab.txt), in .venv-colab, less the own-photos run
# of every notebook (the tiny slice's code paths with other folder names; 3 minutes). Needs Colab's
# Python (the file's "# python:" line): pyenv install it, or put it on PATH. torch comes from PyPI
# (about 3 GB, once).
$(COLAB_STAMP): pyproject.toml constraints-colab.txt
	@test -n "$(COLAB_PYTHON)" || { echo "make test-colab needs Python $(COLAB_PYTHON_VERSION), as Colab has: pyenv install $(COLAB_PYTHON_VERSION), or put python$(COLAB_PYTHON_VERSION) on PATH"; exit 1; }
	test -x $(COLAB_VENV)/bin/python || $(COLAB_PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints-colab.txt -e ".[test]"
	touch $(COLAB_STAMP)

test-colab: $(COLAB_STAMP)
	FLOWERS_DATA_ROOT=$(DATA)/colab $(call TEST_COMMAND,$(COLAB_VENV)/bin/python,--ignore=tests/test_notebooks_own_photos.py)

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
	rm -rf $(VENV) $(COLAB_VENV) checkpoints $(TINY)
