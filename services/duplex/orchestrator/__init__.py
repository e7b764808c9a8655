"""The orchestrator: WebSocket sessions routed to TTS workers found in Redis.

Run it with `python -m duplex.orchestrator --config config/orchestrator.yaml`; the parts are
described in docs/architecture.md (protocol, config, router, session, pacer, transports, app).
"""
