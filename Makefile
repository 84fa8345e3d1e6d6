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

.PHONY: demo test test-faults test-fuzz test-lower test-cluster bench lint clean docs

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bayesgen train experiment=digits-bsi
	@echo "bayesgen is installed in $(VENV): run '. $(VENV)/bin/activate' to put it on your PATH" \
	    "(or call $(VENV)/bin/bayesgen)"

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks docs/hooks
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site
	$(VENV)/bin/pytest -q

# the documentation site (docs/, mkdocs.yml) into site/; `mkdocs serve` while editing
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# every fault-injection test, the slow ones (kill -9 at many points, signals, a full tmpfs,
# concurrent runs) included; `make test` runs the fast subset
test-faults: $(STAMP)
	$(VENV)/bin/pytest -q -m faults

# the property-based fuzz tests with the long profile (thousands of generated inputs, about
# 30 minutes on 2 CPU cores); `make test` runs their fast profile
test-fuzz: $(STAMP)
	BAYESGEN_FUZZ=long $(VENV)/bin/pytest -q tests/test_fuzz_config.py tests/test_fuzz_cli.py \
	    tests/test_fuzz_load.py

# The test suite at the declared lower bounds (.ci/lower-bounds.txt) in its own venv.
LOWER := .venv-lower
test-lower:
	python3 -m venv $(LOWER)
	$(LOWER)/bin/pip install -q --disable-pip-version-check $(TORCH)
	$(LOWER)/bin/pip install -q --disable-pip-version-check -c .ci/lower-bounds.txt -e '.[dev]'
	$(LOWER)/bin/pip list 2>/dev/null | grep -E -i "^(torch|lightning|torchmetrics|hydra-core|numpy) "
	$(LOWER)/bin/pytest -q

# Speed benchmarks (about 5 minutes on 2 CPU cores) plus short smoke runs of the two real-data
# checks; their full runs: `$(PY) benchmarks/bench_bfn_mnist.py --minutes 30` and
# `$(PY) benchmarks/bench_if_solvers.py` (see BENCHMARKS.md).
bench: $(STAMP)
	$(PY) benchmarks/bench_overhead.py
	$(PY) benchmarks/bench_sampling.py
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_graph_breaks.py
	$(PY) benchmarks/bench_if_solvers.py --train-steps 300 --n 200 --out runs/bench_if_smoke
	$(PY) benchmarks/bench_bfn_mnist.py --minutes 1 --test-examples 200

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(LOWER) build *.egg-info

# On a real one-machine Slurm cluster (installs slurm-wlm and munge when missing; root):
# preemption, requeue, two nodes, FSDP: 8 tests, about 6 minutes on 2 CPU cores (docs/clusters.md).
test-cluster: $(STAMP)
	$(VENV)/bin/pytest -q -m cluster tests/cluster
