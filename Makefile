# Two commands set everything up on a fresh machine:
#   make demo   -> virtualenv + package + a real x256 zoom of the bundled photo into out/
#   make test   -> virtualenv + package with every extra + the whole test suite
# and one is the inner loop while working on it:
#   make check  -> lint (ruff check, ruff format --check), types (mypy) and the fast tests:
#                  every test not marked slow, browser or ray (pyproject.toml); under 3 minutes
#                  on 2 cores. make test (and CI) still runs everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# spandrel declares torchvision, which would replace our CPU torch with a multi-GB CUDA
# build; it is installed without dependencies (its real needs are in the [spandrel] extra).
SPANDREL := spandrel==0.4.2
# lpips (only its LPIPS linear-head weights are used) declares torchvision too.
LPIPS := lpips==0.1.4

.PHONY: demo test check lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.full: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[test]'
	$(PIP) install --quiet --no-deps $(SPANDREL)
	$(PIP) install --quiet --no-deps $(LPIPS)
	touch $@ $(VENV)/.core

# The viewer's end-to-end test drives Debian's headless Chromium; installed when missing
# (needs root and apt); without it that one test is skipped and says why.
$(VENV)/.browser: | $(BIN)/python
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: the browser test will be skipped"
	touch $@

# The provenance tests read the XMP back with exiftool (Debian's libimage-exiftool-perl);
# installed when missing, else those tests are skipped and say why.
$(VENV)/.exiftool: | $(BIN)/python
	@command -v exiftool >/dev/null 2>&1 \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libimage-exiftool-perl >/dev/null) \
	  || echo "exiftool could not be installed: the exiftool tests will be skipped"
	touch $@

demo: $(VENV)/.core
	$(BIN)/chainzoom zoom assets/sample.jpg --scale 256 --center 0.45,0.42 --out out/sample

test: $(VENV)/.full $(VENV)/.browser $(VENV)/.exiftool lint
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

# The inner loop: lint and types, then the tests not marked slow, browser or ray. Torch runs
# them on one thread: their models are tiny, and on 2 shared cores two spinning threads made
# the diffusion, spandrel and consistency tests 2-6x slower (OMP_NUM_THREADS=2 make check to compare).
FAST_TESTS := not slow and not browser and not ray
OMP_NUM_THREADS ?= 1

check: $(VENV)/.full lint
	OMP_NUM_THREADS=$(OMP_NUM_THREADS) HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -m "$(FAST_TESTS)"

# Lint, format and type checks (mypy is strict for core/, pipeline/, the config and the API).
lint: $(VENV)/.full
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(VENV)/.full
	$(BIN)/python bench/step.py

clean:
	rm -rf $(VENV) out .pytest_cache
