# The two commands of the README: `make test` and `make demo`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-all demo venv clean-venv

venv: $(STAMP)

# Reinstall when setup.py changes; the editable install picks up source edits by itself.
$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,serve]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# Also runs the tests marked slow.
test-all: $(STAMP)
	$(PY) -m pytest -q --runslow tests

# Trains the tiny preset on data/fashion-mnist-32.zip on the CPU, evaluates and generates (stylegan/demo.py).
demo: $(STAMP)
	$(PY) -m stylegan.demo

clean-venv:
	rm -rf $(VENV)

# On a machine with a GPU (<= 8 minutes on an H100/H200): build the fused CUDA ops, run the GPU
# tests, the op benchmarks and StyleGAN2/StyleGAN3-T 256x256 training speed (fused vs reference
# vs torch.compile), and write summary.md plus full logs to $(OUT) (default gpu-check-out).
# Uses .venv when present, else the machine's python3 (GPU machines bring their own torch and
# nvcc). `python bench/gpu_check.py --dry-run` lists the steps; `--smoke` runs them on the CPU.
.PHONY: gpu-check
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) bench/gpu_check.py $(OUT)
