// docjobs browser client: submit document jobs, follow a job or a whole chat session live, and the
// <docjobs-job> element that shows a job (status, progress, preview, download link).
//
// A dependency-free ES module served by the gateway at /client/docjobs.js; its TypeScript declarations
// are /client/docjobs.d.ts. From a page on another origin, that origin must be listed in the gateway's
// DOCJOBS_CORS_ORIGINS (module scripts are fetched with CORS, like the API calls).
//
//   import { submit, watchSession } from "https://docjobs.example.com/client/docjobs.js";
//
// Streams resume by themselves. A signed URL (eventsUrl, sessionEventsUrl) is read with EventSource,
// which reconnects with Last-Event-ID on its own after a network error; after an answer EventSource does
// not retry (429 too many streams, a 5xx), the stream is reopened with `lastEventId` in the query, with
// backoff, and given up only on an answer that will not change (401, 403, 404, 400). A bearer token
// cannot go through EventSource (it sends no headers), so a stream opened with `token` is read with
// fetch, resumed the same way. The gateway ends a stream when its credential expires (the URL's token,
// or the bearer token): the 401 that follows asks `refreshUrl()` (or `refreshToken()`), when given, for
// a fresh one, and the stream resumes with it after the last event.

const TERMINAL = new Set(["job-complete", "job-failed"]);
const EVENT_NAMES = ["status", "progress", "job-complete", "job-failed", "error"];
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const DEFAULT_RETRY_MS = 3000;

/** An error answered by the gateway ({"error": {"code", "message", "field"}}), or a network failure
 * (status 0). */
export class DocjobsError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.name = "DocjobsError";
    this.status = status;
    this.code = code;
    this.field = field ?? null;
  }

  /** True when asking again may succeed (network, 408, 429, 5xx). */
  get retryable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

// The gateway's base URL, ending in "/": `gateway` as given (it may carry a path prefix, behind a proxy),
// or this page's origin when it is empty (the gateway serves the page).
function gatewayBase(gateway) {
  const here = typeof location !== "undefined" ? location.href : undefined;
  const base = new URL(gateway || "/", here);
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  return base;
}

/** A URL the gateway handed out (relative to it, such as eventsUrl) made absolute. */
export function resolveUrl(gateway, url) {
  return new URL(url.startsWith("//") ? url : url.replace(/^\//, ""), gatewayBase(gateway)).href;
}

const apiUrl = resolveUrl;

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const error = body && body.error ? body.error : {};
  return new DocjobsError(response.status, error.code || "http_" + response.status,
    error.message || response.statusText || "HTTP " + response.status, error.field);
}

const URL_FIELDS = ["eventsUrl", "statusUrl", "downloadUrl", "sessionEventsUrl"];

/** POST a job request. Resolves to the gateway's 202 answer with its URLs made absolute; rejects with a
 * DocjobsError (422 names the field) or a network error. */
export async function submit(request, options = {}) {
  const { gateway = "", token, idempotencyKey, signal, path = "/api/jobs" } = options;
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  let response;
  try {
    response = await fetch(apiUrl(gateway, path), { method: "POST", headers, body: JSON.stringify(request), signal });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new DocjobsError(0, "network", `the gateway could not be reached: ${err && err.message}`);
  }
  if (!response.ok) throw await errorOf(response);
  const answer = await response.json();
  for (const name of URL_FIELDS) {
    if (typeof answer[name] === "string") answer[name] = resolveUrl(gateway, answer[name]);
  }
  return answer;
}

function withLastEventId(url, lastEventId) {
  const u = new URL(url);
  u.searchParams.delete("lastEventId");
  if (lastEventId) u.searchParams.set("lastEventId", lastEventId);
  return u.href;
}

function backoff(failures) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.min(failures, 10));
  return ceiling / 2 + Math.random() * (ceiling / 2); // jitter: a gateway restart is not met by every page at once
}

