// One WebRTC connection to the orchestrator: the mic track out, the TTS voice in, and the
// `control` data channel that carries the same JSON messages as the WebSocket protocol.
//
// Signalling is one HTTP exchange (POST /offer {sdp, type: "offer"} -> {sdp, type: "answer",
// peer_id}), so the offer is sent once ICE gathering is complete (the server does not trickle).

// Host candidates come within milliseconds; a STUN/TURN server may take longer. Past this the
// offer goes with what was gathered so far.
const GATHER_LIMIT_MS = 3000;

export class ConnectError extends Error {}

export class Peer {
  /**
   * @param {object} hooks
   * @param {RTCIceServer[]} hooks.iceServers
   * @param {(stream: MediaStream) => void} hooks.onTrack   the server's voice arrived
   * @param {(message: object) => void} hooks.onMessage     a JSON message from the server
   * @param {(state: string) => void} hooks.onState         RTCPeerConnection.connectionState
   * @param {() => void} hooks.onClose                      the data channel closed
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.pc = null;
    this.channel = null;
    this.peerId = null;
    this.closed = false;
  }

  /** Offer, send it, apply the answer, and wait until the data channel is open. */
  async connect({ micStream, offerUrl, timeoutMs }) {
    const deadline = performance.now() + timeoutMs;
    const pc = (this.pc = new RTCPeerConnection({ iceServers: this.hooks.iceServers }));
    // The page opens the channel before the offer, so the offer carries an application m-line.
    const channel = (this.channel = pc.createDataChannel("control", { ordered: true }));
    channel.onmessage = (event) => this.hooks.onMessage(parseMessage(event.data));
    channel.onclose = () => {
      if (!this.closed) this.hooks.onClose();
    };
    pc.ontrack = (event) => this.hooks.onTrack(event.streams[0] ?? new MediaStream([event.track]));
    pc.onconnectionstatechange = () => this.hooks.onState(pc.connectionState);

    const track = micStream?.getAudioTracks()[0];
    if (track) {
      pc.addTransceiver(track, { direction: "sendrecv", streams: [micStream] });
    } else {
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, Math.min(GATHER_LIMIT_MS, remaining(deadline)));

    const answer = await postOffer(offerUrl, pc.localDescription.sdp, remaining(deadline));
    if (this.closed) throw new ConnectError("disconnected while connecting");
    this.peerId = answer.peer_id ?? null;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    await opened(channel, pc, remaining(deadline));
  }

  /** Send one protocol message on the data channel. */
  send(message) {
    if (this.channel?.readyState !== "open") throw new ConnectError("not connected");
    this.channel.send(JSON.stringify(message));
  }

  get open() {
    return this.channel?.readyState === "open";
  }

  close() {
    this.closed = true;
    this.channel?.close();
    this.pc?.close();
  }
}

function remaining(deadline) {
  return Math.max(0, deadline - performance.now());
}

function parseMessage(data) {
  if (typeof data !== "string") {
    return { type: "(binary)", bytes: data.byteLength ?? data.size ?? 0 };
  }
  try {
    const message = JSON.parse(data);
    return message && typeof message === "object" ? message : { type: "(not an object)", raw: data };
  } catch {
    return { type: "(not JSON)", raw: data.slice(0, 200) };
  }
}

function gathered(pc, limitMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, limitMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

async function postOffer(url, sdp, limitMs) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp, type: "offer" }),
      signal: AbortSignal.timeout(Math.max(1, limitMs)),
    });
  } catch (error) {
    const why = error.name === "TimeoutError" ? "no answer in time" : error.message;
    throw new ConnectError(`could not send the offer to ${new URL(url).pathname}: ${why}`);
  }
  if (!response.ok) {
    const detail = (await response.text()).trim() || response.statusText;
    const hint = response.status === 401 || response.status === 403 ? " (add ?key=... to the page URL)" : "";
    throw new ConnectError(`the server refused the offer (${response.status}): ${detail}${hint}`);
  }
  const answer = await response.json();
  if (answer?.type !== "answer" || typeof answer.sdp !== "string") {
    throw new ConnectError("the server's answer is not {sdp, type: \"answer\"}");
  }
  return answer;
}

function opened(channel, pc, limitMs) {
  if (channel.readyState === "open") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const finish = (error) => {
      clearTimeout(timer);
      channel.removeEventListener("open", onOpen);
      pc.removeEventListener("connectionstatechange", onState);
      if (error) reject(error);
      else resolve();
    };
    const onOpen = () => finish();
    const onState = () => {
      if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        finish(new ConnectError(`the connection ${pc.connectionState} (ICE: ${pc.iceConnectionState})`));
      }
    };
    const timer = setTimeout(
      () => finish(new ConnectError(`not connected after ${Math.round(limitMs / 1000)} s (ICE: ${pc.iceConnectionState})`)),
      limitMs,
    );
    channel.addEventListener("open", onOpen);
    pc.addEventListener("connectionstatechange", onState);
  });
}
