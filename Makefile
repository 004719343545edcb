# The two commands: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean bench-peers

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
	$(PY) -m pytest -q -n 2  # both cores (pytest-xdist)

# NEST and Brian2 for benchmarks/vs_simulators.py (the [bench] extra; benchmark-only). The pins keep
# numpy <2 and this machine's torch (no second torch); Brian2's standalone device compiles with g++.
bench-peers: $(STAMP)
	$(PY) -m pip install -q -c requirements-pinned.txt -e '.[bench]'
	PYNEST_QUIET=1 $(PY) -c "import numpy, torch, nest, brian2; print('numpy', numpy.__version__, 'torch', torch.__version__, 'nest', nest.__version__, 'brian2', brian2.__version__)"

clean:
	rm -rf $(VENV) build *.egg-info
