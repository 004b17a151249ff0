// The daemon's web page: sign in with a token, manage sandboxes, and for
// each one a terminal and panes for its ports, variables, secrets, files,
// services and backups. Plain ES modules, no build step: xterm.js and its
// fit addon are the npm packages' own module files, served by the daemon.
// The page is an API client like any other: every action is a public XRPC
// method called with the user's token (api.js).
//
// Addresses (the part after #, so the daemon serves the same file):
//   #/                       the list
//   #/sandbox/ID/PANE        a sandbox, one pane (terminal, ports, ...)
//   #/terminal/ID            a sandbox's terminal alone, the whole window
//                            (what "Open in a new tab" opens)
// They carry sandbox ids only, never a token.
//
// Live status: the list is polled (getActorSandboxes) every POLL_MS while
// the tab is visible, every second while a sandbox is on its way
// somewhere, and not at all while the tab is hidden. Polling rather than
// a server-sent event stream: the API has no event method, a poll is one
// small indexed query on a daemon that is usually on loopback, and it
// keeps the page a plain client of the public API (no endpoint of its
// own, nothing to reconnect, works through any proxy).
import {
  xrpc,
  getToken,
  setToken,
  forgetToken,
  whenUnauthorized,
  handleLogin,
  handlePickup,
} from "/api.js";
import { attach } from "/term.js";
import { panes } from "/panes.js";
import { $, say, button, cell, link } from "/ui.js";

const POLL_MS = 3000;
const TRANSIENT = new Set(["INITIALIZING", "STARTING", "STOPPING"]);

let profile = null;
let pollTimer = null;
let polling = false;
let pollAgain = false;
let sandboxes = new Map(); // id -> view, as last listed
let route = { view: "list" }; // {view: "list"} | {view: "sandbox"|"solo", id, pane}
let shownPane = null;
let term = null; // {sandboxId, handle}
let termClosedByUser = false;

// ---- sign in -------------------------------------------------------------

async function signIn(t, keep) {
  setToken(t, false);
  try {
    profile = await xrpc("io.pocketenv.actor.getProfile");
  } catch (e) {
    // 401: signed out already (whenUnauthorized). Anything else (the
    // daemon restarting, a network error) keeps a stored token: the form
    // is prefilled to retry.
    if (e.status !== 401) showSignIn(`Sign-in failed: ${e.message}`, t);
    return;
  }
  setToken(t, keep);
  $("who").textContent = profile.handle ? `${profile.handle} (${profile.did})` : profile.did;
  $("signin").hidden = true;
  $("signout").hidden = false;
  say("");
  loadImages();
  await poll();
  showRoute();
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
  forgetToken();
  showSignIn(why, "");
}

// The sign-in form; value prefills the token field.
function showSignIn(why, value) {
  closeTerminal();
  hidePane();
  clearTimeout(pollTimer);
  profile = null;
  sandboxes = new Map();
  $("list").replaceChildren();
  $("who").textContent = "";
  $("live").textContent = "";
  $("signout").hidden = true;
  $("sandboxes").hidden = true;
  $("sandbox").hidden = true;
  $("signin").hidden = false;
  $("token").value = value;
  document.body.classList.remove("solo");
  say(why || "");
}

// ---- live list -----------------------------------------------------------

// One poll at a time; a poll asked for during another (an action's, say)
// runs right after it, so what the action changed is seen at once.
async function poll() {
  clearTimeout(pollTimer);
  if (!profile) return;
  if (polling) {
    pollAgain = true;
    return;
  }
  polling = true;
  pollAgain = false;
  let out;
  try {
    out = await xrpc("io.pocketenv.actor.getActorSandboxes", {
      params: { did: profile.did, limit: 100 },
    });
    $("live").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("live").className = "";
  } catch (e) {
    $("live").textContent = `not updated: ${e.message}`;
    $("live").className = "stale";
  } finally {
    polling = false;
  }
  if (!profile) return;
  if (out) {
    sandboxes = new Map((out.sandboxes || []).map((s) => [s.id, s]));
    renderList();
    renderSandbox();
  }
  if (pollAgain) return poll();
  schedule();
}

function schedule() {
  clearTimeout(pollTimer);
  if (!profile || document.hidden) return;
  const busy = [...sandboxes.values()].some((s) => TRANSIENT.has(s.status));
  pollTimer = setTimeout(poll, busy ? 1000 : POLL_MS);
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) poll();
  else clearTimeout(pollTimer);
});

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

// Status, and why when it FAILED (the daemon's statusReason).
function statusCell(sb) {
  const td = cell(sb.status, `status status-${sb.status}`);
  if (sb.statusReason) {
    const r = document.createElement("div");
    r.className = "reason";
    r.textContent = sb.statusReason;
    td.append(r);
  }
  return td;
}

