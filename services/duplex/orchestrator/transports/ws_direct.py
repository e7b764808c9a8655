"""Binary WebSocket frames written straight to uvicorn's transport.

At 50 audio frames a second per session, uvicorn's ASGI ``send`` for one binary message
(an ASGI message dict, Starlette's sender wrapper, the `websockets` sans-I/O protocol's
``send_binary``, ``Frame.serialize`` with its ``BytesIO``, ``data_to_send``, a join) cost
more than the socket write itself. A server frame is only a 2-10 byte header before the
payload (RFC 6455 section 5.2: no mask, no extension here), so when the connection is
served by uvicorn's ``websockets-sansio`` protocol and is plainly open, `DirectBinaryWriter`
writes header and payload with one ``transport.write``; in any other state it declines and
the caller sends through ASGI as before (closes, text messages and anything unusual keep
that path).

Order holds: uvicorn's ASGI send writes to the same transport synchronously once its
``writable`` event is set, and the writer declines while it is not (a send then waits behind
flow control, and so must the audio behind it); the transport writes in call order.
"""

from __future__ import annotations

import struct
from typing import Any

from duplex.orchestrator.transports.backlog import protocol_behind

_FIN_BINARY = 0x82  # FIN bit + opcode 0x2 (binary)
_LEN_16 = 126
_LEN_64 = 127
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


def binary_frame_header(length: int) -> bytes:
    """The header of an unmasked, unfragmented binary frame with a ``length``-byte payload:
    7-bit length up to 125, then 16-bit up to 65535, then 64-bit."""
    if length < 0:
        raise ValueError(f"a payload length is >= 0, got {length}")
    if length < _LEN_16:
        return bytes((_FIN_BINARY, length))
    if length <= 0xFFFF:
        return _HEAD_16.pack(_FIN_BINARY, _LEN_16, length)
    return _HEAD_64.pack(_FIN_BINARY, _LEN_64, length)


def _sansio_protocol_class() -> type[Any] | None:
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:  # uvicorn without the `websockets` library
        return None
    return WebSocketsSansIOProtocol


class DirectBinaryWriter:
    """Writes binary messages of one uvicorn ``websockets-sansio`` connection straight to
    its transport (see the module's docstring); `write` returns False where it must not."""

    def __init__(self, protocol: Any) -> None:
        from websockets.protocol import State

        self._protocol = protocol
        self._conn = protocol.conn
        self._transport = protocol.transport
        self._writable = protocol.writable
        self._open = State.OPEN
        self._length = -1
        self._header = b""

    @classmethod
    def of(cls, send: object) -> DirectBinaryWriter | None:
        """A writer for the connection behind an ASGI ``send``, or None when another server
        (or another uvicorn WebSocket implementation) serves it."""
        sansio = _sansio_protocol_class()
        protocol = protocol_behind(send)
        # The exact class: a subclass may frame or account differently.
        if sansio is None or type(protocol) is not sansio:
            return None
        if getattr(protocol, "transport", None) is None or not hasattr(protocol, "conn"):
            return None
        return cls(protocol)

    def write(self, payload: bytes) -> bool:
        """One binary message, written now; False (nothing written) unless the connection is
        open with no extension, nothing of the protocol's own queued, no close sent and no
        flow control holding sends back: the caller then sends through ASGI."""
        protocol = self._protocol
        conn = self._conn
        transport = self._transport
        if (
            protocol.close_sent
            or protocol.disconnected
            or not self._writable.is_set()
            or conn.state is not self._open
            or conn.extensions
            or conn.writes
            or conn.expect_continuation_frame
            or transport.is_closing()
        ):
            return False
        length = len(payload)
        if length != self._length:
            self._header = binary_frame_header(length)
            self._length = length
        transport.write(self._header + payload)
        return True


__all__ = ["DirectBinaryWriter", "binary_frame_header"]
