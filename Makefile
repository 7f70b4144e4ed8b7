# `make run` runs the built-in study; `make test` runs the test suite. Both set up .venv first.
# Another study: `make run CONFIG=experiments/world-tiny.yaml` (only that file is read, not config.yaml);
# the report of a finished study: `make report CONFIG=...`; its cost before it starts: `make plan CONFIG=...`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CONFIG ?= config.yaml

.PHONY: run plan report test lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python -m calmix.config $(CONFIG)
	$(VENV)/bin/snakemake --cores all --configfile $(CONFIG)
	$(MAKE) --no-print-directory report CONFIG=$(CONFIG)

plan: $(STAMP)
	$(VENV)/bin/calmix-plan --configfile $(CONFIG)

report: $(STAMP)
	$(VENV)/bin/python -m calmix.config $(CONFIG)
	$(VENV)/bin/snakemake --report results/report.html --configfile $(CONFIG)
	@echo "Report: results/report.html, summary results/report.md (plots in results/plots/, tables in results/tables/)"

test: $(STAMP)
	$(VENV)/bin/pytest -q -n 2 --dist loadfile tests

lint: $(STAMP)
	$(VENV)/bin/snakemake --lint

clean:
	rm -rf results logs .snakemake
