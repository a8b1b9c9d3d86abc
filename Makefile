# The two commands of the README: `make demo` and `make test`. Both create the
# virtual environment on first use and reinstall when pyproject.toml changes.
# While editing: `make test-fast` (unit and SQL-unit tests, under 2 minutes),
# `make lint`, and `make format` (applies the linters' automatic fixes).
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# Nothing here may reach a model hub or phone home.
# The report's browser test drives Debian's Chromium (through Playwright, which must
# not download a browser of its own).
CHROMIUM := /usr/bin/chromium
OFFLINE := PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 DBT_SEND_ANONYMOUS_USAGE_STATS=false TOKENIZERS_PARALLELISM=false

.PHONY: install demo test test-fast lint format bench bench-cost bench-evals bench-lake bench-scaling bench-ingest clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(VENV)/bin/polypythias demo

test: lint $(CHROMIUM)
	$(OFFLINE) $(PYTHON) -m pytest

# The tests that train, extract or build a warehouse are marked slow.
test-fast: $(STAMP)
	$(OFFLINE) $(PYTHON) -m pytest -m "not slow" -q

# Rules: [tool.ruff] in pyproject.toml, dbt_project/.sqlfluff.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd dbt_project && ../$(VENV)/bin/sqlfluff lint . --processes 2 --disable-progress-bar

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	cd dbt_project && ../$(VENV)/bin/sqlfluff fix . --processes 2 --disable-progress-bar

# Installed only when missing; CI runs as root.
$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null

bench: $(STAMP)
	$(OFFLINE) $(PYTHON) bench/extract_overhead.py

bench-cost: $(STAMP)
	$(OFFLINE) $(PYTHON) bench/checkpoint_cost.py --contention

bench-evals: $(STAMP)
	$(OFFLINE) $(PYTHON) bench/evals_vs_harness_cli.py

# kill -9 the extraction at 40 random moments; nothing may be lost (about 10 minutes on 2 cores).
.PHONY: bench-faults
bench-faults: $(STAMP)
	$(OFFLINE) $(PYTHON) bench/faults.py --trials 40

clean:
	rm -rf lake micro reports warehouse/*.duckdb warehouse/*.duckdb.wal warehouse/.dbt bench/out

# PolyPythias-sized warehouse (issue 6): a synthetic lake of the real suite's shape
# (20.7 M eval_samples rows, ~1.3 GB) and build time / peak memory at 1/4, 1/2, 1.
BENCH_OUT ?= bench/out
bench-lake: $(STAMP)
	$(OFFLINE) $(PYTHON) bench/synthetic_lake.py --out $(BENCH_OUT)/synthetic_lake

bench-ingest: $(STAMP)
	$(OFFLINE) $(PYTHON) bench/ingest_release.py

bench-scaling: $(STAMP)
	$(OFFLINE) $(PYTHON) bench/scaling.py --work $(BENCH_OUT)/scaling
