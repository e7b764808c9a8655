"""The protocol's JSON Schema, generated from the wire Structs (`protocol_wire.py`).

`python -m duplex.orchestrator.protocol_schema > docs/protocol.schema.json` writes the
committed copy; a unit test fails when that copy is stale.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import msgspec

from duplex.orchestrator.protocol_wire import ClientWireMessage, ServerMessage

_DESCRIPTION = (
    "The JSON text messages of the duplex orchestrator's client protocol (WebSocket, and the "
    "WebRTC data channel `control`). Validate a client message against "
    "#/$defs/ClientMessage and a server message against #/$defs/ServerMessage. Binary "
    "messages are not described here: 20 ms frames of s16le mono PCM, from the client at "
    "its input_sample_rate and from the server at its sample_rate. See docs/protocol.md."
)


def protocol_json_schema() -> dict[str, Any]:
    """One JSON Schema (draft 2020-12) holding both directions' messages."""
    (client, server), components = msgspec.json.schema_components(
        [ClientWireMessage, ServerMessage]
    )
    for component in components.values():  # docstrings, wrapped in the source: one line each
        if "description" in component:
            component["description"] = " ".join(component["description"].split())
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "duplex orchestrator protocol",
        "description": _DESCRIPTION,
        "anyOf": [{"$ref": "#/$defs/ClientMessage"}, {"$ref": "#/$defs/ServerMessage"}],
        "$defs": {"ClientMessage": client, "ServerMessage": server, **components},
    }


def schema_text() -> str:
    """The schema exactly as committed in docs/protocol.schema.json."""
    return json.dumps(protocol_json_schema(), indent=2) + "\n"


def main() -> None:
    sys.stdout.write(schema_text())


if __name__ == "__main__":
    main()
