"""OpenAI's error shape and statuses, at the API's edge.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "voice",
               "code": "voice_not_found"}}

400 bad input, 401 a missing or wrong key, 404 an unknown model or voice, 429 the
orchestrator at its connection limit, 503 no worker able to serve (both with `Retry-After`),
502 a worker that failed before any audio.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import JSONResponse

from duplex.orchestrator.errors import ErrorCode

RETRY_AFTER_S = 1


@dataclass(frozen=True)
class ApiError(Exception):
    """A refusal as the client will read it."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if self.status in (429, 503) else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


# The session layer's refusals (before any audio) as HTTP statuses.
_FROM_CODE: dict[ErrorCode, tuple[int, str, str]] = {
    ErrorCode.UNKNOWN_MODEL: (404, "invalid_request_error", "model_not_found"),
    ErrorCode.NO_WORKER_AVAILABLE: (503, "server_error", "no_worker_available"),
    ErrorCode.CAPACITY: (429, "rate_limit_error", "capacity"),
    ErrorCode.TEXT_TOO_LONG: (400, "invalid_request_error", "string_above_max_length"),
    ErrorCode.INVALID_SAMPLE_RATE: (400, "invalid_request_error", "invalid_value"),
    ErrorCode.WORKER_FAILED: (502, "server_error", "worker_failed"),
}


def from_session(code: ErrorCode, message: str) -> ApiError:
    status, kind, short = _FROM_CODE.get(code, (500, "server_error", "internal_error"))
    param = "input" if code is ErrorCode.TEXT_TOO_LONG else None
    return ApiError(status, message, type=kind, param=param, code=short)
