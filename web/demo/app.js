// The duplex voice demo: connect over WebRTC, speak text, talk over it to interrupt.
//
// URL options: ?key=API_KEY (sent to /offer and /api/models), ?processing=0 (no echo
// cancellation, noise suppression or gain control: for tests with a fake mic), ?ice=URL,URL
// (STUN/TURN servers; none by default) with ?ice_user= and ?ice_pass=, ?model=ID, ?policy=stop|resume|off.
//
// Tests read `window.duplexDemo` (state) and may call its `actions`.

import { ConnectError, Peer } from "./connection.js";
import { LevelMeter, inboundAudio, soundSince, speechPacketsBetween } from "./stats.js";
import { el, logLine, ms, transcriptItem, utteranceItem } from "./view.js";

const CONNECT_TIMEOUT_MS = 15000;
const SESSION_START_TIMEOUT_MS = 30000; // the first session may wait for a model to load
const FIRST_AUDIO_LIMIT_MS = 30000;
const POLL_FAST_MS = 20; // while waiting for the first sound of an utterance
const POLL_SLOW_MS = 250;
const MAX_EVENTS = 2000;
const MAX_LOG_LINES = 400;

const params = new URLSearchParams(location.search);
const options = {
  key: params.get("key") ?? "",
  processing: params.get("processing") !== "0",
  iceServers: iceServers(params),
  model: params.get("model") ?? "",
  policy: params.get("policy") ?? "",
};

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const ui = {
  status: $("status"),
  statusText: document.querySelector(".status-text"),
  model: $("model-select"),
  modelHint: $("model-hint"),
  refresh: document.getElementById("refresh-models"),
  policy: $("policy-select"),
  connect: $("connect"),
  disconnect: $("disconnect"),
  text: $("text"),
  speak: $("speak"),
  stop: $("stop"),
  info: $("session-info"),
  firstAudio: $("first-audio"),
  bargeInLatency: $("bargein-latency"),
  packets: $("packets"),
  jitter: $("jitter"),
  micLevel: $("mic-level"),
  voiceLevel: $("voice-level"),
  utterances: $("utterances"),
  utterancesEmpty: $("utterances-empty"),
  log: $("event-log"),
  voice: $("voice"),
  insecure: $("insecure-banner"),
  micDenied: $("mic-denied-banner"),
  error: $("error-banner"),
};

// Everything a test (or a curious person in the console) may read.
const demo = {
  ready: false,
  secure: window.isSecureContext && Boolean(navigator.mediaDevices?.getUserMedia),
  processing: options.processing,
  state: "idle", // idle | connecting | connected | failed
  connected: false,
  mic: "none", // none | on | denied | unavailable | insecure
  micError: null,
  error: null,
  models: [],
  modelsLoaded: false,
  peerId: null,
  session: null, // SessionStarted
  sessionEnded: null,
  events: [],
  utterances: [],
  firstAudioMs: null, // text sent -> first sound decoded (what a listener hears)
  firstPacketMs: null, // text sent -> first packet of sound received (before buffering)
  bargeIns: [],
  transcripts: [],
  statsInbound: { packetsReceived: 0, audioLevel: 0, totalAudioEnergy: 0, jitterBufferMs: null },
  path: null,
  pc: null, // the RTCPeerConnection while connected (for tests and the console)
  actions: {},
};
window.duplexDemo = demo;

// Per-connection resources, all released by teardown().
let peer = null;
let micStream = null;
let micMeter = null;
let sessionWaiter = null; // {resolve, reject} while SessionStart awaits its answer
let measuring = null; // {utterance, baseline, previous} while waiting for the first sound
let pollTimer = null;

function iceServers(p) {
  const urls = (p.get("ice") ?? "").split(",").map((u) => u.trim()).filter(Boolean);
  if (!urls.length) return [];
  const server = { urls };
  if (p.get("ice_user")) server.username = p.get("ice_user");
  if (p.get("ice_pass")) server.credential = p.get("ice_pass");
  return [server];
}

function apiUrl(path) {
  const url = new URL(path, location.origin);
  if (options.key) url.searchParams.set("key", options.key);
  return url.toString();
}

// -- the event log --------------------------------------------------------------------------