function parseData(raw) {
  try {
    return JSON.parse(raw);
  } catch {
    return { raw };
  }
}

/** One live stream of events, resumed across failures; what watchJob and watchSession return. */
class EventStreamWatch {
  constructor(url, options) {
    const { gateway, token, refreshUrl, refreshToken, lastEventId, endsAtTerminal, onEvent, onError, onOpen } = options;
    this.url = url;
    this.token = token || null;
    this._gateway = gateway || "";
    this._refreshUrl = refreshUrl || null;
    this._refreshToken = refreshToken || null;
    this._refreshed = false; // asked for a fresh credential since the stream last opened
    this.lastEventId = lastEventId ? String(lastEventId) : "";
    this.closed = false;
    this._endsAtTerminal = endsAtTerminal;
    this._onEvent = onEvent;
    this._onError = onError;
    this._onOpen = onOpen;
    this._failures = 0;
    this._source = null;
    this._abort = null;
    this._timer = null;
    this._connect();
  }

  /** Stop following: no more events, no reconnection. */
  close() {
    this.closed = true;
    clearTimeout(this._timer);
    if (this._source) this._source.close();
    if (this._abort) this._abort.abort();
  }

  _emit(type, id, data) {
    if (id) this.lastEventId = id;
    if (type === "error") {
      // The stream itself could not go on (the job service is away): it ends, and is resumed.
      const err = (data && data.error) || {};
      this._report(new DocjobsError(503, err.code || "stream_error", err.message || "the stream was interrupted"));
      return;
    }
    this._failures = 0;
    if (this._onEvent) this._onEvent({ type, id: id || null, jobId: data && data.jobId, data });
    if (this._endsAtTerminal && TERMINAL.has(type)) this.close();
  }

  _report(error) {
    if (this._onError) this._onError(error);
  }

  _connect() {
    if (this.closed) return;
    if (this.token) this._fetchStream();
    else this._eventSource();
  }

  _retryLater(error) {
    if (this.closed) return;
    const refresh = this.token ? this._refreshToken : this._refreshUrl;
    if (error && error.status === 401 && refresh && !this._refreshed) {
      this._refresh(error);
      return;
    }
    if (error && !error.retryable) {
      this.close();
      this._report(error);
      return;
    }
    if (error) this._report(error);
    this._failures += 1;
    this._timer = setTimeout(() => this._connect(), backoff(this._failures));
  }

  // The credential expired (or was refused): ask the page for a fresh one, once until the stream opens
  // again (a fresh one refused too stops the watch), and resume after the last event.
  async _refresh(error) {
    this._refreshed = true;
    let fresh = null;
    try {
      fresh = this.token ? await this._refreshToken() : await this._refreshUrl();
    } catch (err) {
      const why = `${error.message}; refreshing it failed: ${err && err.message}`;
      error = new DocjobsError(401, error.code, why, error.field);
    }
    if (this.closed) return;
    if (!fresh) {
      this.close();
      this._report(error);
      return;
    }
    if (this.token) this.token = fresh;
    else this.url = resolveUrl(this._gateway, fresh);
    this._connect();
  }

  _eventSource() {
    const source = new EventSource(withLastEventId(this.url, this.lastEventId));
    this._source = source;
    source.onopen = () => {
      this._refreshed = false;
      if (this._onOpen) this._onOpen();
    };
    for (const name of EVENT_NAMES) {
      source.addEventListener(name, (e) => {
        if (name === "error" && e.data === undefined) return; // a connection error, handled below
        this._emit(name, e.lastEventId, parseData(e.data));
      });
    }
    source.addEventListener("error", (e) => {
      if (e.data !== undefined || source.readyState !== EventSource.CLOSED || this.closed) return;
      // EventSource gave up (an HTTP error, not a network one): ask once what the gateway says, so that
      // an answer that will not change stops here and the others are retried with backoff.
      source.close();
      this._probe().then((error) => this._retryLater(error));
    });
  }

