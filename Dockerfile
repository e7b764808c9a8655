# The product's images, built offline from wheels made on the host (the air-gapped build):
#
#   make images                      # wheels, then both images (duplex-worker, duplex-server)
#
# which comes down to
#
#   python -m duplex.devtools.docker wheels          # -> .run/docker/wheels/{deps,app,kokoro}
#   docker build --target worker -t duplex-worker:latest .
#   docker build --target server -t duplex-server:latest .
#
# Targets:
#   worker  a TTS worker (python -m duplex.worker): Piper and its bundled English voice,
#           onnxruntime (CPU by default), grpc health. KOKORO=1 adds the Japanese voice.
#   server  the orchestrator (the default command; WebSocket, WebRTC, the mic page) and the
#           console (python -m duplex.console): no TTS engine, the web/ assets inside the
#           duplex wheel (setup.py packs them as duplex/_web; duplex.webassets finds them).
#
# Nothing is fetched while building: pip runs with --no-index on the wheels in WHEELS (build
# with --network none to prove it). The dependency wheels and the project's wheel are copied
# and installed in separate layers, so a code change rebuilds only the small last layers.
#
# BASE: any Debian-like image with python3 (3.11) and its venv module. The default is the
# public python:3.11-slim-bookworm; a host that cannot pull makes its own with
#   python -m duplex.devtools.docker base            # debootstrap -> duplex-base:bookworm
# and builds with --build-arg BASE=duplex-base:bookworm. The wheels must suit BASE's Python:
# `duplex.devtools.docker wheels --python-version X.Y.Z` evaluates the dependency markers for
# that interpreter (Debian 12's python3 is 3.11.2, which needs packages a newer one does not).
#
# CUDA variant of the worker (not buildable on the machines this is tested on: no CUDA base
# image can be pulled there, and there is no GPU):
#   python -m duplex.devtools.docker wheels --onnxruntime onnxruntime-gpu --gpu-adapters xtts,cosyvoice2
#   docker build --target worker --build-arg ONNXRUNTIME=onnxruntime-gpu \
#     --build-arg GPU_ADAPTERS=xtts,cosyvoice2 \
#     --build-arg BASE=<CUDA 12 + cuDNN 9 runtime image with python3.11 and python3.11-venv> \
#     -t duplex-worker-cuda:latest .
# onnxruntime-gpu replaces the CPU onnxruntime; the worker asks for the CUDA execution provider
# when use_cuda is on and logs which provider really runs (it falls back to the CPU).
# GPU_ADAPTERS adds the XTTS and CosyVoice2 adapters' torch stack with the same steps as
# `make venv` (services/duplex/devtools/extras.py); off by default. torch comes from the
# wheels built on the host: the CUDA build from the package index on a GPU host (a local CPU
# wheel where one is configured, as on the test machines).
#
# No secret is baked in: tokens, API keys and certificates come from the environment or
# mounted files at run time (compose reads them from .env).

ARG BASE=python:3.11-slim-bookworm

# ---- the dependency wheels, installed into /opt/duplex (build stages; never shipped) --------
FROM ${BASE} AS wheels
ARG WHEELS=.run/docker/wheels
COPY ${WHEELS}/deps/ /wheels/deps/

FROM wheels AS worker-venv
ARG ONNXRUNTIME=onnxruntime
# worker.txt pins the worker's whole dependency set (markers evaluated for every 3.11 release).
RUN set -eu; \
    python3 -m venv /opt/duplex; \
    pip="/opt/duplex/bin/pip --disable-pip-version-check --no-cache-dir"; \
    $pip install --no-index --find-links /wheels/deps -r /wheels/deps/worker.txt; \
    if [ "$ONNXRUNTIME" != "onnxruntime" ]; then \
      $pip uninstall -y onnxruntime; \
      $pip install --no-index --find-links /wheels/deps "$ONNXRUNTIME"; \
    fi
# The Japanese voice and the GPU adapters in their own layers, so that switching KOKORO or
# GPU_ADAPTERS leaves the ones above cached.
ARG WHEELS=.run/docker/wheels
COPY ${WHEELS}/kokoro/ /wheels/kokoro/
# gpu/ holds, beside the wheels, extras.py: the GPU adapters' install steps, the very ones
# `make venv` runs for the tests (services/duplex/devtools/extras.py, copied by wheels.py).
COPY ${WHEELS}/gpu/ /wheels/gpu/
ARG KOKORO=0
ARG GPU_ADAPTERS=
# GPU_ADAPTERS (xtts, cosyvoice2 or both, comma-separated; empty: none, the small image): the
# extras' pinned wheel sets (torch 2.13, coqui-tts, ...), then torchaudio 2.11, torchcodec and
# cosyvoice2-eu with --no-deps and torchaudio's compiled extension deleted (extras.py says
# why), then an import of everything the adapters import, which fails the build if the
# torch/torchaudio pair does not load.
# pip check proves the set complete. It runs before the packages installed without their
# declared dependencies (pyopenjtalk-plus asks for a dictionary package the Japanese voice does
# not use; torchaudio 2.11 pins torch 2.11), and the GPU build skips it: onnxruntime-gpu does
# not carry the distribution name `onnxruntime` that piper-tts and duplex declare.
RUN set -eu; \
    pip="/opt/duplex/bin/pip --disable-pip-version-check --no-cache-dir"; \
    extras="/opt/duplex/bin/python /wheels/gpu/extras.py"; \
    if [ "$KOKORO" = "1" ]; then \
      test -s /wheels/kokoro/kokoro.txt || { echo "KOKORO=1: build the wheels with --kokoro" >&2; exit 1; }; \
      $pip install --no-index --find-links /wheels/kokoro --find-links /wheels/deps -r /wheels/kokoro/kokoro.txt; \
    fi; \
    if [ -n "$GPU_ADAPTERS" ]; then \
      for a in $(echo "$GPU_ADAPTERS" | tr ',' ' '); do \
        test -f "/wheels/gpu/$a.txt" || { echo "GPU_ADAPTERS=$GPU_ADAPTERS: build the wheels with --gpu-adapters $GPU_ADAPTERS" >&2; exit 1; }; \
      done; \
      $extras deps "$GPU_ADAPTERS" --find-links /wheels/gpu --find-links /wheels/deps; \
    fi; \
    if [ "$ONNXRUNTIME" = "onnxruntime" ]; then /opt/duplex/bin/python -m pip check; fi; \
    if [ "$KOKORO" = "1" ]; then \
      $pip install --no-index --no-deps --find-links /wheels/kokoro -r /wheels/kokoro/no-deps.txt; \
    fi; \
    if [ -n "$GPU_ADAPTERS" ]; then \
      $extras finish "$GPU_ADAPTERS" --find-links /wheels/gpu --find-links /wheels/deps; \
      $extras verify "$GPU_ADAPTERS"; \
    fi

