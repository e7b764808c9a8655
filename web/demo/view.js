// DOM building for the demo page. Server text is always set as text, never as HTML.

/** `el("p", {class: "x"}, "text", child)`: an element with attributes and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function clock(epochMs) {
  const d = new Date(epochMs);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function ms(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value)} ms`;
}

export function seconds(msValue) {
  return `${(msValue / 1000).toFixed(2)} s`;
}

const ARROWS = { in: "←", out: "→", local: "·" };

/** One line of the event log. */
export function logLine(entry) {
  const { type, ...fields } = entry.message ?? {};
  const body = Object.keys(fields).length ? JSON.stringify(fields) : "";
  const kind = type === "Error" ? "ev-error" : type?.startsWith("BargeIn") ? "ev-bargein" : `ev-${entry.dir}`;
  return el(
    "li",
    { class: kind, "data-type": entry.type },
    el("span", { class: "t" }, clock(entry.time)),
    el("span", { class: "dir", title: entry.dir }, ARROWS[entry.dir] ?? ""),
    el("span", { class: "type" }, entry.type),
    el("span", { class: "body" }, body),
  );
}

/** The utterance text with what the listener heard marked, and the rest struck through. */
export function heardText(text, bargeIn) {
  if (!bargeIn) return el("p", { class: "text" }, text);
  const cut = heardLength(text, bargeIn);
  return el(
    "p",
    { class: "text", "data-testid": "heard" },
    cut > 0 ? el("mark", { class: "heard", "data-testid": "heard-text" }, text.slice(0, cut)) : null,
    cut < text.length ? el("span", { class: "unheard" }, text.slice(cut)) : null,
  );
}

/** Characters heard: the server's heard_text when it is a prefix of what we sent (it is the
 * text itself), else its character count, within the text. */
export function heardLength(text, bargeIn) {
  const heard = bargeIn.heard_text ?? "";
  if (heard && text.startsWith(heard)) return heard.length;
  const chars = Number(bargeIn.heard_chars);
  return Number.isFinite(chars) ? Math.max(0, Math.min(text.length, chars)) : 0;
}

const STATE_WORDS = {
  queued: "waiting",
  playing: "speaking",
  done: "done",
  cut: "interrupted",
  resumed: "resumed",
  stopped: "stopped",
};

/** One utterance card: its state, first-audio latency, text, and any barge-in. */
export function utteranceItem(u) {
  const tagClass = { playing: "playing", resumed: "playing", done: "done", cut: "cut", stopped: "cut" };
  const header = el(
    "header",
    {},
    el("b", {}, `#${u.index}`),
    el("span", { class: `tag ${tagClass[u.state] ?? ""}`, "data-testid": "utterance-state" }, STATE_WORDS[u.state] ?? u.state),
    u.firstAudioMs !== null
      ? el("span", { "data-testid": "utterance-first-audio" }, `first audio ${ms(u.firstAudioMs)}`)
      : u.queuedBehind !== null
        ? el("span", {}, `queued behind #${u.queuedBehind} (first audio not measured)`)
        : null,
  );
  const items = [header, heardText(u.text, u.bargeIn)];
  if (u.bargeIn) items.push(bargeInLine(u.bargeIn, u.text));
  return el("li", { class: "utterance", "data-testid": "utterance", "data-index": u.index }, items);
}

function bargeInLine(b, text) {
  const heard = heardLength(text, b);
  const outcome =
    b.resumed === true ? " · resumed (a false start)" : b.resumed === false ? " · stopped" : "";
  return el(
    "div",
    { class: "bargein", "data-testid": "bargein" },
    el("b", {}, "Barge-in "),
    el(
      "span",
      { class: "figs" },
      `at ${seconds(b.at_ms)} into the audio · server latency ${ms(b.latency_ms)} · heard ${heard} of ${text.length} characters `,
    ),
    el("span", { class: "tag", title: "how the heard position was found", "data-testid": "heard-precision" }, b.heard_precision ?? "?"),
    outcome,
  );
}

/** A line for something the user said (the server's transcript). */
export function transcriptItem(text) {
  return el(
    "li",
    { class: "utterance you", "data-testid": "transcript" },
    el("header", {}, el("b", {}, "You")),
    el("p", { class: "text transcript" }, text),
  );
}
