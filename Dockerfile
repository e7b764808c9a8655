# One image for both processes (worker and orchestrator); compose/docker-compose.yml picks the
# command. Not built on these machines (no Docker engine here): see compose/README.md.
#
# The image uses onnxruntime's CPU build. For Piper on a GPU, build with
#   --build-arg ONNXRUNTIME=onnxruntime-gpu
# and a CUDA base image that carries the CUDA and cuDNN libraries onnxruntime-gpu needs, e.g.
#   --build-arg BASE=nvidia/cuda:12.8.0-cudnn-runtime-ubuntu24.04 (then install python3.11 first).
# That GPU path has not been run anywhere yet.
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG ONNXRUNTIME=onnxruntime
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml setup.py README.md ./
COPY services ./services
COPY web ./web
COPY config ./config
RUN pip install . \
 && if [ "$ONNXRUNTIME" != "onnxruntime" ]; then pip uninstall -y onnxruntime && pip install "$ONNXRUNTIME"; fi

# 8080: orchestrator (WebSocket, WebRTC signalling, the mic page, /health /ready /metrics);
# 8443: the same over HTTPS/WSS when given a certificate; 7001: a worker's gRPC port.
EXPOSE 8080 8443 7001
CMD ["python", "-m", "duplex.orchestrator", "--config", "config/orchestrator.yaml"]