  async _probe() {
    const abort = new AbortController();
    this._abort = abort;
    try {
      const response = await fetch(withLastEventId(this.url, this.lastEventId),
        { headers: { Accept: "text/event-stream" }, signal: abort.signal, cache: "no-store" });
      if (!response.ok) return await errorOf(response);
      return null; // open again now: it works (the failure was a passing one)
    } catch (err) {
      return new DocjobsError(0, "network", `the gateway could not be reached: ${err && err.message}`);
    } finally {
      abort.abort(); // the probe's own stream, if it opened one, ends here
      if (this._abort === abort) this._abort = null;
    }
  }

  async _fetchStream() {
    const abort = new AbortController();
    this._abort = abort;
    const headers = { Accept: "text/event-stream", Authorization: "Bearer " + this.token };
    let retryMs = DEFAULT_RETRY_MS;
    let error = null;
    try {
      const response = await fetch(withLastEventId(this.url, this.lastEventId),
        { headers, signal: abort.signal, cache: "no-store" });
      if (!response.ok) {
        error = await errorOf(response);
      } else {
        this._refreshed = false;
        if (this._onOpen) this._onOpen();
        this._failures = 0;
        for await (const field of sseFields(response.body)) {
          if (this.closed) return;
          if (field.retry !== undefined) retryMs = field.retry;
          else this._emit(field.event, field.id, parseData(field.data));
          if (this.closed) return;
        }
      }
    } catch (err) {
      if (this.closed) return;
      error = new DocjobsError(0, "network", `the stream was interrupted: ${err && err.message}`);
    } finally {
      if (this._abort === abort) this._abort = null;
    }
    if (this.closed) return;
    if (error) {
      this._retryLater(error);
    } else {
      // The stream ended without an error (a gateway restart): reconnect as EventSource would.
      this._timer = setTimeout(() => this._connect(), retryMs);
    }
  }
}

