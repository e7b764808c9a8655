"""OpenAI-compatible speech: `POST /v1/audio/speech` and `GET /v1/models` over the fleet."""

from duplex.orchestrator.openai_api.routes import openai_routes

__all__ = ["openai_routes"]
