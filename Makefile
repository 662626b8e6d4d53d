# capi: the two commands of the quickstart are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
TOOLS  := .venv-tools
PORT   ?= 8080
STAMP  := $(VENV)/.installed
TOOLS_STAMP := $(TOOLS)/.installed
# `make test` also runs pytest on these versions, each in its own .venv-pyX.Y: 3.12 is the
# runtime the README deploys (python312), 3.13 the next one. `.venv` (PYTHON, 3.11 here, the
# lowest supported) serves everything else. `make test EXTRA_PYTHONS=` skips them.
EXTRA_PYTHONS ?= 3.12 3.13
EXTRA_STAMPS  := $(foreach v,$(EXTRA_PYTHONS),$(VENV)-py$(v)/.installed)
PYENV_ROOT    ?= $(HOME)/.pyenv

.PHONY: install run test unit lint tf-check bench clean deploy

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

# pythonX.Y from PATH when it runs, else pyenv's newest X.Y.* (pyenv's shims only run the
# version selected in the directory, so they cannot be relied on).
$(VENV)-py%/.installed: requirements.txt requirements-dev.txt
	@py=$$(python$* -c 'import sys; print(sys.executable)' 2>/dev/null \
	  || ls -d $(PYENV_ROOT)/versions/$*.*/bin/python 2>/dev/null | sort -V | tail -1); \
	test -n "$$py" || { echo "Python $* not found: pyenv install $*, or make test EXTRA_PYTHONS=" >&2; exit 1; }; \
	echo "$$py -m venv $(@D)"; $$py -m venv $(@D)
	$(@D)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

# checkov pins many packages of its own: it lives in a separate virtualenv.
$(TOOLS_STAMP): requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check -r requirements-tools.txt
	touch $(TOOLS_STAMP)

install: $(STAMP)

# The function on localhost: dry run (nothing sent to Meta), no Google credentials needed.
# Override any variable on the command line, e.g. `make run DEFAULT_COUNTRY=GB`.
run: $(STAMP)
	@echo "capi on http://127.0.0.1:$(PORT) (DRY_RUN=$${DRY_RUN:-true}): POST events to http://127.0.0.1:$(PORT)/events, try curl -s http://127.0.0.1:$(PORT)/healthz"
	META_PIXEL_ID=$${META_PIXEL_ID:-1234567890} \
	DRY_RUN=$${DRY_RUN:-true} \
	ALLOW_UNAUTHENTICATED=$${ALLOW_UNAUTHENTICATED:-true} \
	PROFILE_COLLECTION=$${PROFILE_COLLECTION-} \
	DEFAULT_COUNTRY=$${DEFAULT_COUNTRY:-US} \
	$(VENV)/bin/functions-framework --target=capi_events --source=main.py --host=127.0.0.1 --port=$(PORT)

# Google Cloud, from an empty project with billing to the sGTM-ready deployment, or an existing
# one to this version: make deploy PROJECT=<id> REGION=<region> PIXEL_ID=<id> [DRY_RUN=1]
# (docs/deploy.md has every option). Python's standard library only: no virtualenv needed.
deploy:
	@$(PYTHON) -m deploy

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

tf-check: $(TOOLS_STAMP)
	TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive terraform/
	TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive deploy/terraform/
	$(TOOLS)/bin/checkov --quiet --compact --skip-download -d terraform/ -d deploy/terraform/ --framework terraform

# Lint and the Terraform checks once; pytest on every supported version.
# The suite mostly waits (emulators, servers, deadlines it proves), so the versions run at
# once: the extra ones in the background, their output shown after the first's, in order.
test: $(STAMP) $(EXTRA_STAMPS) lint tf-check
	@for v in $(EXTRA_PYTHONS); do \
	  ( $(VENV)-py$$v/bin/python -m pytest -q -p no:cacheprovider >$(VENV)-py$$v/pytest.log 2>&1; \
	    echo $$? >$(VENV)-py$$v/pytest.rc ) & \
	done; \
	$(VENV)/bin/python -m pytest; status=$$?; \
	wait; \
	for v in $(EXTRA_PYTHONS); do \
	  echo "== pytest on Python $$v"; cat $(VENV)-py$$v/pytest.log; \
	  test "$$(cat $(VENV)-py$$v/pytest.rc)" = 0 || status=1; \
	done; \
	exit $$status

unit: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not emulator"

# The figures are measured on python3.12, the runtime capi deploys to (python312), in a
# virtualenv of its own (BENCH_PYTHON: pythonX.Y from PATH, else pyenv's newest X.Y.*).
BENCH_PYTHON ?= 3.12
BENCH_VENV   := $(VENV)-bench

$(BENCH_VENV)/.installed: requirements.txt requirements-dev.txt bench/requirements.txt
	@py=$$(python$(BENCH_PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null \
	  || ls -d $(PYENV_ROOT)/versions/$(BENCH_PYTHON).*/bin/python 2>/dev/null | sort -V | tail -1); \
	test -n "$$py" || { echo "Python $(BENCH_PYTHON) not found: pyenv install $(BENCH_PYTHON)" >&2; exit 1; }; \
	echo "$$py -m venv $(BENCH_VENV)"; $$py -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt -r bench/requirements.txt
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) $(VENV)-py* $(BENCH_VENV) $(TOOLS) .pytest_cache .ruff_cache .hypothesis