// The fields of a text/event-stream body, as EventSource parses them: {event, id, data} per event, and
// {retry} for a retry hint.
async function* sseFields(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data = [];
  let id = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).replace(/\r$/, "");
        buffer = buffer.slice(end + 1);
        if (line === "") {
          if (data.length) yield { event, id, data: data.join("\n") };
          event = "message";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // a heartbeat
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (name === "event") event = value;
        else if (name === "data") data.push(value);
        else if (name === "id") id = value;
        else if (name === "retry" && /^\d+$/.test(value)) yield { retry: Number(value) };
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** Follow one job until its terminal event (job-complete or job-failed). Either `eventsUrl` (the signed
 * URL from the POST answer, read with EventSource) or `jobId` and a bearer `token`. When the URL's token
 * (or the bearer token) expires, `refreshUrl()` (or `refreshToken()`), if given, resolves to a fresh one
 * (the job's eventsUrl from GET /api/jobs/{jobId}, asked by the page's backend, say). */
export function watchJob(options, handlers = {}) {
  const { gateway = "", eventsUrl, jobId, token, lastEventId, refreshUrl, refreshToken } = options;
  let url;
  if (eventsUrl) url = resolveUrl(gateway, eventsUrl);
  else if (jobId && token) url = apiUrl(gateway, `/api/jobs/${encodeURIComponent(jobId)}/events`);
  else throw new TypeError("watchJob: give eventsUrl, or jobId and token");
  return new EventStreamWatch(url, { gateway, token: eventsUrl ? null : token, refreshUrl, refreshToken, lastEventId,
    endsAtTerminal: true, ...handlers });
}

/** Follow every job of a chat session (or all of the user's jobs), jobs created later included, over one
 * stream. Either `sessionEventsUrl` (signed, from the POST answer) or a bearer `token` (a user's; a
 * service token also names `userId`) with an optional `sessionId`; `refreshUrl()` (a fresh
 * sessionEventsUrl: GET /api/events/url) or `refreshToken()` when it expires. Keeps each job's events,
 * so that a <docjobs-job> attached later (element.session = watch) shows what already happened. */
export function watchSession(options, handlers = {}) {
  return new SessionWatch(options, handlers);
}

const EVENTS_KEPT_PER_JOB = 64;

class SessionWatch {
  constructor(options, handlers) {
    const { gateway = "", sessionEventsUrl, token, sessionId, userId, lastEventId, refreshUrl, refreshToken } = options;
    let url;
    if (sessionEventsUrl) {
      url = resolveUrl(gateway, sessionEventsUrl);
    } else if (token) {
      const u = new URL(apiUrl(gateway, "/api/events"));
      if (sessionId) u.searchParams.set("sessionId", sessionId);
      if (userId !== undefined && userId !== null) u.searchParams.set("userId", String(userId));
      url = u.href;
    } else {
      throw new TypeError("watchSession: give sessionEventsUrl, or a token");
    }
    this.gateway = gateway;
    this._handlers = handlers;
    this._jobs = new Map(); // jobId -> its events so far (the last EVENTS_KEPT_PER_JOB)
    this._listeners = new Map(); // jobId -> Set of functions
    this._stream = new EventStreamWatch(url, {
      gateway,
      token: sessionEventsUrl ? null : token,
      refreshUrl,
      refreshToken,
      lastEventId,
      endsAtTerminal: false,
      onOpen: handlers.onOpen,
      onError: handlers.onError,
      onEvent: (event) => this._dispatch(event),
    });
  }

  get lastEventId() {
    return this._stream.lastEventId;
  }

  get closed() {
    return this._stream.closed;
  }

  /** The ids of the jobs seen so far, in the order they first appeared. */
  jobs() {
    return [...this._jobs.keys()];
  }

  /** Call listener with each event of one job: those already seen, then live ones. Returns the
   * function that unsubscribes. */
  subscribe(jobId, listener) {
    for (const event of this._jobs.get(jobId) || []) listener(event);
    if (!this._listeners.has(jobId)) this._listeners.set(jobId, new Set());
    this._listeners.get(jobId).add(listener);
    return () => {
      const set = this._listeners.get(jobId);
      if (set) set.delete(listener);
    };
  }

  close() {
    this._stream.close();
  }

  _dispatch(event) {
    if (!event.jobId) return;
    let events = this._jobs.get(event.jobId);
    const isNew = !events;
    if (isNew) {
      events = [];
      this._jobs.set(event.jobId, events);
    }
    events.push(event);
    if (events.length > EVENTS_KEPT_PER_JOB) events.splice(0, events.length - EVENTS_KEPT_PER_JOB);
    if (isNew && this._handlers.onJob) this._handlers.onJob(event.jobId, event);
    if (this._handlers.onEvent) this._handlers.onEvent(event);
    for (const listener of this._listeners.get(event.jobId) || []) listener(event);
  }
}

// ---- <docjobs-job> ----

const STYLE = `
:host { display: block; font: inherit; color: inherit; }
.status { font-weight: 600; text-transform: capitalize; }
.status.completed { color: #1d6b3a; } .status.failed, .status.cancelled { color: #a12a2a; }
.bar { height: 8px; background: #e8edf2; border-radius: 4px; overflow: hidden; margin: 8px 0; }
.bar > div { height: 100%; width: 0; background: #1f4e78; transition: width .2s; }
.error { color: #a12a2a; white-space: pre-wrap; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
td, th { border: 1px solid #d7dee6; padding: 3px 7px; text-align: left; }
th { background: #eef3f8; }
.download { display: inline-block; margin-top: 10px; font-weight: 600; color: #1f4e78; }
[hidden] { display: none !important; }
`;

function el(tag, attrs = {}, textContent) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (textContent !== undefined) node.textContent = textContent;
  return node;
}