function record(dir, type, message = {}) {
  const entry = { time: Date.now(), at: performance.now(), dir, type, message };
  demo.events.push(entry);
  if (demo.events.length > MAX_EVENTS) demo.events.splice(0, demo.events.length - MAX_EVENTS);
  const stick = ui.log.scrollTop + ui.log.clientHeight >= ui.log.scrollHeight - 4;
  ui.log.append(logLine(entry));
  while (ui.log.childElementCount > MAX_LOG_LINES) ui.log.firstElementChild.remove();
  if (stick) ui.log.scrollTop = ui.log.scrollHeight;
  return entry;
}

function send(message) {
  peer.send(message);
  record("out", message.type, message);
}

// -- banners and status -------------------------------------------------------------------------

function showError(text, title = "Something went wrong") {
  demo.error = text;
  ui.error.querySelector('[data-field="error-title"]').textContent = title;
  ui.error.querySelector('[data-field="error-detail"]').textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  demo.error = null;
  ui.error.hidden = true;
}

function showInsecure() {
  const https = new URL(location.href);
  https.protocol = "https:";
  https.port = "8443";
  ui.insecure.querySelector('[data-field="origin"]').textContent = location.origin;
  const link = ui.insecure.querySelector('[data-field="https-url"]');
  link.href = https.toString();
  link.textContent = `https://${location.hostname}:8443/`;
  ui.insecure.hidden = false;
  demo.mic = "insecure";
}

function showMicProblem(error) {
  const detail =
    error.name === "NotAllowedError" || error.name === "SecurityError"
      ? "The browser (or you) refused the microphone to this page."
      : error.name === "NotFoundError" || error.name === "OverconstrainedError"
        ? "No microphone was found. Plug one in, or pick one in the browser's settings."
        : error.name === "NotReadableError"
          ? "The microphone is busy or failed to start (another application may hold it)."
          : `The microphone could not start: ${error.name}: ${error.message}`;
  demo.mic = error.name === "NotAllowedError" || error.name === "SecurityError" ? "denied" : "unavailable";
  demo.micError = `${error.name}: ${error.message}`;
  ui.micDenied.querySelector('[data-field="mic-detail"]').textContent = detail;
  ui.micDenied.hidden = false;
}

function setState(state) {
  demo.state = state;
  demo.connected = state === "connected";
  refreshControls();
}

function refreshControls() {
  const speaking = demo.utterances.some((u) => ["queued", "playing", "resumed"].includes(u.state));
  const shown = demo.state === "connected" && speaking ? "speaking" : demo.state;
  ui.status.dataset.state = shown;
  ui.statusText.textContent = {
    idle: "Not connected",
    connecting: "Connecting…",
    connected: demo.mic === "on" ? "Connected · listening" : "Connected · no microphone",
    speaking: "Speaking",
    failed: "Connection failed",
  }[shown];
  const busy = demo.state === "connecting" || demo.state === "connected";
  ui.connect.disabled = busy;
  ui.disconnect.disabled = !busy;
  ui.speak.disabled = demo.state !== "connected";
  ui.stop.disabled = demo.state !== "connected";
  // Model and policy go in SessionStart, once per connection.
  ui.model.disabled = busy;
  ui.policy.disabled = busy;
}

// -- models -------------------------------------------------------------------------------------

async function loadModels() {
  ui.modelHint.textContent = "Loading the models the workers offer…";
  let body;
  try {
    const response = await fetch(apiUrl("/api/models"), { signal: AbortSignal.timeout(10000) });
    if (!response.ok) {
      const detail = (await response.text()).trim();
      throw new Error(`${response.status} ${detail || response.statusText}`);
    }
    body = await response.json();
  } catch (error) {
    ui.modelHint.textContent = `Could not load the model list (${error.message}); "Automatic" still works.`;
    record("local", "models unavailable", { error: error.message });
    return;
  }
  const models = Array.isArray(body?.models) ? body.models : [];
  const previous = ui.model.value || options.model;
  ui.model.replaceChildren(el("option", { value: "" }, "Automatic (English)"));
  for (const m of models) {
    const workers = Array.isArray(m.workers) ? m.workers : [];
    const attrs = { value: m.id, "data-language": m.language ?? "", "data-workers": workers.join(", ") };
    ui.model.append(el("option", attrs, m.language ? `${m.id} (${m.language})` : m.id));
  }
  if (models.some((m) => m.id === previous)) ui.model.value = previous;
  demo.models = models;
  demo.modelsLoaded = true;
  describeModel();
}

