// The panes of one sandbox besides its terminal: ports and previews,
// variables, secrets, files, services and their logs, backups, snapshots. Each is
// {show(sb), hide(), update(sb)}: show when its tab is opened (it loads
// what it lists), update when the live list brings a new view of the
// sandbox, hide when another tab or page is shown. Every action is a
// public XRPC method (or the /cp transfer store that `pocketenv cp` uses).
import { xrpc, cpUpload, cpDownload } from "/api.js";
import { $, say, button, cell, link, when, doing, saveBlob } from "/ui.js";
import { tarGz, untarGz } from "/tar.js";

const LIVE_MS = 3000;

// A pane's list: fill tbody with rows, show the "none" note when empty.
// Rows that show the same as before are kept: a reload every few seconds
// (services) must not replace a button as it is being clicked.
function fill(id, rows) {
  const body = $(id);
  if (rows.map((r) => r.outerHTML).join("") !== body.innerHTML) body.replaceChildren(...rows);
  $(`${id}-empty`).hidden = rows.length > 0;
}

// A pane that lists something of the sandbox shown, reloading after each
// action; load(sb) returns the rows. A load that finishes after the user
// moved on is dropped.
function listPane(id, load) {
  const p = { sb: null, gen: 0 };
  p.reload = async () => {
    const gen = ++p.gen;
    const sb = p.sb;
    if (!sb) return;
    let rows;
    try {
      rows = await load(sb);
    } catch (e) {
      if (gen === p.gen) say(`Loading ${id} failed: ${e.message}`);
      return;
    }
    // The live list hands the pane a new view of the same sandbox every
    // few seconds (update): the sandbox is the same if its id is.
    if (gen === p.gen && p.sb && p.sb.id === sb.id) fill(id, rows);
  };
  p.show = (sb) => {
    p.sb = sb;
    $(id).replaceChildren();
    p.reload();
  };
  p.update = (sb) => (p.sb = sb);
  p.hide = () => {
    p.sb = null;
    p.gen++;
  };
  return p;
}

function tr(...cells) {
  const r = document.createElement("tr");
  r.append(...cells);
  return r;
}

function actions(...buttons) {
  const td = cell("", "actions");
  td.append(...buttons);
  return td;
}

// ---- ports and previews --------------------------------------------------

// A share link in a read-only field, with a button that copies it (the
// clipboard API needs a secure context; plain HTTP on a LAN address gets
// the field selected for Ctrl-C instead).
function shareField(url) {
  const td = cell("", "share");
  const input = document.createElement("input");
  input.readOnly = true;
  input.value = url;
  input.className = "share-url";
  input.addEventListener("focus", () => input.select());
  const copy = button("Copy", async () => {
    input.focus();
    input.select();
    try {
      await navigator.clipboard.writeText(url);
      say("Share link copied.", true);
    } catch {
      say("Press Ctrl-C to copy the selected link.", true);
    }
  });
  td.append(input, copy);
  return td;
}

const ports = listPane("ports", async (sb) => {
  const out = await xrpc("io.pocketenv.sandbox.getExposedPorts", { params: { id: sb.id } });
  return (out.ports || []).map((p) => {
    const r = tr(
      cell(String(p.port), "port"),
      cell(p.description || ""),
      cell(p.public ? "public" : "private"),
    );
    r.dataset.port = p.port;
    const open = cell("");
    if (p.previewUrl) {
      // noreferrer: the preview is another origin; it gets no Referer
      // (this page's address) and no handle on this window.
      const a = link("Open", p.previewUrl, "button open");
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      open.append(a);
    }
    const share = p.shareUrl || (p.public ? p.previewUrl : "");
    r.append(
      open,
      share ? shareField(share) : cell(""),
      actions(
        button("Unexpose", () =>
          doing(`Unexposing ${p.port}…`, () =>
            xrpc("io.pocketenv.sandbox.unexposePort", { params: { id: sb.id }, body: { port: p.port } }),
          ).then(ports.reload),
        ),
      ),
    );
    return r;
  });
});

$("port-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const sb = ports.sb;
  const body = { port: Number($("port-number").value), public: $("port-public").checked };
  const d = $("port-description").value.trim();
  if (d) body.description = d;
  if (await doing(`Exposing ${body.port}…`, () => xrpc("io.pocketenv.sandbox.exposePort", { params: { id: sb.id }, body }))) {
    $("port-form").reset();
    ports.reload();
  }
});

// ---- variables and secrets -----------------------------------------------

