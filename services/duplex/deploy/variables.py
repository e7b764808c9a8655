"""Every make variable of `make up` / `make config` / `make systemd` and what it takes (the
source of the table in `.env.example` and docs/deployment.md; a test keeps both in step)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

MAKE_VARIABLES: Mapping[str, str] = MappingProxyType(
    {
        "GPUS": "auto (nvidia-smi -L; none: GPUS=0) | a count (2) | a list (0,2; '3,' is GPU 3)",
        "MODELS": "GPU:ADAPTER[+ADAPTER],...: 0:piper,1:kokoro or 0:piper+kokoro (default piper)",
        "CPU_WORKERS": "CPU Piper workers: 2 by default with GPUS=0, 0 beside GPUs",
        "MONITORING": "1 (default): Prometheus and Grafana, the compose profile `monitoring`",
        "TLS": "1: HTTPS/WSS on TLS_PORT (8443), self-signed unless TLS_CERT_DIR",
        "TLS_CERT_DIR": "a folder with cert.pem and key.pem (readable by uid 10001)",
        "NETWORK": "bridge (default, production) | host (every service on 127.0.0.1)",
        "WEBRTC": "1 (default): WebRTC on; the orchestrator then uses the host network",
        "PUBLIC_HOST": "the name browsers use (printed URLs, console links, certificate)",
        "SUBNET": "the bridge network's /24 as three numbers (default 10.231.77)",
        "IMAGE_TAG": "tag of duplex-worker, duplex-worker-cuda, duplex-server (default latest)",
        "REDIS_IMAGE": "default redis:7-alpine",
        "BASE": "the Dockerfile's BASE for the CPU and server images",
        "CUDA_BASE": "BASE of the CUDA worker image (CUDA 12 + cuDNN 9 runtime with Python 3.11)",
        "ENV_FILE": "where the secrets are kept (default .env)",
        "COMPOSE_PROJECT": "the compose project name (default duplex)",
        "STACK_DIR": "where the files are generated (default compose/generated)",
        "REDIS_PORT": "6379",
        "ORCH_PORT": "8080: WebSocket, WebRTC signalling, the mic page, /ready, /metrics",
        "TLS_PORT": "8443",
        "CONSOLE_PORT": "8000",
        "GRPC_BASE_PORT": "7001: the first worker's gRPC port; the next takes the next one",
        "METRICS_BASE_PORT": "9101: the first worker's /metrics port",
        "PROMETHEUS_PORT": "9090 (published on 127.0.0.1 only)",
        "GRAFANA_PORT": "3000",
        "SERVICE": "make logs: one service (e.g. orchestrator, tts-piper-0)",
        "FOLLOW": "make logs: 1 to follow",
        "INSTALL_DIR": "make systemd: the checkout with its .venv (default /opt/duplex)",
        "SERVICE_USER": "make systemd: the user the units run as (default duplex)",
        "XTTS_MODEL_DIR": "the host folder with the XTTS-v2 weights (needed when MODELS runs xtts)",
        "COSYVOICE_MODEL_DIR": "the host folder with the CosyVoice2 weights (cosyvoice2 workers)",
    }
)