function describeModel() {
  const option = ui.model.selectedOptions[0];
  const count = demo.models.length;
  const live = `${count} model${count === 1 ? "" : "s"} live in the registry`;
  if (!count) {
    ui.modelHint.textContent = "No worker is registered right now: start one, then reload the list.";
  } else if (option?.value) {
    ui.modelHint.textContent = `${live}; this one on ${option.dataset.workers || "no worker"}.`;
  } else {
    ui.modelHint.textContent = `${live}; the router picks one that speaks English.`;
  }
}

// -- connecting ---------------------------------------------------------------------------------

async function openMic() {
  if (!demo.secure) return null;
  const processing = options.processing;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        echoCancellation: processing,
        noiseSuppression: processing,
        autoGainControl: processing,
        channelCount: 1,
      },
    });
    demo.mic = "on";
    demo.micError = null;
    ui.micDenied.hidden = true;
    return stream;
  } catch (error) {
    showMicProblem(error);
    record("local", "microphone unavailable", { error: `${error.name}: ${error.message}` });
    return null;
  }
}

async function connect() {
  if (demo.state === "connecting" || demo.state === "connected") return;
  clearError();
  resetSession();
  setState("connecting");
  record("local", "connecting", { processing: options.processing, ice_servers: options.iceServers.length });
  micStream = await openMic();
  if (micStream) micMeter = new LevelMeter(micStream);
  const current = (peer = new Peer({
    iceServers: options.iceServers,
    onTrack: (stream) => playVoice(stream),
    onMessage: (message) => onMessage(message),
    onState: (state) => {
      record("local", `peer ${state}`);
      // "disconnected" may recover by itself; "failed" and "closed" do not.
      if ((state === "failed" || state === "closed") && peer === current) {
        teardown(`the connection ${state}`);
      }
    },
    onClose: () => {
      if (peer === current) teardown("the server closed the connection");
    },
  }));
  try {
    await current.connect({ micStream, offerUrl: apiUrl("/offer"), timeoutMs: CONNECT_TIMEOUT_MS });
  } catch (error) {
    if (peer === current) {
      teardown(null);
      setState("failed");
      const detail = error instanceof ConnectError ? error.message : `${error.name}: ${error.message}`;
      showError(detail, "Could not connect");
      record("local", "connect failed", { error: error.message });
    }
    return;
  }
  demo.peerId = current.peerId;
  demo.pc = current.pc;
  setState("connected");
  record("local", "connected", { peer_id: current.peerId });
  ui.info.textContent = `Connected (peer ${current.peerId ?? "?"}). The session starts with your first text.`;
  schedulePoll(POLL_SLOW_MS);
}

function playVoice(stream) {
  ui.voice.srcObject = stream;
  ui.voice.play().catch((error) => record("local", "playback blocked", { error: error.message }));
}

async function disconnect() {
  if (peer?.open && demo.session && !demo.sessionEnded) {
    try {
      send({ type: "SessionEnd" });
    } catch {
      // The channel closed meanwhile: nothing to say goodbye to.
    }
  }
  teardown(null);
  setState("idle");
  record("local", "disconnected");
}

/** Release the connection's resources; `why` (if any) is shown as an error. */
function teardown(why) {
  const wasLive = demo.state === "connected" || demo.state === "connecting";
  const current = peer;
  peer = null;
  demo.pc = null;
  current?.close();
  clearTimeout(pollTimer);
  pollTimer = null;
  measuring = null;
  micMeter?.close();
  micMeter = null;
  micStream?.getTracks().forEach((t) => t.stop());
  micStream = null;
  ui.voice.srcObject = null;
  if (sessionWaiter) sessionWaiter.reject(new Error(why ?? "disconnected"));
  sessionWaiter = null;
  if (why && wasLive) {
    // After SessionEnded the server closing the connection is the expected ending.
    setState(demo.sessionEnded ? "idle" : "failed");
    if (!demo.sessionEnded) showError(why, "Disconnected");
    record("local", "connection closed", { reason: why });
  }
  for (const u of demo.utterances) if (["queued", "playing", "resumed"].includes(u.state)) u.state = "stopped";
  renderUtterances();
}

