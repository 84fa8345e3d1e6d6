# make demo · make test · make bench — each creates .venv when missing.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
ARCH    := $(shell uname -m)
# torch/torchvision pins that install from this project's machines' local disk (x86_64)
ifeq ($(ARCH),aarch64)
TORCH   ?= torch==2.9.1 torchvision==0.24.1
else
TORCH   ?= torch==2.14.1 torchvision==0.29.1
endif

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH)
	$(VENV)/bin/pip install -q -e '.[dev,metrics,slurm]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bayesgen train experiment=digits-bsi

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
