# tokenmill: the two commands of the README, plus the install step they share, and a quick check.
#   make demo   set up .venv and run the pipeline on the embedded sample corpus
#   make test   set up .venv, lint, and run the whole test suite (CI: .ci/run)
#   make check  lint, then the tests that are neither e2e, slow nor browser (a few minutes)
# GPU machines: create .venv with your own CUDA build of torch in it, then pass TORCH=skip.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
PIP    := $(BIN)/python -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed

.PHONY: install demo test check lint browser clean

install: $(STAMP)

# torch first and pinned (an unpinned torch pulls a multi-GB CUDA build); DeepSpeed is a source
# distribution that imports torch while building, so it comes next, without build isolation.
$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet pip==26.3
	if [ "$(TORCH)" != skip ]; then $(PIP) install --quiet "$(TORCH)"; fi
	DS_BUILD_OPS=0 $(PIP) install --quiet --no-build-isolation -c requirements/constraints.txt deepspeed
	$(PIP) install --quiet -c requirements/constraints.txt -e '.[dev]'
	touch $@

demo: install
	$(BIN)/tokenmill run --config conf/demo.yaml

test: lint browser
	$(BIN)/python -m pytest

# ruff (configured in pyproject.toml): lint findings and unformatted files both fail.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# A few minutes: lint, then every test not marked e2e, slow or browser.
check: lint
	$(BIN)/python -m pytest -m "not e2e and not slow and not browser"

# The browser test renders the Prefect and MLflow UIs in Debian's chromium: installed here when we may
# (root with apt-get, as in CI); otherwise the test fails saying what to install.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	      echo "tokenmill: could not install chromium; the browser test will fail" >&2; \
	  else echo "tokenmill: install chromium (sudo apt-get install chromium) for the browser test" >&2; fi

clean:
	rm -rf $(VENV) runs .tokenmill .pytest_cache .ruff_cache
