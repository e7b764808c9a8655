"""Who may call a worker: a shared token, mutual TLS, or both.

Across hosts the worker's gRPC port is on the network, and LoadModel or a Synthesize stream
must not be open to anyone who reaches it. Both sides read the same settings:

- `DUPLEX_WORKER_TOKEN`: every call carries `authorization: Bearer <token>`; the worker answers
  UNAUTHENTICATED without it. The standard health service stays open (probes carry no token).
- `DUPLEX_WORKER_TLS_CA`, `DUPLEX_WORKER_TLS_CERT`, `DUPLEX_WORKER_TLS_KEY` (PEM files, e.g. from
  `python -m duplex.deploy.pki`): the worker serves TLS and asks every client for a certificate
  signed by the CA; clients check the worker's certificate against the same CA.

Neither set: plaintext with no check (one host, or a private network).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

ENV_TOKEN = "DUPLEX_WORKER_TOKEN"
ENV_CA = "DUPLEX_WORKER_TLS_CA"
ENV_CERT = "DUPLEX_WORKER_TLS_CERT"
ENV_KEY = "DUPLEX_WORKER_TLS_KEY"
_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)  # probes carry no token


class WorkerSecurityError(ValueError):
    """The worker API's security settings are incomplete or unreadable."""


@dataclass(frozen=True)
class WorkerSecurity:
    """A token and/or mutual TLS for the worker API (both sides use the same value)."""

    token: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def __post_init__(self) -> None:
        tls = (self.ca_file, self.cert_file, self.key_file)
        if any(tls) and not all(tls):
            raise WorkerSecurityError(f"mutual TLS needs all of {ENV_CA}, {ENV_CERT} and {ENV_KEY}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerSecurity:
        return cls(
            token=env.get(ENV_TOKEN, "").strip(),
            ca_file=env.get(ENV_CA, "").strip(),
            cert_file=env.get(ENV_CERT, "").strip(),
            key_file=env.get(ENV_KEY, "").strip(),
        )

    @property
    def tls(self) -> bool:
        return bool(self.ca_file)

    @property
    def describe(self) -> str:
        parts = [p for p, on in (("mutual TLS", self.tls), ("token", bool(self.token))) if on]
        return " + ".join(parts) or "none"

    def _read(self) -> tuple[bytes, bytes, bytes]:
        try:
            return (
                Path(self.ca_file).read_bytes(),
                Path(self.cert_file).read_bytes(),
                Path(self.key_file).read_bytes(),
            )
        except OSError as exc:
            raise WorkerSecurityError(f"cannot read a worker TLS file: {exc}") from exc

    # -- the client side ---------------------------------------------------------------------

    def channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """A channel to `target` ("host:port") that presents these credentials."""
        interceptors = _token_interceptors(self.token) if self.token else None
        if self.tls:
            ca, cert, key = self._read()
            credentials = grpc.ssl_channel_credentials(ca, key, cert)
            return grpc.aio.secure_channel(
                target, credentials, options=list(options), interceptors=interceptors
            )
        return grpc.aio.insecure_channel(target, options=list(options), interceptors=interceptors)

    # -- the worker's side -------------------------------------------------------------------

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS that requires a client certificate from the CA; None without TLS."""
        if not self.tls:
            return None
        ca, cert, key = self._read()
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [_TokenServerInterceptor(self.token)] if self.token else []


def _with_token(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add("authorization", f"Bearer {token}")
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


# grpc ships no types here: the base classes are Any to mypy. One class per call shape: a
# channel files each interceptor under the first shape it matches, so one object implementing
# all four would see only unary calls.
class _UnaryUnaryToken(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self._token), request)


class _UnaryStreamToken(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self._token), request)


class _StreamUnaryToken(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_token(details, self._token), requests)


class _StreamStreamToken(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_token(details, self._token), requests)


def _token_interceptors(token: str) -> list[Any]:
    """Interceptors that add the bearer token to every call (insecure channels take no call
    credentials)."""
    return [cls(token) for cls in (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken,
                                   _StreamStreamToken)]  # fmt: skip


class _TokenServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call but health checks that lacks the token (UNAUTHENTICATED)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)  # type: ignore[attr-defined]
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())  # type: ignore[attr-defined]
        presented = str(metadata.get("authorization", "")).encode()
        if hmac.compare_digest(presented, self._expected):
            return handler
        return _refusal(handler)


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a worker token is required")

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a worker token is required")
        yield  # pragma: no cover - makes this an async generator, as the handler type needs

    streaming_in = bool(handler.request_streaming)
    streaming_out = bool(handler.response_streaming)
    if streaming_in and streaming_out:
        return grpc.stream_stream_rpc_method_handler(refuse_stream)
    if streaming_out:
        return grpc.unary_stream_rpc_method_handler(refuse_stream)
    if streaming_in:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)
