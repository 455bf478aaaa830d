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

.PHONY: setup build build-cuda-emulation sanitize-cuda-emulation lint format test test-cuda test-compat test-docker \
	clean-docker gpu-wheels demo bench clean

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

# The CUDA kernels of ops/cuda compiled as host C++ for device emulation (maskrcnn/_C_cuda_emu*.so,
# a minute or two on 2 cores, then incremental): `make test` runs the CUDA op tests on them, and
# MASKRCNN_CUDA_EMULATION=1 makes the whole package use them (docs/ops.md, "CUDA device emulation").
EMU_STAMP := build/.cuda-emulation-built
$(EMU_STAMP): $(DEPS_STAMP) $(OPS_SOURCES)
	MASKRCNN_BUILD=cuda-emulation MAX_JOBS=$${MAX_JOBS:-2} $(PY) setup.py -q build_ext --inplace \
		--build-temp build/temp-cuda-emulation
	mkdir -p build && touch $@
build-cuda-emulation: $(EMU_STAMP)

# The emulated kernels under AddressSanitizer + UndefinedBehaviorSanitizer, then under
# ThreadSanitizer (races between the threads of a block), each running the emulated CUDA op tests
# (MASKRCNN_CUDA_EMULATION_LIB points the loader at the sanitized library; the Python interpreter
# is not instrumented, so the sanitizer runtime is preloaded). Not part of `make test`.
SANITIZE_TESTS ?= tests/ops/test_cuda_roi_align.py tests/ops/test_cuda_roi_pool.py tests/ops/test_cuda_multilevel.py \
	tests/ops/test_cuda_emulation.py
sanitize-cuda-emulation: setup
	bash tools/sanitize_cuda_emulation.sh $(PY) $(SANITIZE_TESTS)

# Lint and format checks (a few seconds): ruff for Python ([tool.ruff] in pyproject.toml),
# clang-format for the C++ / CUDA kernels (.clang-format). `make format` rewrites the tree in place.
CXX_SOURCES := $(filter-out setup.py,$(OPS_SOURCES))
lint: $(DEPS_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/clang-format --dry-run -Werror $(CXX_SOURCES)

format: $(DEPS_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	$(VENV)/bin/clang-format -i $(CXX_SOURCES)

test: setup build-cuda-emulation lint
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

# torch 2.11 compatibility (the oldest torch the code supports): a second environment with
# torch 2.11.0 and torchvision 0.26.0 (CUDA builds from PyPI, a few GB, so not part of `make test`),
# a copy of the working tree in build/compat/src whose extension is built against torch 2.11 (so
# the .venv's maskrcnn/_C*.so is never replaced), and the CPU suite run in that copy.
COMPAT_VENV  ?= .venv-compat
COMPAT_PY    := $(abspath $(COMPAT_VENV))/bin/python
COMPAT_STAMP := $(COMPAT_VENV)/.deps-installed
COMPAT_TORCH ?= torch==2.11.0 torchvision==0.26.0
COMPAT_DIR   := $(CURDIR)/build/compat
SHARED_DATA  ?= $(abspath ../shared/data)
# A commit (e.g. HEAD) to test instead of the working tree; its objects get their own build folder,
# since the archive's file times say nothing about what the working tree's build compiled.
COMPAT_FROM  ?=

# The dependencies of pyproject.toml (runtime and dev), with torch held at the compat versions. The
# package itself is not installed there: the tests import the copy through PYTHONPATH.
$(COMPAT_STAMP): pyproject.toml
	test -x $(COMPAT_PY) || $(PYTHON_SYS) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install -q --upgrade pip setuptools wheel
	$(COMPAT_PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
		print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))' > $(COMPAT_VENV)/requirements.txt
	$(COMPAT_PY) -m pip install -q $(COMPAT_TORCH) -r $(COMPAT_VENV)/requirements.txt
	touch $@

test-compat: $(COMPAT_STAMP)
	rm -rf $(COMPAT_DIR)/src && mkdir -p $(COMPAT_DIR)/src
	if [ -n "$(COMPAT_FROM)" ]; then git archive $(COMPAT_FROM) | tar -xf - -C $(COMPAT_DIR)/src; else \
		git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf - | tar -xf - -C $(COMPAT_DIR)/src; fi
	cd $(COMPAT_DIR)/src && MAX_JOBS=$${MAX_JOBS:-2} $(COMPAT_PY) setup.py -q build_ext --inplace \
		--build-temp $(COMPAT_DIR)/temp$(if $(COMPAT_FROM),-$(shell git rev-parse --short $(COMPAT_FROM)))
	cd $(COMPAT_DIR)/src && PYTHONPATH=$(COMPAT_DIR)/src MASKRCNN_SHARED_DATA=$(SHARED_DATA) \
		$(COMPAT_PY) -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
	cd $(COMPAT_DIR)/src && PYTHONPATH=$(COMPAT_DIR)/src MASKRCNN_SHARED_DATA=$(SHARED_DATA) \
		$(COMPAT_PY) -m pytest $(PYTEST_ARGS)

# Docker for real (docker/README.md): installs Debian's engine if missing, starts its own dockerd
# under build/docker (no iptables rules, no bridge), builds docker/Dockerfile's CPU image, runs the
# ops' CPU tests, a 50-iteration demo training and its evaluation in it, and the same through
# compose; stops the daemon. Minutes and a few GB, so not part of `make test`. Needs root (sudo).
test-docker:
	bash docker/test_docker.sh

# The images and layers test-docker keeps for its next run (root's files: sudo when not root).
clean-docker:
	rm -rf build/docker

# Wheels for the GPU machine's Python 3.12 (its image has torch 2.11 and most dependencies but not
# these), into .whl/ (git-ignored), which the device call carries and tools/gpu_check.sh installs.
# antlr4-python3-runtime 4.9.3 exists only as a source archive: `pip wheel` builds its pure-Python wheel.
GPU_WHEELS_DIR    := .whl
GPU_PURE_WHEELS   := hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3
GPU_BINARY_WHEELS := pycocotools==2.0.11 dockerfile==3.4.0
GPU_PLATFORMS     := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
                     manylinux_2_5_x86_64 manylinux1_x86_64

gpu-wheels:
	rm -rf $(GPU_WHEELS_DIR) && mkdir -p $(GPU_WHEELS_DIR)
	$(PYTHON_SYS) -m pip wheel -q --no-deps -w $(GPU_WHEELS_DIR) $(GPU_PURE_WHEELS)
	$(PYTHON_SYS) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(addprefix --platform ,$(GPU_PLATFORMS)) -d $(GPU_WHEELS_DIR) $(GPU_BINARY_WHEELS)
	ls $(GPU_WHEELS_DIR)
