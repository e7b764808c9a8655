// What this browser measures itself: inbound audio from RTCPeerConnection.getStats(), and a
// level meter for a local stream through WebAudio.

// Energy (level² × seconds) that counts as sound: 20 ms at a level of 0.003, far below speech.
// Opus decodes digital silence to exactly zero, which adds nothing.
export const SOUND_ENERGY = 2e-7;
// Opus packets of digital silence are a few bytes (3 from aiortc); speech takes tens to hundreds.
export const SPEECH_PACKET_BYTES = 20;

/** The inbound audio stream's figures and the transport path in use. */
export async function inboundAudio(pc) {
  const report = await pc.getStats();
  let inbound = null;
  let pairId = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
    if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
  });
  const pair = pairId ? report.get(pairId) : null;
  const local = pair ? report.get(pair.localCandidateId) : null;
  const remote = pair ? report.get(pair.remoteCandidateId) : null;
  const emitted = inbound?.jitterBufferEmittedCount ?? 0;
  return {
    packetsReceived: inbound?.packetsReceived ?? 0,
    bytesReceived: inbound?.bytesReceived ?? 0,
    packetsLost: inbound?.packetsLost ?? 0,
    audioLevel: inbound?.audioLevel ?? 0,
    totalAudioEnergy: inbound?.totalAudioEnergy ?? 0,
    totalSamplesDuration: inbound?.totalSamplesDuration ?? 0,
    jitterBufferMs: emitted ? (1000 * inbound.jitterBufferDelay) / emitted : null,
    path: pair
      ? {
          local: candidateText(local),
          remote: candidateText(remote),
          localAddress: local?.address ?? local?.ip ?? null,
          remoteAddress: remote?.address ?? remote?.ip ?? null,
        }
      : null,
  };
}

function candidateText(c) {
  if (!c) return "?";
  return `${c.address ?? c.ip}:${c.port} ${c.protocol} ${c.candidateType}`;
}

/** Sound decoded since `before` (an earlier `inboundAudio` result)? The cumulative energy is
 * used, not `audioLevel`, which decays slowly and would still show the previous utterance. */
export function soundSince(before, now) {
  return now.totalAudioEnergy - before.totalAudioEnergy > SOUND_ENERGY;
}

/** Packets of sound (not silence) received between two `inboundAudio` results? This is when
 * audio reached the browser, before its jitter buffer and playout. */
export function speechPacketsBetween(before, now) {
  const packets = now.packetsReceived - before.packetsReceived;
  return packets > 0 && (now.bytesReceived - before.bytesReceived) / packets > SPEECH_PACKET_BYTES;
}

/** RMS level (0..1) of a MediaStream, read on demand; `close()` releases the AudioContext. */
export class LevelMeter {
  constructor(stream) {
    this.context = new AudioContext();
    this.analyser = this.context.createAnalyser();
    this.analyser.fftSize = 512;
    this.samples = new Float32Array(this.analyser.fftSize);
    this.source = this.context.createMediaStreamSource(stream);
    this.source.connect(this.analyser);
    // Created on a click, but some browsers still start it suspended.
    this.context.resume().catch(() => {});
  }

  level() {
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (const x of this.samples) sum += x * x;
    return Math.sqrt(sum / this.samples.length);
  }

  close() {
    this.source.disconnect();
    this.context.close().catch(() => {});
  }
}
