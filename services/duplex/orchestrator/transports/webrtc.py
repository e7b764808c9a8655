"""The WebRTC transport (aiortc): one peer connection per client, one session per peer.

Signalling (`signalling.py`) creates a peer for each valid offer. A peer gives its session:
- a TTS track out (`rtc_tracks.TtsTrack`, the `AudioSink`: 20 ms frames, Opus at 48 kHz);
- the `control` data channel (`rtc_channel`): the same JSON messages as the WebSocket;
- the mic track in: 20 ms mono 48 kHz frames to `receive_audio` once the session has started
  (a browser's mic flows from the moment ICE connects, before its SessionStart).

Each peer has one runner task that owns its life: it waits for the connection (at most
`connect_timeout_s`), then for the first of: the session ending (its goodbye is sent first),
the client going away (ICE/DTLS failed or closed), a `DELETE`, a broken channel, or the
transport closing; then it ends the session, cancels and awaits the peer's tasks, closes the
`RTCPeerConnection` and forgets the peer. Nothing here is module-level: the transport owns
its peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from starlette.routing import BaseRoute

from duplex.audio.frames import PcmFrame
from duplex.orchestrator.config import OrchestratorConfig, WebRtcConfig
from duplex.orchestrator.errors import DuplexError
from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.orchestrator.protocol import (
    ErrorCode,
    ProtocolError,
    parse_client_message,
)
from duplex.orchestrator.session.pacer_clock import PacerClock
from duplex.orchestrator.transports.base import ClientChannel, TransportKind
from duplex.orchestrator.transports.rtc_channel import (
    CONTROL_LABEL,
    ControlChannelSink,
)
from duplex.orchestrator.transports.rtc_ice import restricted_host_addresses
from duplex.orchestrator.transports.rtc_peer import HubLike, Peer
from duplex.orchestrator.transports.rtc_tracks import RTC_RATE, TtsTrack, read_mic
from duplex.orchestrator.transports.signalling import (
    Answer,
    SignallingError,
    check_offer,
    signalling_routes,
)

_LOG = logging.getLogger(__name__)

# Each step of closing a peer (ending the session, closing the peer connection) gets this long.
_CLOSE_STEP_S = 3.0
# A session that ended by itself sends its goodbye (Error?, SessionEnded) before the close.
_DRAIN_S = 1.0
# Client-gone reasons: no goodbye is owed (and there is nobody to drain to).
_GONE = frozenset({"disconnected", "connect_timeout"})
BINARY_REFUSED = (
    "binary messages are not accepted on the control channel; send audio on the mic track"
)


class WebRtcTransport:
    """WebRTC clients: signalling routes, and one session per peer connection."""

    def __init__(
        self, hub: HubLike, config: OrchestratorConfig, metrics: OrchestratorMetrics
    ) -> None:
        self._hub = hub
        self._config: WebRtcConfig = config.transport.webrtc
        self._limits = config.protocol_limits()
        self._metrics = metrics
        self._peers: dict[str, Peer] = {}
        self._closing = False
        # One timer paces every peer's audio (see session.pacer_clock).
        self._pacer_clock = PacerClock()

    @property
    def active_peers(self) -> int:
        return len(self._peers)

    def peer_ids(self) -> list[str]:
        return list(self._peers)

    def routes(self) -> list[BaseRoute]:
        """`POST /offer`, `POST /whip`, `DELETE /whip/{peer_id}`."""
        return signalling_routes(self, self._refused)

    def _refused(self, exc: SignallingError) -> None:
        fields = {"status": exc.status, "reason": exc.reason, "why": exc.message}
        _LOG.info("webrtc offer refused", extra=fields)

    def _rtc_configuration(self) -> RTCConfiguration:
        cfg = self._config
        servers = [
            RTCIceServer(
                urls=url,
                username=cfg.ice_username or None,
                credential=cfg.ice_credential or None,
            )
            for url in cfg.ice_servers
        ]
        # Always a list, possibly empty: aiortc's default is a public STUN server.
        return RTCConfiguration(iceServers=servers)

    # ------------------------------------------------------------ signalling (Answerer)

    async def answer(self, offer_sdp: str) -> Answer:
        if self._closing:
            raise SignallingError(503, "shutting_down", "the orchestrator is shutting down")
        if not self._config.enabled:
            raise SignallingError(503, "disabled", "WebRTC is disabled on this orchestrator")
        check_offer(offer_sdp)
        rtc_configuration = self._rtc_configuration()  # before open: nothing to undo if it fails
        peer_id = uuid.uuid4().hex
        tts = TtsTrack()
        sink = ControlChannelSink()
        channel = ClientChannel(
            TransportKind.WEBRTC,
            tts,
            sink,
            input_sample_rate=RTC_RATE,
            pacer_clock=self._pacer_clock,
        )
        try:
            connection = self._hub.open(channel)
        except DuplexError as exc:
            # Every transport counts toward max_connections (the hub counts the refusal).
            if exc.code is not ErrorCode.CAPACITY:
                raise
            raise SignallingError(503, "capacity", exc.message) from None
        peer = Peer(peer_id, RTCPeerConnection(rtc_configuration), tts, sink, connection)
        self._peers[peer_id] = peer  # before any await, so that close_all sees it
        self._metrics.webrtc_peers.set(len(self._peers))
        try:
            answer_sdp = await self._negotiate(peer, offer_sdp)
        except BaseException as exc:
            await self._close(peer, "disconnected")
            if isinstance(exc, SignallingError | asyncio.CancelledError):
                raise
            if isinstance(exc, TimeoutError):
                raise SignallingError(
                    504, "negotiation_timeout", "ICE gathering did not finish in time"
                ) from None
            if isinstance(exc, Exception):
                # aiortc refused what check_offer let through: still the client's offer.
                detail = str(exc) or type(exc).__name__
                raise SignallingError(400, "rejected_offer", f"offer refused: {detail}") from None
            raise
        if self._closing:  # close_all ran while this offer was negotiated
            await self._close(peer, "shutdown")
            raise SignallingError(503, "shutting_down", "the orchestrator is shutting down")
        peer.runner = asyncio.create_task(self._run(peer), name=f"webrtc-peer-{peer_id[:8]}")
        _LOG.info("webrtc peer created", extra=peer.log_fields())
        return Answer(peer_id, answer_sdp)

    async def hang_up(self, peer_id: str) -> bool:
        peer = self._peers.get(peer_id)
        if peer is None:
            return False
        peer.request_stop("client_end")
        runner = peer.runner
        if runner is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_STEP_S * 3):
                    # Shielded: a client that drops the DELETE must not cancel the close.
                    await asyncio.shield(runner)
        return True

    async def _negotiate(self, peer: Peer, offer_sdp: str) -> str:
        pc = peer.pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = pc.connectionState
            if state == "connected":
                peer.connected.set()
            elif state in ("failed", "closed", "disconnected"):
                peer.request_stop("disconnected")

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            self._attach_control(peer, channel)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                peer.spawn(
                    "mic", self._guard(peer, "mic", lambda: read_mic(track, self._mic(peer)))
                )

        async with asyncio.timeout(self._config.connect_timeout_s):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            pc.addTrack(peer.tts)  # takes the offer's audio transceiver
            answer = await pc.createAnswer()
            with restricted_host_addresses(self._config.host_addresses):
                await pc.setLocalDescription(answer)
        local = pc.localDescription
        return str(local.sdp)

    # ------------------------------------------------------------ per-peer work

    def _attach_control(self, peer: Peer, channel: RTCDataChannel) -> None:
        if channel.label != CONTROL_LABEL or peer.control_attached:
            _LOG.info("data channel ignored", extra=peer.log_fields(label=channel.label))
            channel.close()
            return
        peer.control_attached = True
        peer.sink.attach(channel)
        channel.on("message", peer.inbox.put)
        peer.spawn("control", self._guard(peer, "control", lambda: self._control(peer)))

    async def _control(self, peer: Peer) -> None:
        """The peer's one control task: client messages to the session, in order."""
        connection = peer.connection
        while True:
            raw = await peer.inbox.get()
            if connection.ended:
                continue
            if isinstance(raw, bytes):
                await connection.reject(ProtocolError(ErrorCode.INVALID_MESSAGE, BINARY_REFUSED))
            else:
                try:
                    message = parse_client_message(raw, self._limits)
                except ProtocolError as exc:
                    await connection.reject(exc)
                else:
                    await connection.receive(message)
            dropped = peer.inbox.take_dropped()
            if dropped and not connection.ended:
                text = f"{dropped} control messages dropped: sent faster than the session takes"
                await connection.reject(ProtocolError(ErrorCode.INVALID_MESSAGE, text))

    def _mic(self, peer: Peer) -> Callable[[PcmFrame], Awaitable[None]]:
        connection = peer.connection

        async def deliver(frame: PcmFrame) -> None:
            # A browser's mic flows from the moment ICE connects; until the session has
            # started (routed, listening) nobody listens, and after its end nobody will.
            if connection.input_rate is not None and not connection.ended:
                await connection.receive_audio(frame)

        return deliver

    async def _guard(self, peer: Peer, what: str, work: Callable[[], Awaitable[None]]) -> None:
        """A task boundary: a bug ends this peer only, and loudly."""
        try:
            await work()
        except Exception:
            _LOG.exception("webrtc peer task failed", extra=peer.log_fields(task=what))
            peer.request_stop("internal_error")

    async def _run(self, peer: Peer) -> None:
        reason = "internal_error"
        try:
            reason = await self._wait_for_end(peer)
        except Exception:
            _LOG.exception("webrtc peer runner failed", extra=peer.log_fields())
        finally:
            await self._close(peer, reason)

    async def _wait_for_end(self, peer: Peer) -> str:
        ended = asyncio.create_task(peer.connection.wait_ended(), name="rtc-ended")
        stop = asyncio.create_task(peer.stop_requested.wait(), name="rtc-stop")
        broken = asyncio.create_task(peer.sink.broken.wait(), name="rtc-broken")
        connected = asyncio.create_task(peer.connected.wait(), name="rtc-connected")
        waits = (ended, stop, broken, connected)
        try:
            done, _ = await asyncio.wait(
                {ended, stop, connected},
                timeout=self._config.connect_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:
                _LOG.info("webrtc peer did not connect in time", extra=peer.log_fields())
                return "connect_timeout"
            if connected in done:
                await asyncio.wait({ended, stop, broken}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                return peer.stop_reason
            if ended.done():
                return ended.result()
            return "disconnected"  # the control channel broke
        finally:
            for task in waits:
                task.cancel()
            for task in waits:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _close(self, peer: Peer, reason: str) -> None:
        """End the session, stop every task, close the peer connection, forget the peer."""
        connection = peer.connection
        try:
            if not connection.ended:
                await self._step(peer, "end session", connection.end(reason))
            if reason not in _GONE:
                await peer.sink.drain(_DRAIN_S)
            tasks = list(peer.tasks)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            peer.tts.stop()
            await self._step(peer, "close peer connection", peer.pc.close())
        finally:
            self._peers.pop(peer.id, None)
            self._metrics.webrtc_peers.set(len(self._peers))
            _LOG.info("webrtc peer closed", extra=peer.log_fields(reason=reason))

    async def _step(self, peer: Peer, step: str, work: Awaitable[None]) -> None:
        deadline = asyncio.timeout(_CLOSE_STEP_S)
        try:
            async with deadline:
                await work
        except TimeoutError:
            _LOG.error("webrtc close step timed out", extra=peer.log_fields(step=step))
        except Exception:
            _LOG.exception("webrtc close step failed", extra=peer.log_fields(step=step))

    async def close_all(self, reason: str = "shutdown") -> None:
        """Refuse new offers; end every peer's session with `reason` and close it."""
        self._closing = True
        try:
            await self._close_peers(reason)
        finally:
            await self._pacer_clock.aclose()

    async def _close_peers(self, reason: str) -> None:
        peers = list(self._peers.values())
        if not peers:
            return
        _LOG.info("closing webrtc peers", extra={"count": len(peers)})
        for peer in peers:
            peer.request_stop(reason)
        runners = [p.runner for p in peers if p.runner is not None]
        if not runners:
            return
        _, pending = await asyncio.wait(runners, timeout=_CLOSE_STEP_S * 3)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
