# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench-speed bench-torture bench-soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# Its release pins an old protobuf it does not need; its server runs on ours.
	$(BIN)/pip install --quiet --no-deps 'gcloud-tasks-emulator>=0.6,<0.7'
	touch $(STAMP)

demo: $(STAMP)
	CHIMERA_HOME=$${CHIMERA_HOME:-.chimera/demo} $(BIN)/chimera onboard \
		--company "Acme Corp" --domain acme.example \
		--contact-name "Ada Lovelace" --contact-email ada@acme.example \
		--goal "Roll out the analytics suite to the finance team" \
		--slack-channel "#client-onboarding" --request-id "demo-$$(date +%s)"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	RUN_CHECKOV=1 $(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared orchestrator/core.py orchestrator/planning.py orchestrator/reasoning.py \
		orchestrator/deliberation.py tools/clearbit/core.py tools/jira/core.py \
		tools/sendgrid/core.py tools/slack/core.py

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench-speed: $(STAMP)
	$(BIN)/python bench/speed.py

clean:
	rm -rf $(VENV) .chimera .pytest_cache .ruff_cache .mypy_cache

bench-torture: $(STAMP)
	$(BIN)/python bench/torture.py $(ARGS)

bench-soak: $(STAMP)
	$(BIN)/python bench/soak.py $(ARGS)
