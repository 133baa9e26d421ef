# make course | make test | make lab   (each creates .venv when missing)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= auto

.PHONY: course test lab lint clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name coursekit --display-name "Python (coursekit)" >/dev/null
	touch $(STAMP)

## course: run every notebook with papermill into runs/<timestamp>/ and print the summary table
course: $(STAMP)
	$(VENV)/bin/coursekit run --profile $(PROFILE)

## test: unit tests, then notebook tests (nbval lax + papermill, smoke profile)
test: $(STAMP)
	$(PY) -m pytest -q tests
	runs=$$(mktemp -d) && COURSEKIT_PROFILE=smoke COURSEKIT_RUNS_BASE=$$runs $(PY) -m pytest -q --nbval-lax \
		--nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider notebooks; \
		status=$$?; rm -rf $$runs; exit $$status

## lab: JupyterLab on the notebooks with this environment's kernel
lab: $(STAMP)
	cd notebooks && ../$(VENV)/bin/jupyter lab

lint: $(STAMP)
	$(VENV)/bin/ruff check coursekit tests

clean-venv:
	rm -rf $(VENV)