const paneUrl = (sb, pane) => `#/sandbox/${encodeURIComponent(sb.id)}/${pane}`;

function actionButtons(sb) {
  const out = [];
  if (sb.status === "RUNNING") out.push(button("Stop", () => act("stopSandbox", sb)));
  else if (sb.status === "STOPPED" || sb.status === "FAILED")
    out.push(button("Start", () => act("startSandbox", sb, {})));
  out.push(
    button("Delete", () => {
      if (confirm(`Delete sandbox ${sb.name}? Its files are lost.`)) act("deleteSandbox", sb);
    }),
  );
  return out;
}

// What a row shows; a row is rebuilt only when this changes, so a poll
// does not disturb a row under the pointer.
const rowKey = (sb) =>
  JSON.stringify([sb.name, sb.status, sb.statusReason, sb.baseSandbox, sb.backend, sb.provider, sb.createdAt]);

function row(sb) {
  const tr = document.createElement("tr");
  tr.dataset.id = sb.id;
  tr.dataset.name = sb.name;
  tr.dataset.status = sb.status;
  tr.dataset.key = rowKey(sb);
  const name = cell("", "name");
  name.append(link(sb.name, paneUrl(sb, "terminal")));
  tr.append(
    name,
    statusCell(sb),
    cell(sb.baseSandbox || sb.base || ""),
    runsOn(sb),
    cell(sb.createdAt ? new Date(sb.createdAt).toLocaleString() : ""),
  );
  const actions = cell("", "actions");
  if (sb.status === "RUNNING") actions.append(link("Terminal", paneUrl(sb, "terminal"), "button"));
  actions.append(link("Details", paneUrl(sb, "ports"), "button"), ...actionButtons(sb));
  tr.append(actions);
  return tr;
}

function renderList() {
  const body = $("list");
  const old = new Map([...body.children].map((tr) => [tr.dataset.id, tr]));
  const rows = [];
  for (const sb of sandboxes.values()) {
    const tr = old.get(sb.id);
    rows.push(tr && tr.dataset.key === rowKey(sb) ? tr : row(sb));
  }
  // Reorder only when something changed: replaceChildren would move
  // every row and lose a pending click.
  if (rows.length !== body.children.length || rows.some((tr, i) => body.children[i] !== tr))
    body.replaceChildren(...rows);
  $("empty").hidden = sandboxes.size > 0;
}

async function act(method, sb, body) {
  const verb = { startSandbox: "Starting", stopSandbox: "Stopping", deleteSandbox: "Deleting" }[method];
  say(`${verb} ${sb.name}…`, true);
  if (method !== "startSandbox" && term && term.sandboxId === sb.id) closeTerminal();
  try {
    await xrpc(`io.pocketenv.sandbox.${method}`, { params: { id: sb.id }, body, procedure: true });
    say("");
  } catch (e) {
    say(`${verb} ${sb.name} failed: ${e.message}`);
  }
  await poll();
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
  await poll();
}

// ---- routes --------------------------------------------------------------

function parseRoute() {
  let parts;
  try {
    parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  } catch {
    return { view: "list" }; // a malformed %-escape
  }
  if (parts[0] === "sandbox" && parts[1])
    return { view: "sandbox", id: parts[1], pane: panes[parts[2]] || parts[2] === "terminal" ? parts[2] : "terminal" };
  if (parts[0] === "terminal" && parts[1]) return { view: "solo", id: parts[1], pane: "terminal" };
  return { view: "list" };
}

function showRoute() {
  const next = parseRoute();
  if (next.id !== route.id || next.view !== route.view) {
    closeTerminal();
    termClosedByUser = false;
  }
  route = next;
  if (!profile) return;
  document.body.classList.toggle("solo", route.view === "solo");
  $("sandboxes").hidden = route.view !== "list";
  $("sandbox").hidden = route.view === "list";
  if (route.view === "list") {
    hidePane();
    document.title = "Pocketenv";
    return;
  }
  renderSandbox();
}

window.addEventListener("hashchange", showRoute);

// ---- one sandbox ---------------------------------------------------------

