# The two commands a new user runs: `make demo` (the main job on the embedded default) and
# `make test` (the CPU test suite). Both create/refresh .venv first (python3 -m rl.bootstrap).
PY := .venv/bin/python
# Ray must stay on loopback on this machine (see README, "Ray on one machine").
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_AUTH_MODE := token
export TOKENIZERS_PARALLELISM := false
export TRL_EXPERIMENTAL_SILENCE := 1
EXTRA ?= auto
CONFIG ?= configs/demo.yaml
ARGS ?=

.PHONY: setup demo test test-fast lint bench clean

setup:
	@python3 -m rl.bootstrap --extra $(EXTRA)

demo: setup
	$(PY) -m rl.train --config $(CONFIG) $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not vllm and not ray and not slow" $(ARGS)

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) -m rollouts.bench --json runs/bench/rollouts_tiny.json --size tiny

clean:
	rm -rf runs .pytest_cache
