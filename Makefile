# capi: the two commands of the quickstart are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
TOOLS  := .venv-tools
PORT   ?= 8080
STAMP  := $(VENV)/.installed
TOOLS_STAMP := $(TOOLS)/.installed

.PHONY: install run test unit lint tf-check bench clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

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

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

tf-check: $(TOOLS_STAMP)
	TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive terraform/
	$(TOOLS)/bin/checkov --quiet --compact --skip-download -d terraform/ --framework terraform

test: $(STAMP) lint tf-check
	$(VENV)/bin/python -m pytest

unit: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not emulator"

bench: $(STAMP)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r bench/requirements.txt
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache .hypothesis
