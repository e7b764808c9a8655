"""WebRTC signalling over HTTP on the orchestrator's port: the two offer/answer conventions.

- `POST /offer`, JSON `{"sdp": ..., "type": "offer"}` -> `{"sdp": ..., "type": "answer",
  "peer_id": ...}` (aiortc's examples and Pipecat's SmallWebRTC use this shape);
- WHIP (RFC 9725): `POST /whip` with `Content-Type: application/sdp` -> `201 Created`, the SDP
  answer as the body and `Location: /whip/<peer_id>`; `DELETE /whip/<peer_id>` ends it.

Client mistakes are answered with a 4xx status and a plain-text reason that names what to fix
(400 malformed SDP or JSON, 404 unknown peer, 413 too large, 415 wrong content type), never a
500: SDP is validated here before aiortc sees it, and anything aiortc still rejects is a 400.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiortc.sdp import SessionDescription
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

# An audio offer with a data channel is ~2-6 KB; browsers with many codecs stay under 16 KB.
MAX_OFFER_BYTES = 64 * 1024
# One audio track (+ one data channel); more m-lines only cost transports nobody uses.
MAX_MEDIA_SECTIONS = 8
SDP_CONTENT_TYPE = "application/sdp"
_SDP_LINE = re.compile(r"^[a-z]=")


class SignallingError(Exception):
    """An offer or request refused; `status` and `message` go to the client as-is, `reason`
    is a bounded label for logs and metrics."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Answer:
    peer_id: str
    sdp: str


class Answerer(Protocol):
    """What the routes need from the transport."""

    async def answer(self, offer_sdp: str) -> Answer:
        """A new peer for a validated offer; raises `SignallingError`."""
        ...

    async def hang_up(self, peer_id: str) -> bool:
        """End a peer's session and close it; False when no such peer exists."""
        ...


def check_offer(sdp: str) -> None:
    """Refuse an offer aiortc would choke on, with a message that says what is wrong."""
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0].strip() != "v=0":
        raise SignallingError(400, "malformed_sdp", 'malformed SDP: it must start with "v=0"')
    bad = next((i for i, line in enumerate(lines) if not _SDP_LINE.match(line)), None)
    if bad is not None:
        raise SignallingError(
            400, "malformed_sdp", f"malformed SDP: line {bad + 1} is not of the form <letter>="
        )
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises assertions, ValueError, IndexError...
        detail = str(exc) or type(exc).__name__
        raise SignallingError(400, "malformed_sdp", f"malformed SDP: {detail}") from None
    media = description.media
    if len(media) > MAX_MEDIA_SECTIONS:
        raise SignallingError(
            400, "too_many_media", f"offer has {len(media)} m-lines; at most {MAX_MEDIA_SECTIONS}"
        )
    if not any(m.kind == "audio" for m in media):
        raise SignallingError(400, "no_audio", "offer has no audio")
    if not any(m.kind == "application" for m in media):
        # Without the `control` channel no SessionStart can ever arrive.
        raise SignallingError(
            400,
            "no_data_channel",
            'offer has no data channel: create one labelled "control" before createOffer',
        )
    for m in media:
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise SignallingError(
                400, "malformed_sdp", f"malformed SDP: m={m.kind} has no a=ice-ufrag/a=ice-pwd"
            )
        if m.dtls is None or not m.dtls.fingerprints:
            raise SignallingError(
                400, "malformed_sdp", f"malformed SDP: m={m.kind} has no a=fingerprint (DTLS)"
            )
        if m.kind == "audio" and not m.rtcp_mux:
            raise SignallingError(400, "malformed_sdp", "malformed SDP: audio needs a=rtcp-mux")


async def read_body(request: Request, cap: int = MAX_OFFER_BYTES) -> bytes:
    """The request body, refused with 413 beyond `cap` (before reading it when the client
    declares its length)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise SignallingError(413, "too_large", f"body is {declared} bytes; the limit is {cap}")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                raise SignallingError(413, "too_large", f"body is over the limit of {cap} bytes")
    except ClientDisconnect:
        raise SignallingError(400, "client_disconnect", "the client went away") from None
    return bytes(body)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _offer_from_json(body: bytes) -> str:
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        raise SignallingError(400, "malformed_json", "body is not valid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("sdp"), str):
        raise SignallingError(
            400, "malformed_json", 'body must be a JSON object {"sdp": "...", "type": "offer"}'
        )
    if obj.get("type") != "offer":
        raise SignallingError(400, "not_an_offer", 'field "type" must be "offer"')
    sdp: str = obj["sdp"]
    return sdp


def _sdp_text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignallingError(400, "malformed_sdp", "malformed SDP: not UTF-8 text") from None


def _error_response(exc: SignallingError) -> Response:
    return PlainTextResponse(exc.message + "\n", status_code=exc.status)


def signalling_routes(
    answerer: Answerer, on_error: Callable[[SignallingError], None]
) -> list[BaseRoute]:
    """`/offer` and `/whip` routes for one transport; `on_error` sees every refusal."""

    def guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except SignallingError as exc:
                on_error(exc)
                return _error_response(exc)

        return endpoint

    async def offer(request: Request) -> Response:
        if _media_type(request) not in ("application/json", ""):
            raise SignallingError(
                415, "content_type", "POST /offer takes application/json: {sdp, type: offer}"
            )
        sdp = _offer_from_json(await read_body(request))
        answer = await answerer.answer(sdp)
        return JSONResponse({"sdp": answer.sdp, "type": "answer", "peer_id": answer.peer_id})

    async def whip(request: Request) -> Response:
        if _media_type(request) != SDP_CONTENT_TYPE:
            got = request.headers.get("content-type") or "none"
            raise SignallingError(
                415,
                "content_type",
                f"WHIP offers must be sent as Content-Type: {SDP_CONTENT_TYPE} (got {got})",
            )
        answer = await answerer.answer(_sdp_text(await read_body(request)))
        return Response(
            answer.sdp,
            status_code=201,
            media_type=SDP_CONTENT_TYPE,
            headers={"Location": f"/whip/{answer.peer_id}"},
        )

    async def whip_delete(request: Request) -> Response:
        peer_id = request.path_params["peer_id"]
        if not await answerer.hang_up(peer_id):
            raise SignallingError(404, "unknown_peer", f"no WebRTC session {peer_id[:64]!r}")
        return Response(status_code=200)

    return [
        Route("/offer", guarded(offer), methods=["POST"]),
        Route("/whip", guarded(whip), methods=["POST"]),
        Route("/whip/{peer_id}", guarded(whip_delete), methods=["DELETE"]),
    ]
