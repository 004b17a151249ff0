// The daemon's web page: sign in with a token, manage sandboxes, open a
// terminal. Plain ES modules, no build step: xterm.js and its fit addon
// are the npm packages' own module files, served by the daemon.
//
// The terminal speaks the Cloudflare-style protocol of
// /v1/sandboxes/:id/ws/terminal: binary frames are raw PTY bytes both ways,
// text frames are JSON control messages; nothing is sent before "ready".
import { Terminal } from "/xterm.mjs";
import { FitAddon } from "/addon-fit.mjs";

const TOKEN_KEY = "pocketenv.token";
const $ = (id) => document.getElementById(id);

let token = localStorage.getItem(TOKEN_KEY);
let profile = null;
let pollTimer = null;
let term = null; // {sandbox, xterm, fit, ws, ready, observer}

function say(text, info = false) {
  $("message").textContent = text || "";
  $("message").className = info ? "info" : "";
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.name = (body && body.error) || "Error";
  }
}

async function xrpc(nsid, { params, body, procedure = body !== undefined } = {}) {
  const q = params ? "?" + new URLSearchParams(params) : "";
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`/xrpc/${nsid}${q}`, {
    method: procedure ? "POST" : "GET",
    headers,
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text };
  }
  if (!r.ok) {
    if (r.status === 401) signOut("The daemon refused the token: sign in again.");
    throw new ApiError(r.status, data);
  }
  return data;
}

// ---- sign in -------------------------------------------------------------

async function signIn(t) {
  token = t;
  try {
    profile = await xrpc("io.pocketenv.actor.getProfile");
  } catch (e) {
    // 401: xrpc has signed out. Anything else (the daemon restarting, a
    // network error) keeps a stored token: the form is prefilled to retry.
    if (e.status !== 401) showSignIn(`Sign-in failed: ${e.message}`, t);
    return;
  }
  localStorage.setItem(TOKEN_KEY, t);
  $("who").textContent = profile.handle ? `${profile.handle} (${profile.did})` : profile.did;
  $("signin").hidden = true;
  $("signout").hidden = false;
  $("sandboxes").hidden = false;
  say("");
  loadImages();
  await refresh();
}

// The images a sandbox can start from (the template catalog), offered as
// suggestions; any other image name can still be typed.
async function loadImages() {
  let out;
  try {
    out = await xrpc("io.pocketenv.sandbox.getSandboxes", { params: { limit: 100 } });
  } catch {
    return; // suggestions only
  }
  $("images").replaceChildren(
    ...(out.sandboxes || []).map((t) => {
      const o = document.createElement("option");
      o.value = t.name;
      if (t.description) o.label = t.description;
      return o;
    }),
  );
}

function signOut(why) {
  localStorage.removeItem(TOKEN_KEY);
  showSignIn(why, "");
}

// The sign-in form; value prefills the token field.
function showSignIn(why, value) {
  closeTerminal();
  clearTimeout(pollTimer);
  token = null;
  profile = null;
  $("who").textContent = "";
  $("signout").hidden = true;
  $("sandboxes").hidden = true;
  $("signin").hidden = false;
  $("token").value = value;
  say(why || "");
}

// ---- sandboxes -----------------------------------------------------------

const TRANSIENT = new Set(["INITIALIZING", "STARTING", "STOPPING"]);

async function refresh() {
  clearTimeout(pollTimer);
  if (!profile) return;
  let out;
  try {
    out = await xrpc("io.pocketenv.actor.getActorSandboxes", {
      params: { did: profile.did, limit: 100 },
    });
  } catch (e) {
    say(`Listing sandboxes failed: ${e.message}`);
    return;
  }
  render(out.sandboxes || []);
  // Follow sandboxes that are on their way somewhere; otherwise the list
  // changes only through this page's own buttons.
  if ((out.sandboxes || []).some((s) => TRANSIENT.has(s.status)))
    pollTimer = setTimeout(refresh, 1000);
}

function button(label, onclick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onclick);
  return b;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (cls) td.className = cls;
  return td;
}

// Where the sandbox really runs (the daemon's backend), and the provider
// name its client asked for, which upstream's clients go by.
function runsOn(sb) {
  const td = cell(sb.backend || "", "backend");
  if (sb.provider) {
    td.title = `provider ${sb.provider}`;
    const p = document.createElement("span");
    p.className = "provider";
    p.textContent = ` (as ${sb.provider})`;
    td.append(p);
  }
  return td;
}

function render(list) {
  const body = $("list");
  body.replaceChildren();
  $("empty").hidden = list.length > 0;
  for (const sb of list) {
    const tr = document.createElement("tr");
    tr.dataset.id = sb.id;
    tr.dataset.name = sb.name;
    tr.dataset.status = sb.status;
    tr.append(
      cell(sb.name, "name"),
      cell(sb.status, `status status-${sb.status}`),
      cell(sb.baseSandbox || sb.base || ""),
      runsOn(sb),
      cell(sb.createdAt ? new Date(sb.createdAt).toLocaleString() : ""),
    );
    const actions = cell("", "actions");
    if (sb.status === "RUNNING") {
      actions.append(
        button("Terminal", () =>
          openTerminal(sb).catch((e) => {
            closeTerminal();
            say(`Terminal failed: ${e.message}`);
          }),
        ),
      );
      actions.append(button("Stop", () => act("stopSandbox", sb)));
    } else if (sb.status === "STOPPED" || sb.status === "FAILED") {
      actions.append(button("Start", () => act("startSandbox", sb, {})));
    }
    actions.append(
      button("Delete", () => {
        if (confirm(`Delete sandbox ${sb.name}? Its files are lost.`)) act("deleteSandbox", sb);
      }),
    );
    tr.append(actions);
    body.append(tr);
  }
}