FROM wheels AS server-venv
# server.txt: the orchestrator's and the console's dependencies, without Piper and its voice.
# server-no-deps.txt: silero-vad (vad.engine: silero) without the torch its metadata asks for.
RUN set -eu; \
    python3 -m venv /opt/duplex; \
    pip="/opt/duplex/bin/pip --disable-pip-version-check --no-cache-dir"; \
    $pip install --no-index --find-links /wheels/deps -r /wheels/deps/server.txt; \
    $pip install --no-index --no-deps --find-links /wheels/deps -r /wheels/deps/server-no-deps.txt

# ---- what both images share: a non-root user, the venv on PATH, the default configs ---------
FROM ${BASE} AS runtime
ENV PATH=/opt/duplex/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/duplex \
    DUPLEX_LOG_FORMAT=json
RUN set -eu; \
    groupadd --system --gid 10001 duplex; \
    useradd --system --uid 10001 --gid duplex --home-dir /var/lib/duplex --shell /usr/sbin/nologin duplex; \
    install -d -o duplex -g duplex /var/lib/duplex
WORKDIR /app
# The YAML files the commands name (config/worker-gpu0.yaml, ...); compose mounts generated
# ones over them or overrides keys with DUPLEX_* variables. Read-only for the service user.
COPY config/ /app/config/

# ---- the worker --------------------------------------------------------------------------
FROM runtime AS worker
COPY --from=worker-venv /opt/duplex /opt/duplex
ARG WHEELS=.run/docker/wheels
COPY ${WHEELS}/app/ /tmp/app/
RUN /opt/duplex/bin/pip install --disable-pip-version-check --no-cache-dir --no-index --no-deps \
      /tmp/app/*.whl \
 && rm -rf /tmp/app
# Kokoro joins its model parts into this folder on first use (it must be writable).
ENV KOKORO_JA_CACHE=/var/lib/duplex/kokoro \
    DUPLEX_WORKER_HOST=0.0.0.0 \
    DUPLEX_WORKER_METRICS_HOST=0.0.0.0
USER duplex
# 7001: gRPC (tts.v1 and grpc.health.v1); 9101: Prometheus /metrics.
EXPOSE 7001 9101
# SERVING only once the default model is loaded. The port is the one the worker binds:
# DUPLEX_WORKER_GRPC_PORT when set (compose sets it), else the image's default config's 7001.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; port = os.environ.get('DUPLEX_WORKER_GRPC_PORT') or '7001'; ch = grpc.insecure_channel('127.0.0.1:' + port); r = g.HealthStub(ch).Check(h.HealthCheckRequest(service=''), timeout=3); sys.exit(0 if r.status == h.HealthCheckResponse.SERVING else 1)"]
CMD ["python", "-m", "duplex.worker", "--config", "config/worker-gpu0.yaml"]

# ---- the orchestrator and the console ----------------------------------------------------
FROM runtime AS server
COPY --from=server-venv /opt/duplex /opt/duplex
ARG WHEELS=.run/docker/wheels
COPY ${WHEELS}/app/ /tmp/app/
# The web/ assets come inside the wheel (duplex/_web); the check fails the build without them.
RUN /opt/duplex/bin/pip install --disable-pip-version-check --no-cache-dir --no-index --no-deps \
      /tmp/app/*.whl \
 && rm -rf /tmp/app \
 && /opt/duplex/bin/python -c "from duplex.webassets import web_root; print('web assets:', web_root())"
ENV DUPLEX_ORCH_HOST=0.0.0.0
USER duplex
# 8080: the orchestrator (WebSocket, WebRTC signalling, the mic page, /health /ready /metrics);
# 8443: the same over HTTPS/WSS with a mounted certificate; 8000: the console.
EXPOSE 8080 8443 8000
# The orchestrator's GET /ready (200 once Redis answers and a worker is routable). The console
# runs from this image too: it sets DUPLEX_HEALTHCHECK_URL to its own /health.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-c", "import os, urllib.request; url = os.environ.get('DUPLEX_HEALTHCHECK_URL') or 'http://127.0.0.1:%s/ready' % (os.environ.get('DUPLEX_ORCH_PORT') or '8080'); urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=3)"]
CMD ["python", "-m", "duplex.orchestrator", "--config", "config/orchestrator.yaml"]
