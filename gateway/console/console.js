// What every console page shares: the key, the calls to the API, and how a job's events are shown.
//
// The key is asked for once and kept in sessionStorage: it lasts as long as the tab, and no other
// site, tab or later visit sees it. A gateway without keys answers without one, so it asks for none.

const KEY_ITEM = "arkq.key";
const REFUSED_ITEM = "arkq.refused";

/** The event types of a job, and those that end it. */
export const EVENT_TYPES = ["started", "token", "reasoning", "tool_call", "reset", "done", "error", "cancelled"];
export const TERMINAL = new Set(["done", "error", "cancelled"]);

/** An error answer from the gateway, in OpenAI's shape: `{"error": {"message", "code", ...}}`. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the gateway answered ${status}`);
    this.status = status;
    this.code = error.code || null;
  }
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** An element, with attributes (a `text` attribute sets its text) and children. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") element.textContent = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.filter((child) => child !== null && child !== undefined));
  return element;
}

// --- The key and the API ------------------------------------------------------------------------------

let key = sessionStorage.getItem(KEY_ITEM);
let onRefused = () => {};

/** Call the API with the key; the parsed JSON answer, or ApiError. A refused key signs out. */
export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const sent = { ...headers };
  if (key) sent.Authorization = `Bearer ${key}`;
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers: sent,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!response.ok) {
    const error = new ApiError(response.status, parsed);
    if (response.status === 401) onRefused(error);
    throw error;
  }
  return parsed;
}

/** Ask `/v1/status` with `candidate` (or no key): "in", "refused" (401) or "down" (with why). */
async function probe(candidate) {
  const headers = candidate ? { Authorization: `Bearer ${candidate}` } : {};
  try {
    const response = await fetch("/v1/status", { headers, cache: "no-store" });
    if (response.status === 401) return { outcome: "refused" };
    // Any other answer (a 503 when Redis is away, too) means the key was accepted.
    return { outcome: "in" };
  } catch (error) {
    return { outcome: "down", message: `cannot reach the gateway (${error.message})` };
  }
}

/**
 * Show the page once the gateway lets us in, else only the sign-in box. `start()` runs once, signed in.
 * The page's HTML has `#sign-in` (a form with `#key` and `#sign-in-message`), and hidden until then,
 * `#bar` (with `#open-job` and `#sign-out`) and `#app`.
 */
export async function signIn(start) {
  const box = $("#sign-in");
  const app = $("#app");
  const message = $("#sign-in-message");
  const signOut = $("#sign-out");
  let started = false;

  const showSignIn = (text) => {
    $("#bar").hidden = true;
    app.hidden = true;
    signOut.hidden = true;
    box.hidden = false;
    message.textContent = text || "";
    $("#key").focus();
  };
  const enter = (withKey) => {
    box.hidden = true;
    $("#bar").hidden = false;
    app.hidden = false;
    signOut.hidden = !withKey;
    document.body.dataset.signedIn = withKey ? "key" : "open";
    if (!started) {
      started = true;
      start();
    }
  };
  const forget = () => {
    // The playground's job goes too: the next key may not see it.
    key = null;
    sessionStorage.clear();
  };

  onRefused = () => {
    forget();
    // Nothing of the console stays on screen once its key is refused: the page starts over, and says why.
    sessionStorage.setItem(REFUSED_ITEM, "1");
    location.reload();
  };
  $("#open-job").addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    const id = $("input", submitted.target).value.trim();
    if (id) location.href = `/jobs/${encodeURIComponent(id)}`;
  });
  signOut.addEventListener("click", () => {
    forget();
    location.reload();
  });
  $("form", box).addEventListener("submit", async (submitted) => {
    submitted.preventDefault();
    const candidate = $("#key").value.trim();
    if (!candidate) return;
    message.textContent = "Checking…";
    const found = await probe(candidate);
    if (found.outcome === "in") {
      key = candidate;
      sessionStorage.setItem(KEY_ITEM, candidate);
      $("#key").value = "";
      enter(true);
    } else if (found.outcome === "refused") {
      message.textContent = "That key was refused: it is not one of the gateway's keys (gateway.api_keys).";
      $("#key").select();
    } else {
      message.textContent = `Not signed in: ${found.message}`;
    }
  });

  for (;;) {
    const found = await probe(key);
    if (found.outcome === "in") return enter(Boolean(key));
    if (found.outcome === "refused") {
      const refused = Boolean(key) || sessionStorage.getItem(REFUSED_ITEM) !== null;
      forget();
      return showSignIn(refused ? "The key this tab signed in with is no longer accepted: sign in again." : "");
    }
    showSignIn(`${found.message}; trying again…`);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// --- Formatting ----------------------------------------------------------------------------------------

export function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 0.001) return "0 ms";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 100) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
  return duration(value);
}

