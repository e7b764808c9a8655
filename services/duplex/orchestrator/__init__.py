"""The orchestrator: client sessions over WebSocket and WebRTC, routed to TTS workers found in
Redis, with barge-in on the client's mic audio.

Run it with `python -m duplex.orchestrator --config config/orchestrator.yaml`; the parts are
described in docs/architecture.md (protocol, config, router, session/, transports/, auth,
pages, tls, app).
"""
