// The Vigil console: one page over the admin API.
//
// The token stays in sessionStorage (this tab only) and travels as an
// `Authorization: Bearer` header: never in a URL, never in a cookie. So the
// event stream and the screencast are read with fetch() and a small
// server-sent-events parser (EventSource cannot send headers).
//
// Every string from the server is rendered as text (textContent,
// createElement), never as HTML: a policy's reason or a page's title may
// hold markup.

const TOKEN_KEY = "vigil.token";
const STATES = ["starting", "restoring", "launching", "connected", "degraded", "needs-login", "stopped", "failed"];
const MAX_EVENTS = 100;

const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY);
let sessions = [];
let selected = null; // the session whose detail is open
let lastEventId = 0;
let streamAbort = null; // the event stream
let liveAbort = null; // the screencast
let refreshTimer = null;

// ------------------------------------------------------------ utilities

/**
 * Text as it may be shown: control characters and bidi overrides (which
 * would hide or reorder what follows them) become visible escapes.
 */
function visible(text) {
  return String(text).replace(
    /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u{${c.codePointAt(0).toString(16)}}`,
  );
}

/** An element with text and attributes; children appended in order. */
function el(tag, { text, cls, attrs } = {}, ...children) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = visible(text);
  if (cls) node.className = cls;
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) if (child) node.append(child);
  return node;
}

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let n = bytes;
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u += 1;
  }
  return `${n.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

function clock(iso) {
  const d = iso ? new Date(iso) : new Date();
  return d.toLocaleTimeString([], { hour12: false });
}

function baseName(path) {
  return String(path ?? "").split("/").pop();
}

/** Does the glob `pattern` (`*`, `?`) of a policy file match `id`? */
function globMatches(pattern, id) {
  const re = pattern.replace(/[.+^${}()|[\]\\-]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${re}$`).test(id);
}

function notice(text, isError = false) {
  const n = $("notice");
  n.textContent = text;
  n.classList.toggle("error", isError);
  n.hidden = false;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the API with the token; throws ApiError with the server's words. */
async function api(method, path, body, signal) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
    referrerPolicy: "no-referrer",
    signal,
  });
  if (!response.ok) {
    let code = "";
    let message = `${method} ${path}: HTTP ${response.status}`;
    try {
      const err = (await response.json()).error;
      code = err.code;
      message = err.message;
    } catch {
      // Not an API error body: keep the status line.
    }
    if (response.status === 401) signOut("The token was refused. Sign in again.");
    throw new ApiError(response.status, code, message);
  }
  return response;
}

async function getJson(path) {
  return (await api("GET", path)).json();
}

/**
 * Reads a server-sent-events body, calling `onEvent(name, data, id)` for
 * each message; resolves when the stream ends.
 */
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      let id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") name = val;
        else if (field === "data") data.push(val);
        else if (field === "id") id = val;
      }
      if (data.length > 0 || name !== "message") onEvent(name, data.join("\n"), id);
    }
  }
}

function confirmAction(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (answer) => {
      $("confirm-yes").removeEventListener("click", yes);
      $("confirm-no").removeEventListener("click", no);
      dialog.removeEventListener("cancel", no);
      dialog.close();
      resolve(answer);
    };
    const yes = (e) => {
      e.preventDefault();
      done(true);
    };
    const no = (e) => {
      e.preventDefault();
      done(false);
    };
    $("confirm-yes").addEventListener("click", yes);
    $("confirm-no").addEventListener("click", no);
    dialog.addEventListener("cancel", no);
    dialog.showModal();
  });
}

/** Runs an action after a confirmation; says how it went. */
async function act(question, working, work) {
  if (!(await confirmAction(question))) return;
  notice(working);
  try {
    const done = await work();
    notice(done);
  } catch (e) {
    notice(e.message, true);
  }
  scheduleRefresh();
}

// -------------------------------------------------------------- sign in

async function signIn(candidate) {
  token = candidate;
  const error = $("sign-in-error");
  error.hidden = true;
  try {
    const response = await fetch("/v1/sessions", {
      headers: { Authorization: `Bearer ${candidate}` },
      cache: "no-store",
      credentials: "omit",
    });
    if (response.status === 401) {
      token = null;
      error.textContent = "This token was refused: it is not the API token of this host.";
      error.hidden = false;
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
  } catch (e) {
    token = null;
    error.textContent = `Cannot reach the host: ${e.message}`;
    error.hidden = false;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  start();
}

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  stopStream();
  closeDetail();
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("stream-status").hidden = true;
  $("sign-in").hidden = false;
  $("token").value = "";
  const error = $("sign-in-error");
  error.hidden = !why;
  error.textContent = why || "";
}

async function start() {
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = false;
  await Promise.allSettled([refreshSessions(), refreshPolicies(), loadRecentEvents()]);
  startStream();
}

// ------------------------------------------------------------- sessions

function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refreshSessions();
    if (selected) refreshBackups(selected);
  }, 150);
}

async function refreshSessions() {
  try {
    sessions = (await getJson("/v1/sessions")).sessions;
  } catch (e) {
    if (token) notice(`Cannot list the sessions: ${e.message}`, true);
    return;
  }
  renderSessions();
}

function renderSessions() {
  const filter = $("state-filter").value;
  const body = $("sessions").tBodies[0];
  const shown = sessions.filter((s) => !filter || s.state === filter);
  body.replaceChildren(...shown.map(sessionRow));
  $("no-sessions").hidden = shown.length > 0;
  const counts = STATES.map((st) => [st, sessions.filter((s) => s.state === st).length]).filter(([, n]) => n > 0);
  $("host-summary").textContent = `${sessions.length} session${sessions.length === 1 ? "" : "s"}` +
    (counts.length ? `: ${counts.map(([st, n]) => `${n} ${st}`).join(", ")}` : "");
}

function sessionRow(s) {
  const row = el("tr", { attrs: { "data-session": s.id, "data-state": s.state } });
  if (s.id === selected) row.classList.add("selected");
  const state = el("span", { text: s.state, cls: `state state-${s.state}`, attrs: { title: s.reason || "" } });
  // A fleet names the host (and epoch) a session runs on; a single host does not.
  const host = s.owner ? `${s.owner.host}, epoch ${s.owner.epoch}` : "";
  const backup = s.last_backup ? `${ago(s.last_backup.at)} (${size(s.last_backup.size_bytes)})` : "never";
  const decision = s.last_decision ? `${s.last_decision.role}: ${s.last_decision.decision}` : "";
  const buttons = el("td", { cls: "actions" },
    button("Live", "live", () => openDetail(s.id)),
    button("Restart", "restart", () => act(
      `Restart the browser of session ${s.id}?`, `Restarting ${s.id}…`,
      async () => {
        await api("POST", `/v1/sessions/${encodeURIComponent(s.id)}/restart`);
        return `Session ${s.id} is restarting.`;
      })),
    button("Back up now", "backup", () => backUp(s.id)),
    button("Remove", "remove", () => act(
      `Remove session ${s.id}? Its browser closes; its backups stay in the store.`, `Removing ${s.id}…`,
      async () => {
        await api("DELETE", `/v1/sessions/${encodeURIComponent(s.id)}`);
        if (selected === s.id) closeDetail();
        return `Session ${s.id} was removed.`;
      }), "danger"));
  row.append(
    el("td", { text: s.id, attrs: { title: s.url } }),
    el("td", {}, state),
    el("td", { text: ago(s.since), attrs: { title: s.since } }),
    el("td", { text: host || "this host" }),
    el("td", { text: backup, cls: s.last_backup_error ? "error" : "", attrs: { title: s.last_backup_error || "" } }),
    el("td", { text: s.restarts_last_hour ?? "" }),
    el("td", { text: decision, cls: "decision" }),
    buttons,
  );
  return row;
}

function button(label, action, onClick, cls) {
  const b = el("button", { text: label, cls, attrs: { type: "button", "data-action": action } });
  b.addEventListener("click", onClick);
  return b;
}

function backUp(id) {
  return act(`Back up session ${id} now? In quiesce mode its browser closes for the copy.`, `Backing up ${id}…`,
    async () => {
      const made = await (await api("POST", `/v1/sessions/${encodeURIComponent(id)}/backups`)).json();
      if (selected === id) await refreshBackups(id);
      return `Backup ${made.id} of ${id} saved (${size(made.size_bytes)}).`;
    });
}

// --------------------------------------------------------------- detail

function openDetail(id) {
  closeDetail();
  selected = id;
  $("detail-id").textContent = id;
  $("detail").hidden = false;
  renderSessions();
  refreshBackups(id);
  watchLive(id);
  $("detail").scrollIntoView({ block: "nearest" });
}

function closeDetail() {
  stopLive();
  selected = null;
  $("detail").hidden = true;
  $("live-image").removeAttribute("src");
  $("backups").tBodies[0].replaceChildren();
  if (token) renderSessions();
}

async function refreshBackups(id) {
  let list;
  try {
    list = (await getJson(`/v1/sessions/${encodeURIComponent(id)}/backups`)).backups;
  } catch (e) {
    if (selected === id) notice(`Cannot list the backups of ${id}: ${e.message}`, true);
    return;
  }
  if (selected !== id) return;
  const rows = list.map((b) => {
    const verified = b.verified ? "yes" : `no${b.damaged ? `: ${b.damaged.reason ?? "damaged"}` : ""}`;
    const restore = button("Restore", "restore", () => act(
      `Replace the profile of ${id} with backup ${b.id} (${ago(b.created)})? What the session holds now is lost.`,
      `Restoring ${b.id}…`,
      async () => {
        const done = await (await api("POST", `/v1/sessions/${encodeURIComponent(id)}/restore`, { backup: b.id, force: true })).json();
        return `Session ${id} restored from ${done.backup}.`;
      }));
    restore.disabled = !b.verified;
    return el("tr", { attrs: { "data-backup": b.id } },
      el("td", { text: b.id }),
      el("td", { text: ago(b.created), attrs: { title: b.created } }),
      el("td", { text: size(b.size_bytes) }),
      el("td", { text: verified }),
      el("td", {}, restore));
  });
  $("backups").tBodies[0].replaceChildren(...rows);
  $("no-backups").hidden = rows.length > 0;
}

// ----------------------------------------------------------- live view

/** Shows the session's page until the detail closes or the tab hides. */
async function watchLive(id) {
  stopLive();
  const abort = new AbortController();
  liveAbort = abort;
  const status = $("live-status");
  status.textContent = "Connecting to the page…";
  while (!abort.signal.aborted && selected === id) {
    try {
      const response = await api("GET", `/v1/sessions/${encodeURIComponent(id)}/screencast`, undefined, abort.signal);
      status.textContent = "Live (about 2 frames a second while the page changes).";
      await readEvents(response, (name, data) => {
        if (name === "frame" && /^[A-Za-z0-9+/=]+$/.test(data)) {
          $("live-image").src = `data:image/jpeg;base64,${data}`;
        }
      });
      if (!abort.signal.aborted) status.textContent = "The browser closed; waiting for it to start again…";
    } catch (e) {
      if (abort.signal.aborted) return;
      status.textContent = `No picture: ${e.message}`;
    }
    await new Promise((r) => setTimeout(r, 1500));
  }
}

function stopLive() {
  if (liveAbort) liveAbort.abort();
  liveAbort = null;
}

// ------------------------------------------------------------- policies

async function refreshPolicies() {
  let status;
  try {
    status = await getJson("/v1/policies");
  } catch (e) {
    if (token) notice(`Cannot read the policy status: ${e.message}`, true);
    return;
  }
  $("policy-source").textContent = status.source;
  // Files are named inside the source folder; the full path is the title.
  const rel = (f) => (f.startsWith(`${status.source}/`) ? f.slice(status.source.length + 1) : f);
  const ids = sessions.map((s) => s.id);
  $("policies").tBodies[0].replaceChildren(...status.policies.map((p) => {
    const matching = ids.filter((id) => p.sessions.some((pat) => globMatches(pat, id)));
    const bound = `${p.sessions.join(", ")} → ${matching.length ? matching.join(", ") : "none now"}`;
    return el("tr", { attrs: { "data-file": p.file } },
      el("td", { text: rel(p.file), attrs: { title: p.file } }),
      el("td", { text: p.role }),
      el("td", { text: bound }),
      el("td", { text: p.priority }),
      el("td", { text: `${baseName(p.plugin)} (${p.sha256})`, attrs: { title: p.plugin } }));
  }));
  const errors = status.rejected.map((r) => el("li", {},
    el("span", { text: clock(new Date(r.at_ms).toISOString()), cls: "time" }),
    el("span", { text: `${rel(r.file)}: ${r.reason}`, cls: "error", attrs: { title: r.file } }),
    r.still_serving ? el("span", { text: ` (version ${r.still_serving} keeps serving)`, cls: "muted" }) : null));
  $("policy-errors").replaceChildren(...(errors.length ? errors : [el("li", { text: "none", cls: "muted" })]));
  const history = status.reload_history ?? (status.last_reload ? [status.last_reload] : []);
  const reloads = history.flatMap((r) => r.events.map((ev) => el("li", {},
    el("span", { text: clock(new Date(r.at_ms).toISOString()), cls: "time" }),
    el("span", { text: `${ev.kind} `, cls: "event-name" }),
    el("span", { text: ev.kind === "rejected" ? `${rel(ev.file)}: ${ev.reason}` : rel(ev.file), attrs: { title: ev.file } }))));
  $("reloads").replaceChildren(...(reloads.length ? reloads : [el("li", { text: "none yet", cls: "muted" })]));
}

// --------------------------------------------------------------- events

function describe(body) {
  const d = body.data || {};
  switch (body.event) {
    case "session.state_changed":
      return `${d.session}: ${d.from} → ${d.to}${d.reason ? ` (${d.reason})` : ""}`;
    case "session.needs_login":
      return `${d.session} needs a login${d.qr ? " (a QR code is shown)" : ""}`;
    case "policy.reloaded":
      return `${baseName(d.file)} serves with ${baseName(d.plugin)} (${d.plugin_sha256})`;
    case "policy.rejected":
      return `${baseName(d.file)} refused: ${d.reason}`;
    case "policy.removed":
      return `${baseName(d.file)} removed`;
    default: {
      const parts = Object.entries(d)
        .filter(([, v]) => v !== null && typeof v !== "object")
        .map(([k, v]) => `${k}=${v}`);
      return parts.join(" ");
    }
  }
}

function addEvent(body) {
  const list = $("events");
  const item = el("li", { attrs: { "data-event": body.event } },
    el("span", { text: clock(body.timestamp), cls: "time" }),
    el("span", { text: body.event, cls: "event-name" }),
    el("span", { text: describe(body) }));
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

async function loadRecentEvents() {
  try {
    const recent = await getJson("/v1/events/recent");
    $("events").replaceChildren();
    for (const body of recent.events.slice(-MAX_EVENTS)) addEvent(body);
    lastEventId = recent.last_id;
  } catch (e) {
    if (token) notice(`Cannot read the recent events: ${e.message}`, true);
  }
}

/** Follows /v1/events, resuming after the last event seen; reconnects. */
async function startStream() {
  stopStream();
  const abort = new AbortController();
  streamAbort = abort;
  const status = $("stream-status");
  status.hidden = false;
  while (!abort.signal.aborted && token) {
    try {
      const response = await api("GET", `/v1/events?after=${lastEventId}`, undefined, abort.signal);
      status.textContent = "live";
      await readEvents(response, (name, data, id) => {
        if (id) lastEventId = Number(id);
        if (name === "lagged") {
          scheduleRefresh();
          refreshPolicies();
          return;
        }
        let body;
        try {
          body = JSON.parse(data);
        } catch {
          return;
        }
        addEvent(body);
        if (name.startsWith("policy.")) refreshPolicies();
        else scheduleRefresh();
      });
    } catch (e) {
      if (abort.signal.aborted) return;
    }
    status.textContent = "reconnecting…";
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function stopStream() {
  if (streamAbort) streamAbort.abort();
  streamAbort = null;
}

// ------------------------------------------------------------ add form

function openAddDialog() {
  $("add-form").reset();
  $("add-error").hidden = true;
  $("add-dialog").showModal();
}

async function submitAdd(e) {
  e.preventDefault();
  const spec = { id: $("add-id").value.trim(), url: $("add-url").value.trim() };
  const probe = $("add-probe").value.trim();
  if (probe) spec.probe = { script: probe };
  const error = $("add-error");
  error.hidden = true;
  try {
    await api("POST", "/v1/sessions", spec);
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
    return;
  }
  $("add-dialog").close();
  notice(`Session ${spec.id} was added; its browser is starting.`);
  await refreshSessions();
  refreshPolicies();
}

// ---------------------------------------------------------------- wiring

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const candidate = $("token").value.trim();
    if (candidate) signIn(candidate);
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("state-filter").addEventListener("change", renderSessions);
  $("close-detail").addEventListener("click", closeDetail);
  $("add-session").addEventListener("click", openAddDialog);
  $("add-cancel").addEventListener("click", () => $("add-dialog").close());
  $("add-form").addEventListener("submit", submitAdd);
  // Nobody watches a hidden tab: the screencast stops, and comes back.
  document.addEventListener("visibilitychange", () => {
    if (!selected) return;
    if (document.hidden) stopLive();
    else watchLive(selected);
  });
  // Policy decisions are no events: read the table again now and then
  // (ages such as "12 s ago" move on too).
  setInterval(() => {
    if (token) refreshSessions();
  }, 5000);
  if (token) start();
  else signOut();
});
