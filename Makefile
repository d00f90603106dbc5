# make demo   - the main job: drug-review sentiment, baselines vs LoRA fine-tune, report (~15 min on 2 CPU cores)
# make test   - the test suite (offline, tiny models; one test uses the packaged real model)
# make lint   - ruff and the layer contract (pyproject.toml; ARCHITECTURE.md)
# make bench  - benchmarks (installs TRL for the peer comparison)
# Both create or reuse .venv through `make install`, which is quick once done.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH := torch==2.13.0

.PHONY: install chromium demo lint test bench clean

install: $(STAMP)

# The report's browser test (tests/test_report_browser.py) renders report.html in Debian's Chromium, driven by
# Playwright (whose own browser download cannot reach its host here). Installed once by `make test`; quick after that.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "error: chromium is missing (the report's browser test needs it): run 'sudo apt-get install -y chromium'"; \
	    exit 1; \
	  fi; }

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first and pinned: an unpinned torch pulls several GB of CUDA packages.
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

demo: install
	$(VENV)/bin/lmtune demo

lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/lint-imports

# One pytest-xdist worker per core (at most 4), each torch process on one thread (two busy workers on two cores
# would otherwise spin-wait on each other's threads). A module's tests run together on one worker, and the tests
# that start several training processes all on one, first (tests/conftest.py, xdist_unit).
# TEST_WORKERS=0 runs the suite in this process, as plain pytest does.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

# pytest exits 5 when it collected no test (a broken conftest or a wrong path): a failure, said in one line.
test: install chromium
	OMP_NUM_THREADS=1 $(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder \
	 $(or $(TESTS),tests) || { code=$$?; [ $$code -ne 5 ] || echo "error: make test: pytest collected no tests" \
	 "in '$(or $(TESTS),tests)'; check the path and that tests/conftest.py imports" >&2; exit $$code; }

bench: install
	$(PY) -m pip install -q --disable-pip-version-check -r benchmarks/requirements.txt -c requirements.txt
	@# Every benchmark runs even if one fails (e.g. serve_load.py without runs/demo); failures are listed at the end.
	@failed=""; for f in benchmarks/[!_]*.py; do echo "== $$f"; $(PY) $$f || failed="$$failed $$f"; done; \
	 if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) runs .pytest_cache
