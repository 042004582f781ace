# The two commands of the README. Each builds .venv from PyPI when it is missing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.spinegrade-installed
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test lint docs typecheck venv clean wheelhouse

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spinegrade demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory typecheck docs
	$(PY) -m pytest -q

# mypy on src/ (settings in pyproject.toml).
typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The docs site (mkdocs.yml) into site/, strict: a broken link, anchor or missing page fails the build
# (not --quiet, which hides the warnings that strict mode counts).
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The spinegrade wheel + wheels of every dependency, for `pip install --no-index --find-links wheelhouse`.
# NO_TORCH=1 leaves out torch, torchvision and their CUDA wheels (a Kaggle image has them); PYTHON_VERSION
# and PLATFORM download for another machine (e.g. PYTHON_VERSION=3.11 PLATFORM=manylinux2014_x86_64).
WHEELHOUSE ?= wheelhouse
wheelhouse: $(STAMP)
	$(PY) tools/wheelhouse.py --out $(WHEELHOUSE) $(if $(NO_TORCH),--no-torch) \
		$(if $(PYTHON_VERSION),--python-version $(PYTHON_VERSION)) $(if $(PLATFORM),--platform $(PLATFORM))

clean:
	rm -rf $(VENV) demo_out site .pytest_cache .ruff_cache
