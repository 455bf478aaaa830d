# Two commands do everything on a fresh machine:
#   make demo   set up, generate the synthetic dataset, train and evaluate the small Mask R-CNN
#   make test   set up and run the test suite
# Set-up is incremental: a second run reinstalls nothing and rebuilds the extension only when
# a source in ops/ changed.

PYTHON_SYS ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-installed
EXT_STAMP  := build/.ext-built
OPS_SOURCES := $(shell find ops -name '*.cpp' -o -name '*.h' -o -name '*.cuh' -o -name '*.cu' 2>/dev/null) setup.py
PYTEST_ARGS ?=

.PHONY: setup build test test-cuda demo bench clean

setup: $(DEPS_STAMP) $(EXT_STAMP)
build: $(EXT_STAMP)

$(PY):
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel

# Dependencies and the editable package (without the extension: it is built incrementally below).
$(DEPS_STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	MASKRCNN_NO_EXT=1 $(PY) -m pip install -q -c constraints.txt --no-build-isolation -e '.[dev]'
	touch $@

$(EXT_STAMP): $(DEPS_STAMP) $(OPS_SOURCES)
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) setup.py -q build_ext --inplace
	mkdir -p build && touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-cuda: setup
	$(PY) -m pytest -m cuda $(PYTEST_ARGS)

bench: setup
	$(PY) tools/bench_ops.py

clean:
	rm -rf build maskrcnn/_C*.so

# The demo: generate the simple synthetic scenes once, train the small Mask R-CNN (GPU if present,
# else CPU), evaluate on the synthetic val split and print box / mask AP, the TensorBoard command
# and where the prediction images are (outputs/demo/<date>/<time>/).
SYNTHETIC_DIR := datasets/synthetic_simple
demo: setup
	@test -f $(SYNTHETIC_DIR)/annotations/instances_val.json || \
		$(PY) tools/make_synthetic.py --out $(SYNTHETIC_DIR) --format coco --scene simple --num-images 400
	$(PY) tools/train.py experiment=demo
