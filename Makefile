# The few commands people type. Both main targets create/use the virtual environment .venv.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
PIP     := $(VPY) -m pip
STAMP   := $(VENV)/.installed

.PHONY: setup run test test-gpu lint format bench clean

$(STAMP): setup.py constraints-cpu.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned, so no dependency can pull a CUDA build; triton (the [gpu] extra)
	# too, since the tests run the kernels under the Triton interpreter; the optional
	# equivariant (e2cnn), elpv and textures (scikit-image) extras too, so that their tests run
	$(PIP) install -q -c constraints-cpu.txt torch triton
	$(PIP) install -q -c constraints-cpu.txt -e '.[gpu,test,bench,train,dev,equivariant,elpv,textures]'
	touch $(STAMP)

setup: $(STAMP)

# the default job always writes runs/default (a second `make run` replaces the first; any
# other folder holding a run is refused unless --resume or --overwrite is given)
run: $(STAMP)
	$(VPY) -m canon.train --output-dir runs/default --overwrite

# lint and format check first (seconds), then the suite on one worker per core (pytest-xdist;
# worksteal: the interpreted kernel tests take seconds each, most others milliseconds)
test: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .
	$(VPY) -m pytest -q -n auto --dist worksteal tests

# On a CUDA machine with torch (CUDA build) and triton installed, no venv: the kernel tests on
# compiled kernels (TRITON_INTERPRET=0) plus the GPU-only tests (CUDA graphs, no host syncs).
test-gpu:
	TRITON_INTERPRET=0 $(PY) -m pytest -q tests

lint: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .

format: $(STAMP)
	$(VPY) -m ruff format .

bench: $(STAMP)
	$(VPY) -m bench --quick --output-dir bench/results/local

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
