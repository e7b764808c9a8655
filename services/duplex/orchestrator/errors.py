"""The orchestrator's one root error: every refusal carries a stable `ErrorCode` and a message.

Domain errors (a bad wire message: `ProtocolError`; a session that refuses a request; no
worker to route to) subclass `DuplexError`; the transports turn any of them into the
client's `Error {code, message}` without knowing which part raised it.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable error codes of `Error` messages; clients may rely on them."""

    INVALID_MESSAGE = "INVALID_MESSAGE"
    INVALID_AUDIO = "INVALID_AUDIO"  # mic audio of the wrong size, rate or format
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    NO_WORKER_AVAILABLE = "NO_WORKER_AVAILABLE"
    CAPACITY = "CAPACITY"
    TEXT_TOO_LONG = "TEXT_TOO_LONG"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    INVALID_SAMPLE_RATE = "INVALID_SAMPLE_RATE"
    INVALID_REFERENCE_AUDIO = "INVALID_REFERENCE_AUDIO"
    NOT_STARTED = "NOT_STARTED"
    ALREADY_STARTED = "ALREADY_STARTED"
    UNAUTHORIZED = "UNAUTHORIZED"  # a client API key missing or wrong
    UNKNOWN_SESSION = "UNKNOWN_SESSION"  # the agent's channel names no live session
    WORKER_FAILED = "WORKER_FAILED"
    CLIENT_TOO_SLOW = "CLIENT_TOO_SLOW"  # the client stopped reading; closed with 1008
    INTERNAL = "INTERNAL"


class DuplexError(Exception):
    """Root of the orchestrator's errors: `code` and `message` are what the client is told.

    `str(err)` is ``"CODE: message"``. The arguments are kept in `args` so that subclasses
    with the same constructor pickle and copy like any exception.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ProtocolError(DuplexError):
    """Raw client input that is not a valid message (`duplex.orchestrator.protocol`)."""