// Variables and secrets share a form: Add, or Save when a row's Edit
// (Replace for a secret) put it in the form.
function kvPane(kind, plural, showValue) {
  const form = $(`${kind}-form`);
  const submit = form.querySelector("button[type=submit]");
  const cancel = button("Cancel", () => edit(null));
  cancel.hidden = true;
  submit.after(cancel);
  let editing = null;

  function edit(row) {
    editing = row;
    form.reset();
    submit.textContent = row ? "Save" : "Add";
    cancel.hidden = !row;
    $(`${kind}-name`).readOnly = !!row;
    if (row) {
      $(`${kind}-name`).value = row.name;
      if (showValue) $(`${kind}-value`).value = row.value || "";
      $(`${kind}-value`).focus();
    }
  }

  const p = listPane(plural, async (sb) => {
    const ns = `io.pocketenv.${kind}`;
    const out = await xrpc(`${ns}.get${plural[0].toUpperCase()}${plural.slice(1)}`, {
      params: { sandboxId: sb.id, limit: 100 },
    });
    return (out[plural] || []).map((v) => {
      // A secret's value never comes back from the API; a fixed mask, not
      // even its length, stands for it.
      const r = tr(cell(v.name, "name"), cell(showValue ? v.value : "••••••••", "value"));
      r.dataset.name = v.name;
      r.dataset.id = v.id;
      r.append(
        actions(
          button(showValue ? "Edit" : "Replace", () => edit(v)),
          button("Delete", () => {
            if (!confirm(`Delete ${kind} ${v.name}?`)) return;
            doing(`Deleting ${v.name}…`, () => xrpc(`${ns}.delete${kind[0].toUpperCase()}${kind.slice(1)}`, { params: { id: v.id }, procedure: true })).then(p.reload);
          }),
        ),
      );
      return r;
    });
  });
  const show = p.show;
  p.show = (sb) => {
    edit(null);
    show(sb);
  };

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const Kind = kind[0].toUpperCase() + kind.slice(1);
    const item = { sandboxId: p.sb.id, name: $(`${kind}-name`).value.trim(), value: $(`${kind}-value`).value };
    const body = editing ? { id: editing.id, [kind]: item } : { [kind]: item };
    const ok = await doing(`Saving ${item.name}…`, () =>
      xrpc(`io.pocketenv.${kind}.${editing ? "update" : "add"}${Kind}`, { body }),
    );
    // A secret's value leaves the page with the request: the field is
    // emptied whether or not it was taken.
    if (!showValue) $(`${kind}-value`).value = "";
    if (ok) {
      edit(null);
      p.reload();
    }
  });
  return p;
}

const variables = kvPane("variable", "variables", true);
const secrets = kvPane("secret", "secrets", false);

// ---- files ---------------------------------------------------------------