export function duration(value) {
  const s = Math.max(0, Math.round(value));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function ago(then, now) {
  return then === null || then === undefined ? "–" : `${duration(now - then)} ago`;
}

export function clock(unixSeconds) {
  if (unixSeconds === null || unixSeconds === undefined) return "–";
  const at = new Date(unixSeconds * 1000);
  const ms = String(at.getMilliseconds()).padStart(3, "0");
  return `${at.toLocaleDateString()} ${at.toLocaleTimeString([], { hour12: false })}.${ms}`;
}

function preview(text, length = 48) {
  const flat = text.replace(/\s+/g, " ");
  return flat.length > length ? `${flat.slice(0, length - 1)}…` : flat;
}

// --- A job's events ------------------------------------------------------------------------------------

/**
 * A job's events as rows: one per event, except that a run of token (or reasoning) events is one row
 * that counts them, so a thousand-token answer is a handful of lines. `rows` is plain data, kept with a
 * page's state and drawn again after a reload.
 */
export class EventList {
  constructor(element, rows = []) {
    this.element = element;
    this.rows = rows;
    this.element.replaceChildren(...rows.map((row) => this.draw(row)));
  }

  add(event) {
    const last = this.rows.at(-1);
    const runs = event.type === "token" || event.type === "reasoning";
    if (runs && last && last.type === event.type && last.last === event.seq - 1) {
      last.last = event.seq;
      last.count += 1;
      last.chars += event.text.length;
      last.text = (last.text + event.text).slice(0, 200);
      this.element.lastElementChild.replaceWith(this.draw(last));
    } else {
      const row = { type: event.type, first: event.seq, last: event.seq, count: 1, chars: 0, text: "" };
      if (runs) Object.assign(row, { chars: event.text.length, text: event.text.slice(0, 200) });
      else row.detail = describe(event);
      this.rows.push(row);
      this.element.append(this.draw(row));
    }
    this.element.scrollTop = this.element.scrollHeight;
  }

  note(text) {
    const row = { type: "note", first: null, last: null, count: 1, chars: 0, text: "", detail: text };
    this.rows.push(row);
    this.element.append(this.draw(row));
  }

  draw(row) {
    const seq = row.first === null ? "" : row.first === row.last ? `${row.first}` : `${row.first}–${row.last}`;
    const detail =
      row.count > 1 || row.type === "token" || row.type === "reasoning"
        ? `×${row.count} · ${row.chars} chars · “${preview(row.text)}”`
        : row.detail;
    return h(
      "li",
      { "data-type": row.type, "data-first": row.first, "data-last": row.last },
      h("span", { class: "seq", text: seq }),
      h("span", { class: "type", text: row.type }),
      h("span", { class: "detail", text: detail }),
    );
  }
}

/** One line on what an event says. */
export function describe(event) {
  switch (event.type) {
    case "started":
      return `attempt ${event.attempt} on ${event.worker}${event.continues ? ", continuing the last" : ""}`;
    case "tool_call":
      return `#${event.index} ${event.name || ""} ${event.arguments || ""}`.trim();
    case "reset":
      return `starts over: ${event.reason || "the attempt before failed"}`;
    case "done": {
      const usage = event.usage || {};
      const tokens = usage.completion_tokens === undefined ? "" : ` · ${usage.completion_tokens} tokens`;
      return `${event.finish_reason || "finished"}${tokens}`;
    }
    case "error":
      return `${event.kind}: ${event.message}${event.retryable ? " (retryable)" : ""}`;
    case "cancelled":
      return "the job was cancelled";
    default:
      return "";
  }
}

/**
 * Follow a job's events from `eventsUrl` (its stream token included), after event `after` (-1: from
 * the first). The browser's EventSource reconnects by itself with Last-Event-ID; `onEvent` gets each
 * event once, in order, and `onClosed` runs when the stream stops for good (past the end, the gateway
 * answers 204; a refused or unknown job, 401 or 404) without a terminal event having been seen.
 */
export function follow(eventsUrl, after, { onEvent, onNote = () => {}, onClosed = () => {} }) {
  const url = new URL(eventsUrl, location.href);
  if (after >= 0) url.searchParams.set("after", String(after));
  const source = new EventSource(url);
  let seen = after;
  let ended = false;
  const take = (message) => {
    const event = JSON.parse(message.data);
    if (event.seq <= seen) return; // never twice
    if (event.seq > seen + 1) onNote(`events ${seen + 1}–${event.seq - 1} were not received`);
    seen = event.seq;
    if (TERMINAL.has(event.type)) {
      ended = true;
      source.close();
    }
    onEvent(event);
  };
  for (const type of EVENT_TYPES) {
    source.addEventListener(type, (message) => {
      // "error" is also the EventSource's own event for a dropped connection, which carries no data.
      if (message.data === undefined) {
        if (source.readyState === EventSource.CLOSED && !ended) onClosed();
        return;
      }
      take(message);
    });
  }
  source.addEventListener("stream_error", (message) => {
    const body = JSON.parse(message.data);
    onNote(`the stream broke (${(body.error && body.error.message) || "unknown"}); resuming`);
  });
  return source;
}
