"""Deployment: the compose stack and the systemd units for a GPU server (`make up GPUS=N`).

`python -m duplex.deploy` turns the operator's inputs (GPUS, MODELS, CPU_WORKERS, MONITORING,
TLS, NETWORK, WEBRTC) into files, deterministically: :mod:`spec` parses and checks the inputs,
:mod:`plan` names and numbers the workers, :mod:`configs`, :mod:`compose`, :mod:`monitoring`
and :mod:`systemd` build the documents, :mod:`render` writes them. :mod:`secrets` keeps the
stack's tokens in `.env`; :mod:`probe` is the containers' healthcheck.
"""