// A string as one shell word.
const shq = (s) => `'${s.replace(/'/g, `'\\''`)}'`;

const parentOf = (p) => p.replace(/\/+$/, "").replace(/\/[^/]*$/, "") || "/";
const baseOf = (p) => p.replace(/\/+$/, "").replace(/^.*\//, "");
const join = (dir, name) => `${dir.replace(/\/+$/, "")}/${name}`;

async function pushed(sb, dir) {
  const out = await xrpc("io.pocketenv.sandbox.pushDirectory", {
    body: { sandboxId: sb.id, directoryPath: dir },
  });
  return cpDownload(out.uuid);
}

// A folder of the sandbox as a .tar.gz, as `pocketenv cp` gets it.
async function downloadFolder(sb, dir) {
  saveBlob(await pushed(sb, dir), `${baseOf(dir) || "root"}.tar.gz`);
}

// One file: the API moves folders, so its folder is fetched and the file
// taken out of the archive here.
async function downloadFile(sb, path) {
  const name = baseOf(path);
  const entries = await untarGz(await pushed(sb, parentOf(path)));
  const e = entries.find((x) => x.type === "0" && x.name.replace(/^(\.\/)+/, "").replace(/^\/+/, "") === name);
  if (!e) throw new Error(`${path} is not a regular file`);
  saveBlob(new Blob([e.data]), name);
}

const files = listPane("files", async (sb) => {
  const dir = $("files-path").value.trim() || "/";
  if (sb.status !== "RUNNING") throw new Error(`${sb.name} is ${sb.status}: start it to see its files`);
  // The shell's own globs, not ls: ls shows bytes it cannot print in the
  // sandbox's locale as "?", which would make a UTF-8 name unusable.
  // Folders get a trailing "/".
  const list =
    `cd -- ${shq(dir)} && for f in .[!.]* ..?* *; do ` +
    `if [ -d "$f" ]; then printf '%s/\n' "$f"; elif [ -e "$f" ] || [ -L "$f" ]; then printf '%s\n' "$f"; fi; done`;
  const out = await xrpc("io.pocketenv.sandbox.exec", { params: { id: sb.id }, body: { command: list } });
  if (out.exitCode !== 0) throw new Error((out.stderr || "").trim() || `ls exited with ${out.exitCode}`);
  const names = out.stdout.split("\n").filter((n) => n);
  const rows = [];
  if (dir !== "/") {
    const up = tr(cell("", "name"), cell(""));
    up.firstChild.append(button("..", () => goTo(parentOf(dir)), "linkish"));
    rows.push(up);
  }
  for (const n of names) {
    const folder = n.endsWith("/");
    const name = folder ? n.slice(0, -1) : n;
    const path = join(dir, name);
    const r = tr(cell("", "name"));
    r.dataset.name = name;
    if (folder) r.firstChild.append(button(`${name}/`, () => goTo(path), "linkish"));
    else r.firstChild.textContent = name;
    r.append(
      actions(
        button("Download", () =>
          doing(`Downloading ${name}…`, () => (folder ? downloadFolder(sb, path) : downloadFile(sb, path))),
        ),
      ),
    );
    rows.push(r);
  }
  return rows;
});

function goTo(dir) {
  $("files-path").value = dir;
  files.reload();
}

$("files-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  files.reload();
});
$("files-download-folder").addEventListener("click", () => {
  const dir = $("files-path").value.trim() || "/";
  doing(`Downloading ${dir}…`, () => downloadFolder(files.sb, dir));
});
$("upload-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const sb = files.sb;
  const dir = $("files-path").value.trim() || "/";
  const chosen = [...$("upload-input").files];
  const ok = await doing(`Uploading ${chosen.length} file(s) to ${dir}…`, async () => {
    const archive = await tarGz(chosen.map((f) => ({ name: f.name, blob: f, mtime: f.lastModified })));
    const { uuid } = await cpUpload(archive);
    await xrpc("io.pocketenv.sandbox.pullDirectory", {
      body: { sandboxId: sb.id, uuid, directoryPath: dir },
    });
  });
  if (ok) {
    $("upload-form").reset();
    say(`Uploaded ${chosen.map((f) => f.name).join(", ")} to ${dir}.`, true);
    files.reload();
  }
});

// ---- services and their logs ---------------------------------------------

let logsOf = null; // the service whose logs are shown
let liveTimer = null;

const services = listPane("services", async (sb) => {
  const out = await xrpc("io.pocketenv.service.getServices", { params: { sandboxId: sb.id } });
  return (out.services || []).map((s) => {
    let status = s.status || "";
    if (s.exitCode !== undefined && status !== "RUNNING") status += ` (exit ${s.exitCode})`;
    const r = tr(cell(s.name, "name"), cell(s.command, "command"), cell(status, `status status-${s.status}`), cell(String(s.restarts ?? "")));
    r.dataset.name = s.name;
    r.dataset.id = s.id;
    r.dataset.status = s.status || "";
    const act = (verb, nsid) =>
      button(verb, () =>
        doing(`${verb} ${s.name}…`, () => xrpc(`io.pocketenv.service.${nsid}`, { params: { serviceId: s.id }, procedure: true })).then(services.reload),
      );
    r.append(
      actions(
        button("Logs", () => showLogs(s)),
        s.status === "RUNNING" ? act("Stop", "stopService") : act("Start", "startService"),
        act("Restart", "restartService"),
        button("Delete", () => {
          if (!confirm(`Delete service ${s.name}?`)) return;
          if (logsOf && logsOf.id === s.id) hideLogs();
          doing(`Deleting ${s.name}…`, () => xrpc("io.pocketenv.service.deleteService", { params: { serviceId: s.id }, procedure: true })).then(services.reload);
        }),
      ),
    );
    return r;
  });
});

async function loadLogs() {
  const s = logsOf;
  if (!s) return;
  let out;
  try {
    out = await xrpc("io.pocketenv.service.getServiceLogs", { params: { serviceId: s.id } });
  } catch (e) {
    if (logsOf === s) $("service-logs").textContent = `(logs not available: ${e.message})`;
    return;
  }
  if (logsOf !== s) return;
  const pre = $("service-logs");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  const text = (out.truncated ? "[older output dropped]\n" : "") + (out.logs || "");
  if (pre.textContent !== text) {
    pre.textContent = text;
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }
}

function showLogs(s) {
  logsOf = s;
  $("service-logs-box").hidden = false;
  $("service-logs-title").textContent = `Logs of ${s.name}`;
  $("service-logs").textContent = "";
  loadLogs();
}

function hideLogs() {
  logsOf = null;
  $("service-logs-box").hidden = true;
}

$("service-logs-close").addEventListener("click", hideLogs);
$("service-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const sb = services.sb;
  const service = { name: $("service-name").value.trim(), command: $("service-command").value };
  const ports = $("service-ports").value.split(/[\s,]+/).filter((x) => x).map(Number);
  if (ports.length) service.ports = ports;
  const ok = await doing(`Adding ${service.name}…`, () =>
    xrpc("io.pocketenv.service.addService", { params: { sandboxId: sb.id }, body: { service } }),
  );
  if (ok) {
    $("service-form").reset();
    services.reload();
  }
});

// Services change on their own (a crash, a restart): the pane follows
// them, and the shown logs, while it is open and the tab visible.
function tick() {
  clearTimeout(liveTimer);
  if (!services.sb) return;
  if (!document.hidden) {
    services.reload();
    loadLogs();
  }
  liveTimer = setTimeout(tick, LIVE_MS);
}
const servicesShow = services.show;
const servicesHide = services.hide;
services.show = (sb) => {
  hideLogs();
  servicesShow(sb);
  liveTimer = setTimeout(tick, LIVE_MS);
};
services.hide = () => {
  clearTimeout(liveTimer);
  hideLogs();
  servicesHide();
};

// ---- backups -------------------------------------------------------------

// expiresAt: a datetime string here; the lexicon says a number (seconds
// since the epoch), which other servers may send.
const expiry = (v) => (typeof v === "number" ? new Date(v * 1000).toLocaleString() : when(v));

const backups = listPane("backups", async (sb) => {
  const out = await xrpc("io.pocketenv.sandbox.getBackups", { params: { id: sb.id } });
  return (out.backups || []).map((b) => {
    const r = tr(cell(b.directory, "directory"), cell(b.description || ""), cell(when(b.createdAt)), cell(expiry(b.expiresAt)));
    r.dataset.id = b.id;
    r.append(
      actions(
        button("Restore", () => {
          if (!confirm(`Restore ${b.directory} as it was at ${when(b.createdAt)}? Its current content is replaced.`)) return;
          doing(`Restoring ${b.directory}…`, () => xrpc("io.pocketenv.sandbox.restoreBackup", { body: { backupId: b.id } })).then(
            (ok) => ok && say(`Restored ${b.directory}.`, true),
          );
        }),
      ),
    );
    return r;
  });
});

$("backup-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const sb = backups.sb;
  const body = { directory: $("backup-directory").value.trim() };
  const d = $("backup-description").value.trim();
  if (d) body.description = d;
  if (await doing(`Backing up ${body.directory}…`, () => xrpc("io.pocketenv.sandbox.createBackup", { params: { id: sb.id }, body }))) {
    $("backup-description").value = "";
    say(`Backed up ${body.directory}.`, true);
    backups.reload();
  }
});

// ---- snapshots -----------------------------------------------------------

const bytes = (n) => {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  for (; n >= 1024 && i < units.length - 1; i++) n /= 1024;
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
};

// A span of time in the largest unit that fits: "40 s", "3 min", "2 h", "6 d".
const span = (ms) => {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
};

// Snapshots belong to their owner, not to the sandbox (they outlive it):
// this pane lists the owner's snapshots taken from the sandbox shown.
const snapshots = listPane("snapshots", async (sb) => {
  const out = await xrpc("io.pocketenv.sandbox.getSnapshots");
  const now = Date.now();
  return (out.snapshots || [])
    .filter((v) => v.sandboxId === sb.id)
    .map((v) => {
      const own = v.exclusiveBytes ?? v.sizeBytes;
      const r = tr(
        cell(v.name, "name"),
        cell(bytes(own), "size"),
        cell(span(now - new Date(v.createdAt)), "age"),
        cell(span(new Date(v.expiresAt) - now), "ttl"),
        cell(`${v.frozenMs} ms`),
      );
      r.dataset.name = v.name;
      r.dataset.id = v.id;
      r.cells[2].title = when(v.createdAt);
      r.cells[3].title = when(v.expiresAt);
      r.append(
        actions(
          button("New sandbox", async () => {
            let made;
            const ok = await doing(`Starting a sandbox from ${v.name}…`, async () => {
              made = await xrpc("io.pocketenv.sandbox.createSandbox", { body: { base: `snapshot:${v.id}` } });
            });
            if (ok) say(`Started ${made.name} from ${v.name}.`, true);
          }),
          button("Delete", async () => {
            if (!confirm(`Delete the snapshot ${v.name}? Sandboxes made from it keep their files.`)) return;
            const ok = await doing(`Deleting ${v.name}…`, () => xrpc("io.pocketenv.sandbox.deleteSnapshot", { params: { id: v.id }, procedure: true }));
            if (ok) say(`Deleted ${v.name}.`, true);
            snapshots.reload();
          }),
        ),
      );
      return r;
    });
});

$("snapshot-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const sb = snapshots.sb;
  const name = $("snapshot-name").value.trim();
  const body = { name, ttl: Math.round(Number($("snapshot-ttl").value) * 3600) };
  let out;
  const ok = await doing(`Taking the snapshot ${name}…`, async () => {
    out = await xrpc("io.pocketenv.sandbox.createSnapshot", { params: { id: sb.id }, body });
  });
  if (ok) {
    $("snapshot-name").value = "";
    say(`Took ${name} (frozen ${out.snapshot.frozenMs} ms).`, true);
  }
  snapshots.reload();
});

$("fork-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const sb = snapshots.sb;
  const count = Number($("fork-count").value);
  let out;
  const ok = await doing(`Forking ${sb.name} ×${count}…`, async () => {
    out = await xrpc("io.pocketenv.sandbox.forkSandbox", { params: { id: sb.id }, body: { count } });
  });
  if (ok) say(`Forked into ${out.sandboxes.map((x) => x.name).join(", ")}.`, true);
  snapshots.reload();
});

// ---- network (egress policy) ----------------------------------------------

const isCidr = (e) => /^[0-9./]+$/.test(e);
const lines = (id) => $(id).value.split("\n").map((l) => l.trim()).filter((l) => l);

const network = {
  sb: null,
  async load() {
    const sb = network.sb;
    if (!sb) return;
    let out;
    try {
      out = await xrpc("io.pocketenv.sandbox.getNetworkPolicy", { params: { id: sb.id } });
    } catch (e) {
      say(`Loading the network policy failed: ${e.message}`);
      return;
    }
    if (network.sb !== sb) return;
    const p = out.policy;
    $("net-mode").value = p.mode;
    $("net-allow").value = [...p.allowDomains, ...p.allowCidrs].join("\n");
    $("net-deny").value = [...p.denyDomains, ...p.denyCidrs].join("\n");
    $("net-ports").value = p.ports.join(", ");
    $("net-state").textContent = out.isDefault ? "No policy set: the network is open." : `Policy in force: ${p.mode}.`;
    network.denials();
  },
  // The newest 100 attempts the resolver and the proxy refused.
  async denials() {
    const sb = network.sb;
    if (!sb) return;
    let out;
    try {
      out = await xrpc("io.pocketenv.sandbox.getNetworkDenials", { params: { id: sb.id, limit: 100 } });
    } catch (e) {
      say(`Loading the denied attempts failed: ${e.message}`);
      return;
    }
    if (network.sb !== sb) return;
    const rows = out.denials.map((d) => {
      const r = tr(cell(d.time), cell(d.name || ""), cell(d.address || ""), cell(d.port ? String(d.port) : ""), cell(d.via), cell(d.reason));
      r.dataset.name = d.name || "";
      return r;
    });
    $("net-denials").replaceChildren(...rows);
    $("net-denials-empty").hidden = rows.length > 0;
  },
  show(sb) {
    network.sb = sb;
    network.load();
  },
  update(sb) {
    network.sb = sb;
  },
  hide() {
    network.sb = null;
  },
};

async function putPolicy(policy, what) {
  const sb = network.sb;
  if (await doing(what, () => xrpc("io.pocketenv.sandbox.putNetworkPolicy", { params: { id: sb.id }, body: { policy } }))) {
    network.load();
  }
}

$("net-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const allow = lines("net-allow"), deny = lines("net-deny");
  const ports = $("net-ports").value.split(/[\s,]+/).filter((p) => p).map(Number);
  putPolicy(
    {
      mode: $("net-mode").value,
      allowDomains: allow.filter((e) => !isCidr(e)),
      allowCidrs: allow.filter(isCidr),
      denyDomains: deny.filter((e) => !isCidr(e)),
      denyCidrs: deny.filter(isCidr),
      ports,
    },
    "Saving the network policy…",
  );
});
$("net-reset").addEventListener("click", () => putPolicy(null, "Removing the network policy…"));
$("net-denials-reload").addEventListener("click", () => network.denials());

export const panes = { ports, variables, secrets, files, services, backups, snapshots, network };
