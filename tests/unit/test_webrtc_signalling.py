"""Offer validation: what aiortc would choke on is refused with a 400 that says why."""

from __future__ import annotations

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from duplex.orchestrator.transports.rtc_ice import restricted_host_addresses
from duplex.orchestrator.transports.signalling import (
    MAX_MEDIA_SECTIONS,
    SignallingError,
    check_offer,
)


async def make_offer(*, audio: bool = True, data_channel: bool = True) -> str:
    """A real aiortc offer, gathered on loopback only."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if audio:
            pc.addTransceiver("audio", direction="sendrecv")
        if data_channel:
            pc.createDataChannel("control")
        if not audio and not data_channel:
            pc.addTransceiver("video", direction="recvonly")
        offer = await pc.createOffer()
        with restricted_host_addresses(["127.0.0.1"]):
            await pc.setLocalDescription(offer)
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def refusal(sdp: str) -> SignallingError:
    with pytest.raises(SignallingError) as caught:
        check_offer(sdp)
    return caught.value


async def test_a_real_audio_offer_with_a_data_channel_passes() -> None:
    check_offer(await make_offer())


async def test_the_offer_gathers_only_loopback_candidates() -> None:
    """The restriction works: every host candidate is 127.0.0.1."""
    sdp = await make_offer()
    candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
    assert candidates
    assert all(line.split()[4] == "127.0.0.1" for line in candidates)


@pytest.mark.parametrize(
    "sdp",
    [
        "",
        "hello",
        "\x00\xff" * 20,
        '{"sdp": "v=0"}',
        "v=0\r\nthis is not sdp\r\n",
        "v=0\r\nm=audio x\r\n",
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF abc\r\n",
    ],
)
def test_malformed_sdp_is_a_400_that_says_malformed(sdp: str) -> None:
    err = refusal(sdp)
    assert (err.status, err.reason) == (400, "malformed_sdp")
    assert err.message.startswith("malformed SDP")


async def test_an_offer_without_audio_is_refused_as_no_audio() -> None:
    err = refusal(await make_offer(audio=False))
    assert (err.status, err.reason, err.message) == (400, "no_audio", "offer has no audio")


async def test_an_offer_without_the_control_channel_is_refused() -> None:
    err = refusal(await make_offer(data_channel=False))
    assert (err.status, err.reason) == (400, "no_data_channel")
    assert '"control"' in err.message


async def test_an_offer_without_ice_credentials_names_what_is_missing() -> None:
    sdp = await make_offer()
    stripped = "\r\n".join(
        line for line in sdp.split("\r\n") if not line.startswith(("a=ice-ufrag", "a=ice-pwd"))
    )
    err = refusal(stripped)
    assert err.status == 400 and "ice-ufrag" in err.message


async def test_an_offer_without_a_dtls_fingerprint_is_refused() -> None:
    sdp = await make_offer()
    stripped = "\r\n".join(line for line in sdp.split("\r\n") if "fingerprint" not in line)
    err = refusal(stripped)
    assert err.status == 400 and "fingerprint" in err.message


async def test_too_many_media_sections_are_refused() -> None:
    sdp = await make_offer()
    head, sep, audio = sdp.partition("m=audio")
    audio_section = sep + audio.split("m=application")[0]
    many = head + audio_section * (MAX_MEDIA_SECTIONS + 1)
    err = refusal(many)
    assert (err.status, err.reason) == (400, "too_many_media")