/** The preview of a finished document as DOM nodes (text only: nothing in it is markup). */
export function renderPreview(preview) {
  const nodes = [];
  if (!preview) return nodes;
  if (preview.kind === "spreadsheet") {
    for (const sheet of preview.sheets || []) {
      nodes.push(el("div", {}, `Sheet: ${sheet.name}`));
      const table = el("table");
      (sheet.rows || []).forEach((row, i) => {
        const tr = el("tr");
        row.forEach((cell) => tr.append(el(i === 0 ? "th" : "td", {}, cell)));
        table.append(tr);
      });
      nodes.push(table);
    }
  } else if (preview.kind === "document") {
    const list = el("ul");
    (preview.headings || []).forEach((h) => list.append(el("li", {}, h)));
    nodes.push(el("div", {}, "Headings:"), list);
    (preview.paragraphs || []).forEach((p) => nodes.push(el("p", {}, p)));
  } else if (preview.kind === "pdf") {
    nodes.push(el("div", {}, `${preview.pages} page(s)`), el("p", {}, preview.firstPageText || ""));
  } else if (preview.kind === "presentation") {
    const list = el("ol");
    (preview.titles || []).forEach((t) => list.append(el("li", {}, t)));
    nodes.push(el("div", {}, `${preview.slides} slide(s)`), list);
  }
  return nodes;
}

const Base = typeof HTMLElement === "undefined" ? class {} : HTMLElement;

/** <docjobs-job gateway="https://docjobs.example.com" job-id="..." events-url="...">: one job's status,
 * progress, preview and download link, live. It follows `events-url` (the job's signed eventsUrl);
 * without it, the job `job-id` through `element.session` (a watchSession) or with `element.token` (a
 * bearer token). `element.refreshUrl` (or `refreshToken`), an async function, gives a fresh eventsUrl
 * (or token) when the one it follows expires. Styled through its parts: status, message, bar, progress,
 * error, preview, download.
 * Dispatches `docjobs-event` (detail: the event) for each event and `docjobs-error` (detail: the
 * DocjobsError); both bubble out of the shadow root. */
export class DocjobsJob extends Base {
  static get observedAttributes() {
    return ["gateway", "job-id", "events-url"];
  }

  constructor() {
    super();
    this.status = null;
    this.progress = 0;
    this.result = null;
    this.error = null;
    this._token = null;
    this._session = null;
    this.refreshUrl = null;
    this.refreshToken = null;
    this._follow = null; // the close or unsubscribe function of what is followed now
    this._restartQueued = false;
    const root = this.attachShadow({ mode: "open" });
    const style = el("style", {}, STYLE);
    this._line = el("div", { part: "line" });
    this._status = el("span", { part: "status", class: "status" }, "waiting");
    this._message = el("span", { part: "message" });
    this._line.append(this._status, " ", this._message);
    const bar = el("div", { part: "bar", class: "bar" });
    this._bar = el("div", { part: "progress" });
    bar.append(this._bar);
    this._error = el("div", { part: "error", class: "error" });
    this._preview = el("div", { part: "preview" });
    this._download = el("a", { part: "download", class: "download", hidden: "" });
    root.append(style, this._line, bar, this._error, this._preview, this._download);
  }

  get token() {
    return this._token;
  }

  set token(value) {
    this._token = value || null;
    this._scheduleRestart();
  }

  get session() {
    return this._session;
  }

  set session(value) {
    this._session = value || null;
    this._scheduleRestart();
  }

  get gateway() {
    return this.getAttribute("gateway") || "";
  }

  get jobId() {
    return this.getAttribute("job-id");
  }

  connectedCallback() {
    this._scheduleRestart();
  }

  disconnectedCallback() {
    this._stop();
  }

  attributeChangedCallback(name, oldValue, newValue) {
    if (oldValue !== newValue) this._scheduleRestart();
  }

  // Setting job-id, then events-url, then session, in one task follows the job once, not three times.
  _scheduleRestart() {
    if (this._restartQueued) return;
    this._restartQueued = true;
    queueMicrotask(() => {
      this._restartQueued = false;
      this._restart();
    });
  }

