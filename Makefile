# The two commands: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean bench-peers cuda-compile-check

$(STAMP): pyproject.toml requirements-pinned.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -r requirements-pinned.txt
	# events: tonic (N-MNIST, SHD, DVS Gesture readers); its own deps hold no torch (its torch extra is not asked for).
	$(PY) -m pip install -q -c requirements-pinned.txt -e '.[test,events]'
	# lava-nc 0.10.0 declares Python <3.11 (the Loihi simulator for the lava backend); install it anyway.
	$(PY) -m pip install -q -c requirements-pinned.txt --ignore-requires-python lava-nc==0.10.0
	# NeuroBench is the oracle for operation counts in the tests; --no-deps keeps torchaudio out.
	$(PY) -m pip install -q --no-deps neurobench==2.3.0
	# SpikingJelly is the oracle of the SpikingJelly frontend's tests; --no-deps keeps torchvision/torchaudio (a second torch) out.
	$(PY) -m pip install -q --no-deps spikingjelly==2.0.0
	$(PY) -m pip install -q -c requirements-pinned.txt 'loguru>=0.7,<1'
	# Norse and Sinabs are the NIR conformance oracles; --no-deps keeps out torchvision (a second torch), samna and Sinabs's nir<=1.0.4 pin.
	$(PY) -m pip install -q --no-deps norse==1.1.0 sinabs==3.1.3
	$(PY) -m pip install -q -c requirements-pinned.txt 'pbr>=6,<8'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spike demo

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache  # the layers of design §2 (contracts in pyproject.toml)
	$(PY) -m pytest -q -n 2 --dist loadfile  # both cores (pytest-xdist); a file's tests on one worker: Numba compiles its kernels once

# NEST and Brian2 for benchmarks/vs_simulators.py (the [bench] extra; benchmark-only). The pins keep
# numpy <2 and this machine's torch (no second torch); Brian2's standalone device compiles with g++.
bench-peers: $(STAMP)
	$(PY) -m pip install -q -c requirements-pinned.txt -e '.[bench]'
	PYNEST_QUIET=1 $(PY) -c "import numpy, torch, nest, brian2; print('numpy', numpy.__version__, 'torch', torch.__version__, 'nest', nest.__version__, 'brian2', brian2.__version__)"

# Every CUDA kernel compiled for a GPU (sm_90) on a machine without one (tests/backends/cuda_ptx_check.py),
# in its own environment like the GPU machines': numba-cuda, NVVM from pip, numpy 2 (.venv keeps numpy < 2).
CUDA_CHECK_VENV := build/cuda-check-venv
cuda-compile-check:
	test -x $(CUDA_CHECK_VENV)/bin/python || $(PYTHON) -m venv $(CUDA_CHECK_VENV)
	$(CUDA_CHECK_VENV)/bin/python -m pip install -q torch==2.13.0 'numpy>=2,<3' 'numba-cuda>=0.30,<0.31' \
		nvidia-cuda-nvcc-cu12 nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12
	$(CUDA_CHECK_VENV)/bin/python -m pip install -q -e .
	cd / && $(CURDIR)/$(CUDA_CHECK_VENV)/bin/python $(CURDIR)/tests/backends/cuda_ptx_check.py

clean:
	rm -rf $(VENV) build *.egg-info