function renderSandbox() {
  if (route.view === "list" || !profile) return;
  const sb = sandboxes.get(route.id);
  if (!sb) {
    say(`No sandbox ${route.id} (deleted?).`);
    hidePane();
    closeTerminal();
    $("sb-name").textContent = route.id;
    $("sb-status").textContent = "";
    $("sb-reason").textContent = "";
    $("sb-actions").replaceChildren();
    return;
  }
  document.title = route.view === "solo" ? `${sb.name}: terminal` : `${sb.name}: Pocketenv`;
  $("sb-name").textContent = sb.name;
  $("sb-status").textContent = sb.status;
  $("sb-status").className = `status status-${sb.status}`;
  $("sandbox").dataset.status = sb.status;
  $("sb-reason").textContent = sb.statusReason || "";
  if ($("sb-actions").dataset.key !== rowKey(sb)) {
    $("sb-actions").dataset.key = rowKey(sb);
    $("sb-actions").replaceChildren(...actionButtons(sb));
  }
  for (const a of $("tabs").children) {
    a.href = paneUrl(sb, a.dataset.pane);
    a.classList.toggle("current", a.dataset.pane === route.pane);
  }
  $("terminal-newtab").href = `#/terminal/${encodeURIComponent(sb.id)}`;
  showPane(sb);
}

function showPane(sb) {
  for (const el of document.querySelectorAll(".pane")) el.hidden = el.id !== `pane-${route.pane}`;
  if (route.pane === "terminal") {
    hidePane();
    terminalPane(sb);
    return;
  }
  if (shownPane && shownPane.name === route.pane && shownPane.id === sb.id) {
    shownPane.pane.update?.(sb);
    return;
  }
  hidePane();
  shownPane = { name: route.pane, id: sb.id, pane: panes[route.pane] };
  shownPane.pane.show(sb);
}

function hidePane() {
  if (shownPane) shownPane.pane.hide?.();
  shownPane = null;
}

// ---- the terminal pane ---------------------------------------------------

function termState(text) {
  $("terminal-state").textContent = text;
}

function terminalPane(sb) {
  const running = sb.status === "RUNNING";
  $("terminal-off").hidden = running && !termClosedByUser;
  $("terminal-open").hidden = !running || !termClosedByUser;
  $("terminal-close").hidden = !term;
  if (!running) {
    closeTerminal();
    $("terminal-off").textContent = `${sb.name} is ${sb.status}: start it for a terminal.`;
    return;
  }
  if (termClosedByUser) {
    $("terminal-off").textContent = "Terminal closed; its shell goes on for a while.";
    return;
  }
  if (!term) openTerminal(sb);
}

function openTerminal(sb) {
  const t = { sandboxId: sb.id, handle: null };
  term = t;
  $("terminal").hidden = false;
  $("terminal-close").hidden = false;
  attach($("terminal"), sb, {
    state: (s) => term === t && termState(s),
    size: (c, r) => term === t && ($("terminal-size").textContent = `${c}×${r}`),
  }).then(
    (h) => {
      if (term === t) t.handle = h;
      else h.close();
    },
    (e) => {
      if (term !== t) return;
      closeTerminal();
      say(`Terminal failed: ${e.message}`);
    },
  );
}

function closeTerminal() {
  if (!term) return;
  const t = term;
  term = null;
  if (t.handle) t.handle.close();
  $("terminal").replaceChildren();
  $("terminal").hidden = true;
  $("terminal-size").textContent = "";
  $("terminal-close").hidden = true;
  termState("");
}

// Sign in with a handle: the PDS's page in a new window (where the user
// signs in), this page waiting for the daemon to hand over the token.
async function signInWithHandle(handle) {
  const status = $("handle-status");
  let started;
  try {
    started = await handleLogin(handle);
  } catch (e) {
    status.textContent = `Sign-in failed: ${e.message}`;
    return;
  }
  const win = window.open(started.url, "_blank");
  status.textContent = win
    ? `Sign in as ${handle} in the window that opened.`
    : `Open this address to sign in as ${handle}: ${started.url}`;
  const deadline = Date.now() + (started.expiresIn || 600) * 1000;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 1000));
    let got;
    try {
      got = await handlePickup(started.pickup);
    } catch (e) {
      status.textContent = `Sign-in failed: ${e.message}`;
      return;
    }
    if (got && got.token) {
      status.textContent = "";
      $("handle").value = "";
      await signIn(got.token, true);
      return;
    }
  }
  status.textContent = "The sign-in took too long: start again.";
}

// ---- start ---------------------------------------------------------------

whenUnauthorized(() => signOut("The daemon refused the token: sign in again."));
$("signin-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = $("token").value.trim();
  if (t) signIn(t, true);
});
$("handle-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const h = $("handle").value.trim();
  if (h) signInWithHandle(h);
});
$("signout").addEventListener("click", () => signOut());
$("create-form").addEventListener("submit", create);
$("terminal-close").addEventListener("click", () => {
  closeTerminal();
  termClosedByUser = true;
  renderSandbox();
});
$("terminal-open").addEventListener("click", () => {
  termClosedByUser = false;
  renderSandbox();
});

route = parseRoute();
if (getToken()) signIn(getToken(), true);
else signOut();