function resetSession() {
  demo.session = null;
  demo.sessionEnded = null;
  demo.peerId = null;
  demo.utterances = [];
  demo.bargeIns = [];
  demo.transcripts = [];
  demo.firstAudioMs = null;
  demo.firstPacketMs = null;
  demo.path = null;
  ui.firstAudio.textContent = "–";
  ui.bargeInLatency.textContent = "–";
  renderUtterances();
}

// -- the session ----------------------------------------------------------------------------

function startSession() {
  if (demo.session) return Promise.resolve(demo.session);
  if (sessionWaiter) return sessionWaiter.promise;
  const policy = ui.policy.value;
  const option = ui.model.selectedOptions[0];
  const message = { type: "SessionStart", barge_in: { enabled: policy !== "off" } };
  if (policy !== "off") message.barge_in.policy = policy;
  if (option?.value) {
    message.model_id = option.value;
    if (option.dataset.language) message.language = option.dataset.language;
  }
  let resolve;
  let reject;
  const promise = new Promise((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  const timer = setTimeout(() => reject(new Error("no SessionStarted in time")), SESSION_START_TIMEOUT_MS);
  sessionWaiter = {
    promise,
    resolve: (value) => { clearTimeout(timer); sessionWaiter = null; resolve(value); },
    reject: (error) => { clearTimeout(timer); sessionWaiter = null; reject(error); },
  };
  send(message);
  return promise;
}

async function speak() {
  const text = ui.text.value.trim();
  if (!text || !peer?.open) return;
  try {
    await startSession();
  } catch (error) {
    showError(error.message, "The session did not start");
    return;
  }
  const pending = demo.utterances.filter((u) => ["queued", "playing", "resumed"].includes(u.state));
  const u = {
    index: demo.utterances.length,
    seq: demo.utterances.length + demo.transcripts.length,
    text,
    sentAt: null,
    firstAudioMs: null,
    firstPacketMs: null,
    queuedBehind: pending.length ? pending[pending.length - 1].index : null,
    state: "queued",
    bargeIn: null,
  };
  // The baseline is read before the text goes, so any sound decoded after it is this one's.
  const baseline = u.queuedBehind === null ? await inboundAudio(peer.pc).catch(() => null) : null;
  if (!peer?.open) return;
  demo.utterances.push(u);
  u.sentAt = performance.now();
  send({ type: "TextChunk", text, is_final: true });
  if (baseline) {
    measuring = { utterance: u, baseline, previous: baseline };
    schedulePoll(0);
  }
  renderUtterances();
}

function stop() {
  if (peer?.open && demo.session) send({ type: "Control", command: "STOP" });
}

function onMessage(message) {
  const type = String(message.type ?? "(no type)");
  record("in", type, message);
  const u = demo.utterances[message.utterance];
  switch (type) {
    case "SessionStarted":
      demo.session = message;
      ui.info.textContent = `Session ${message.session_id} · ${message.model_id} on ${message.worker} · ${message.sample_rate} Hz`;
      sessionWaiter?.resolve(message);
      break;
    case "AudioEnd":
      if (u) {
        // An interrupted utterance keeps saying so; one that resumed after a false start is done.
        if (u.state !== "cut" && u.state !== "stopped") u.state = "done";
        if (measuring?.utterance === u) measuring = null;
        const next = demo.utterances[u.index + 1];
        if (next?.state === "queued" && next.queuedBehind !== null) next.state = "playing";
      }
      break;
    case "BargeIn": {
      const b = { ...message, receivedAt: Date.now(), resumed: null };
      demo.bargeIns.push(b);
      if (u) {
        u.bargeIn = b;
        u.state = "cut";
      }
      ui.bargeInLatency.replaceChildren(ms(message.latency_ms));
      break;
    }
    case "BargeInEnd": {
      const b = demo.bargeIns[demo.bargeIns.length - 1];
      if (b) {
        b.resumed = Boolean(message.resumed);
        const cut = demo.utterances[b.utterance];
        if (cut) cut.state = b.resumed ? "resumed" : "stopped";
      }
      break;
    }
    case "Transcript":
      demo.transcripts.push({
        text: String(message.text ?? ""),
        seq: demo.utterances.length + demo.transcripts.length,
      });
      break;
    case "Error":
      if (sessionWaiter && !demo.session) sessionWaiter.reject(new Error(`${message.code}: ${message.message}`));
      showError(`${message.code}: ${message.message}`, "The server reported an error");
      break;
    case "SessionEnded":
      demo.sessionEnded = message;
      ui.info.textContent = `The session ended (${message.reason}). Connect again to start another.`;
      sessionWaiter?.reject(new Error(`session ended: ${message.reason}`));
      break;
    default:
      break;
  }
  renderUtterances();
}

// -- measuring ------------------------------------------------------------------------------

function schedulePoll(delay) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, delay);
}

