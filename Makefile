# The two commands of the README: `make demo` and `make test`. Both create the
# virtual environment on first use and reinstall when pyproject.toml changes.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# Nothing here may reach a model hub or phone home.
# The report's browser test drives Debian's Chromium (through Playwright, which must
# not download a browser of its own).
CHROMIUM := /usr/bin/chromium
OFFLINE := PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 DBT_SEND_ANONYMOUS_USAGE_STATS=false TOKENIZERS_PARALLELISM=false

.PHONY: install demo test bench bench-evals clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(VENV)/bin/polypythias demo

test: $(STAMP) $(CHROMIUM)
	$(OFFLINE) $(PYTHON) -m pytest

# Installed only when missing; CI runs as root.
$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null

bench: $(STAMP)
	$(OFFLINE) $(PYTHON) bench/extract_overhead.py

bench-evals: $(STAMP)
	$(OFFLINE) $(PYTHON) bench/evals_vs_harness_cli.py

clean:
	rm -rf lake micro reports warehouse/*.duckdb warehouse/*.duckdb.wal warehouse/.dbt bench/out
