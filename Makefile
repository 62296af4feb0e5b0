# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Type-checked by `make lint`: every production module (sandbox/ and chimera/ are not deployed).
MYPY_TARGETS := shared orchestrator tools sandbox chimera bench terraform/build_bundles.py

BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: bench demo test test-emulators lint format bench-speed bench-torture bench-soak bench-console browser-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# Its release pins an old protobuf it does not need; its server runs on ours.
	$(BIN)/pip install --quiet --no-deps 'gcloud-tasks-emulator>=0.6,<0.7'
	touch $(STAMP)

# In the default home (.chimera, or CHIMERA_HOME), where a bare `chimera runs list` looks; a new
# request id each time, so every demo is a new run. It ends with the commands that show it.
demo: $(STAMP)
	$(BIN)/chimera onboard \
		--company "Acme Corp" --domain acme.example \
		--contact-name "Ada Lovelace" --contact-email ada@acme.example \
		--goal "Roll out the analytics suite to the finance team" \
		--slack-channel "#client-onboarding" --request-id "demo-$$(date +%s)"

test: lint browser-deps
	RUN_CHECKOV=1 $(BIN)/pytest -q --numprocesses=auto --maxprocesses=4

# The console's browser test (tests/browser) drives Debian's headless Chromium: installed here
# when missing and we can (root, apt-get); otherwise those tests skip, naming what is missing.
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver; } || echo "could not install chromium and" \
			"chromium-driver with apt-get: the browser tests will skip"; \
	else echo "chromium and chromium-driver are missing and cannot be installed here" \
		"(not root, or no apt-get): the browser tests will skip"; fi

# Only the tests that need a Google Cloud emulator. Each missing one is skipped with its reason,
# unless CHIMERA_REQUIRE_EMULATORS=1 (as Cloud Build sets it): then it fails.
test-emulators: $(STAMP)
	$(BIN)/pytest -q -m emulator

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(MYPY_TARGETS)

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Every comparison, interleaved in one batch; JSON in bench/results/, a table printed each.
bench: $(BENCH_STAMP)
	$(BIN)/python bench/floor.py
	$(BIN)/python bench/engine.py $(ARGS)
	$(BIN)/python bench/concurrency.py
	$(BIN)/python bench/console.py
	$(BIN)/python bench/brownout.py

bench-speed: $(STAMP)
	$(BIN)/python bench/speed.py

# The console's render times with 10,000 runs in a fresh SQLite home (bench/results/).
bench-console: $(STAMP)
	$(BIN)/python bench/console.py $(ARGS)

clean:
	rm -rf $(VENV) .chimera .pytest_cache .ruff_cache .mypy_cache

bench-torture: $(STAMP)
	$(BIN)/python bench/torture.py $(ARGS)

bench-soak: $(STAMP)
	$(BIN)/python bench/soak.py $(ARGS)