async function poll() {
  const current = peer;
  if (!current?.pc) return;
  let stats;
  try {
    stats = await inboundAudio(current.pc);
  } catch {
    stats = null;
  }
  if (current !== peer) return;
  if (stats) {
    const now = performance.now();
    demo.statsInbound = stats;
    demo.path = stats.path;
    ui.packets.textContent = String(stats.packetsReceived);
    ui.jitter.textContent = ms(stats.jitterBufferMs);
    ui.voiceLevel.style.width = `${Math.min(100, Math.sqrt(stats.audioLevel) * 100)}%`;
    if (measuring) measure(measuring, stats, now);
    if (measuring && now - measuring.utterance.sentAt > FIRST_AUDIO_LIMIT_MS) {
      record("local", "no audio arrived", { utterance: measuring.utterance.index });
      measuring = null;
    }
  }
  schedulePoll(measuring ? POLL_FAST_MS : POLL_SLOW_MS);
}

/** First packet of sound, then first sound decoded: both from the text's sending. */
function measure(m, stats, now) {
  const u = m.utterance;
  if (u.firstPacketMs === null && speechPacketsBetween(m.previous, stats)) {
    u.firstPacketMs = demo.firstPacketMs = now - u.sentAt;
    record("local", "first audio packet", { utterance: u.index, ms: Math.round(u.firstPacketMs) });
  }
  m.previous = stats;
  if (!soundSince(m.baseline, stats)) return;
  u.firstAudioMs = demo.firstAudioMs = now - u.sentAt;
  // Stats refresh about every 50 ms: a packet may show up in the same read as its sound.
  if (u.firstPacketMs === null) u.firstPacketMs = demo.firstPacketMs = u.firstAudioMs;
  u.state = u.state === "queued" ? "playing" : u.state;
  ui.firstAudio.replaceChildren(
    ms(u.firstAudioMs),
    el("small", { "data-testid": "first-packet" }, `arrived ${ms(u.firstPacketMs)}`),
  );
  record("local", "first audio", { utterance: u.index, ms: Math.round(u.firstAudioMs) });
  measuring = null;
  renderUtterances();
}

function meterLoop() {
  const level = micMeter ? micMeter.level() : 0;
  ui.micLevel.style.width = `${Math.min(100, Math.sqrt(level) * 140)}%`;
  requestAnimationFrame(meterLoop);
}

// -- rendering ------------------------------------------------------------------------------

function renderUtterances() {
  const items = [
    ...demo.utterances.map((u) => [u.seq, utteranceItem(u)]),
    ...demo.transcripts.map((t) => [t.seq, transcriptItem(t.text)]),
  ];
  // Newest first, so the current utterance is always in view.
  items.sort((a, b) => b[0] - a[0]);
  ui.utterances.replaceChildren(...items.map(([, node]) => node));
  ui.utterancesEmpty.hidden = items.length > 0;
  refreshControls();
}

// -- start ----------------------------------------------------------------------------------

function init() {
  if (!demo.secure) showInsecure();
  if (options.policy && [...ui.policy.options].some((o) => o.value === options.policy)) {
    ui.policy.value = options.policy;
  }
  ui.connect.addEventListener("click", () => connect());
  ui.disconnect.addEventListener("click", () => disconnect());
  ui.speak.addEventListener("click", () => speak());
  ui.stop.addEventListener("click", () => stop());
  ui.refresh.addEventListener("click", () => loadModels());
  ui.model.addEventListener("change", () => describeModel());
  document.getElementById("clear-log").addEventListener("click", () => ui.log.replaceChildren());
  ui.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      speak();
    }
  });
  window.addEventListener("pagehide", () => teardown(null));
  demo.actions = { connect, disconnect, speak, stop, loadModels };
  refreshControls();
  renderUtterances();
  requestAnimationFrame(meterLoop);
  record("local", "page loaded", { secure: demo.secure, processing: options.processing });
  loadModels().finally(() => {
    demo.ready = true;
  });
}

init();