async function act(method, sb, body) {
  const verb = { startSandbox: "Starting", stopSandbox: "Stopping", deleteSandbox: "Deleting" }[method];
  say(`${verb} ${sb.name}…`, true);
  if (method !== "startSandbox" && term && term.sandbox.id === sb.id) closeTerminal();
  try {
    await xrpc(`io.pocketenv.sandbox.${method}`, {
      params: { id: sb.id },
      body,
      procedure: true,
    });
    say("");
  } catch (e) {
    say(`${verb} ${sb.name} failed: ${e.message}`);
  }
  await refresh();
}

async function create(ev) {
  ev.preventDefault();
  const body = { base: $("create-base").value.trim() };
  const name = $("create-name").value.trim();
  if (name) body.name = name;
  say(`Creating ${name || "a sandbox"}…`, true);
  try {
    const sb = await xrpc("io.pocketenv.sandbox.createSandbox", { body });
    $("create-name").value = "";
    say(`Created ${sb.name}.`, true);
  } catch (e) {
    say(`Create failed: ${e.message}`);
  }
  await refresh();
}

// ---- terminal ------------------------------------------------------------

// One session per sandbox per tab: a reload re-attaches to the same shell
// (and gets its recent screen back); another tab gets a shell of its own.
function sessionFor(id) {
  const key = `pocketenv.session.${id}`;
  let s = sessionStorage.getItem(key);
  if (!s) {
    // getRandomValues, not randomUUID: the page may be served over plain
    // HTTP on a LAN address, which is not a secure context.
    s = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
    sessionStorage.setItem(key, s);
  }
  return s;
}

// The WebSocket authenticates with a short-lived terminal token (a browser
// cannot set headers on it): the API token never goes into a URL.
async function terminalToken() {
  const out = await xrpc("io.pocketenv.actor.getTerminalToken");
  if (!out || !out.token) throw new Error("no terminal token in the answer");
  return out.token;
}

function termState(text) {
  $("terminal-state").textContent = text;
}

async function openTerminal(sb) {
  closeTerminal();
  $("terminal-panel").hidden = false;
  $("terminal-title").textContent = `Terminal: ${sb.name}`;
  termState("connecting");
  const xterm = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000 });
  const fit = new FitAddon();
  xterm.loadAddon(fit);
  xterm.open($("terminal"));
  fit.fit();
  const t = (term = { sandbox: sb, xterm, fit, ws: null, ready: false, observer: null });

  const tok = await terminalToken();
  if (term !== t) return; // closed meanwhile
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams({ session: sessionFor(sb.id), t: tok });
  const ws = new WebSocket(`${proto}//${location.host}/v1/sandboxes/${encodeURIComponent(sb.id)}/ws/terminal?${q}`);
  ws.binaryType = "arraybuffer";
  t.ws = ws;
  const enc = new TextEncoder();

  const sendResize = () => {
    if (t.ready && ws.readyState === WebSocket.OPEN)
      ws.send(JSON.stringify({ type: "resize", cols: xterm.cols, rows: xterm.rows }));
  };
  const showSize = () => ($("terminal-size").textContent = `${xterm.cols}×${xterm.rows}`);
  showSize();
  xterm.onResize(() => {
    showSize();
    sendResize();
  });
  xterm.onData((d) => {
    if (t.ready && ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d));
  });
  xterm.onBinary((d) => {
    if (!t.ready || ws.readyState !== WebSocket.OPEN) return;
    const bytes = Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff);
    ws.send(bytes);
  });

  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") {
      xterm.write(new Uint8Array(ev.data));
      return;
    }
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg.type === "ready") {
      t.ready = true;
      termState("connected");
      sendResize();
      xterm.focus();
    } else if (msg.type === "error") {
      xterm.write(`\r\n\x1b[31m[error: ${msg.message || "unknown"}]\x1b[0m\r\n`);
    } else if (msg.type === "exit") {
      const how = msg.signal ? `signal ${msg.signal}` : `code ${msg.code}`;
      xterm.write(`\r\n\x1b[33m[shell exited with ${how}]\x1b[0m\r\n`);
      termState(`exited (${how})`);
    }
  };
  ws.onclose = (ev) => {
    t.ready = false;
    if (term === t && !$("terminal-state").textContent.startsWith("exited"))
      termState(`disconnected${ev.code ? ` (${ev.code}${ev.reason ? " " + ev.reason : ""})` : ""}`);
  };

  // The element follows the window (flex layout); the terminal follows it.
  let pending = false;
  t.observer = new ResizeObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      if (term === t) fit.fit();
    });
  });
  t.observer.observe($("terminal"));
}

function closeTerminal() {
  if (!term) return;
  const t = term;
  term = null;
  if (t.observer) t.observer.disconnect();
  if (t.ws) t.ws.close(1000, "closed");
  t.xterm.dispose();
  $("terminal").replaceChildren();
  $("terminal-panel").hidden = true;
  $("terminal-size").textContent = "";
  termState("");
}

// ---- start ---------------------------------------------------------------

$("signin-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = $("token").value.trim();
  if (t) signIn(t);
});
$("signout").addEventListener("click", () => signOut());
$("create-form").addEventListener("submit", create);
$("terminal-close").addEventListener("click", closeTerminal);

if (token) signIn(token);
else signOut();