  _stop() {
    if (this._follow) this._follow();
    this._follow = null;
  }

  _restart() {
    this._stop();
    if (!this.isConnected) return;
    this._reset();
    const eventsUrl = this.getAttribute("events-url");
    const handlers = { onEvent: (e) => this._show(e), onError: (err) => this._fail(err) };
    if (this._session && this.jobId && !eventsUrl) {
      this._follow = this._session.subscribe(this.jobId, handlers.onEvent);
    } else if (eventsUrl || (this.jobId && this._token)) {
      // Read when needed: a refresh function set after the element started is used too.
      const refreshUrl = () => (this.refreshUrl ? this.refreshUrl() : null);
      const refreshToken = () => (this.refreshToken ? this.refreshToken() : null);
      const watch = watchJob({ gateway: this.gateway, eventsUrl, jobId: this.jobId, token: this._token, refreshUrl,
        refreshToken }, handlers);
      this._follow = () => watch.close();
    }
  }

  _reset() {
    this.status = null;
    this.progress = 0;
    this.result = null;
    this.error = null;
    this._setStatus("waiting", "");
    this._bar.style.width = "0";
    this._error.textContent = "";
    this._preview.replaceChildren();
    this._download.hidden = true;
    this._download.removeAttribute("href");
  }

  _setStatus(status, message) {
    this._status.textContent = status;
    this._status.className = `status ${status}`;
    this._message.textContent = message ? `(${message})` : "";
  }

  _show(event) {
    const data = event.data || {};
    if (event.type === "status") {
      this.status = data.status;
      this._setStatus(data.status, data.lastError ? `retrying after: ${data.lastError.message}` : data.message);
    } else if (event.type === "progress") {
      this.status = "processing";
      this.progress = data.progress;
      this._bar.style.width = `${data.progress}%`;
      this._setStatus("processing", `${data.progress}% ${data.message || ""}`.trim());
    } else if (event.type === "job-complete") {
      const result = data.result || {};
      this.status = "completed";
      this.progress = 100;
      this.result = { ...result, downloadUrl: result.downloadUrl ? resolveUrl(this.gateway, result.downloadUrl) : null };
      this._bar.style.width = "100%";
      this._setStatus("completed", "");
      this._preview.replaceChildren(...renderPreview(result.preview));
      // A thumbnail the job asked for (renditions: ["thumbnail"]): the first page as the page looks.
      const thumbnail = result.renditions && result.renditions.thumbnail;
      if (thumbnail && thumbnail.url) {
        const img = el("img", { part: "thumbnail", alt: "First page of the document", width: "400" });
        img.src = resolveUrl(this.gateway, thumbnail.url);
        img.style.maxWidth = "100%";
        img.style.height = "auto";
        this._preview.prepend(img);
      }
      if (this.result.downloadUrl) {
        this._download.href = this.result.downloadUrl;
        if (result.filename) this._download.setAttribute("download", result.filename);
        const size = typeof result.size === "number" ? ` (${Math.ceil(result.size / 1024)} KB)` : "";
        this._download.textContent = `Download ${result.filename || "document"}${size}`;
        this._download.hidden = false;
      }
    } else if (event.type === "job-failed") {
      this.status = data.status || "failed";
      this.error = data.error || null;
      this._setStatus(this.status, "");
      this._error.textContent = data.error ? `${data.error.code}: ${data.error.message}` : "failed";
    }
    this.dispatchEvent(new CustomEvent("docjobs-event", { detail: event, bubbles: true, composed: true }));
  }

  _fail(error) {
    this._error.textContent = error.field ? `${error.status} (${error.field}): ${error.message}` : error.message;
    this.dispatchEvent(new CustomEvent("docjobs-error", { detail: error, bubbles: true, composed: true }));
  }
}

if (typeof customElements !== "undefined" && !customElements.get("docjobs-job")) {
  customElements.define("docjobs-job", DocjobsJob);
}
