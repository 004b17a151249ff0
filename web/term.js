// A terminal on a sandbox: xterm.js in an element, over the WebSocket of
// /v1/sandboxes/:id/ws/terminal (the Cloudflare-style protocol: binary
// frames are raw PTY bytes both ways, text frames are JSON control
// messages; nothing is sent before "ready").
//
// Keys go up as UTF-8 (xterm.js hands us a string per key or paste, and
// TextEncoder makes its bytes), so "é" is the two bytes the shell expects
// under a UTF-8 locale, never a Latin-1 byte with the meta bit that an
// 8-bit line editor reads as Meta-something (Meta-< recalls history).
import { Terminal } from "/xterm.mjs";
import { FitAddon } from "/addon-fit.mjs";
import { terminalToken } from "/api.js";

// One session per sandbox per browser tab: a reload re-attaches to the
// same shell (and gets its recent screen back); another tab gets a shell
// of its own.
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

// xterm's DOM renderer gives each row exactly the line height and clips
// what hangs below it. With lineHeight 1 the cell is the font's ascent
// plus descent rounded down to whole CSS pixels, and at 1 device pixel per
// CSS pixel the underscore of common monospace fonts sits on the last,
// clipped pixel row: "_" vanishes. A little more line height keeps it
// (and descenders) inside the row at every pixel density.
const OPTIONS = { cursorBlink: true, fontSize: 14, lineHeight: 1.2, scrollback: 5000 };

// Attach a terminal to el for sandbox sb. on.state(text) and on.size(cols,
// rows) report what the page shows. Returns {close, focus, xterm}.
export async function attach(el, sb, on) {
  const xterm = new Terminal(OPTIONS);
  const fit = new FitAddon();
  const t = { closed: false, ws: null, ready: false, observer: null, xterm };
  xterm.loadAddon(fit);
  xterm.open(el);
  fit.fit();
  on.state("connecting");
  on.size(xterm.cols, xterm.rows);

  t.close = () => {
    if (t.closed) return;
    t.closed = true;
    if (t.observer) t.observer.disconnect();
    if (t.ws) t.ws.close(1000, "closed");
    xterm.dispose();
    el.replaceChildren();
  };
  t.focus = () => xterm.focus();

  // The element follows the window (flex layout); the terminal follows it.
  let pending = false;
  t.observer = new ResizeObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      if (!t.closed && el.clientWidth > 0) fit.fit();
    });
  });
  t.observer.observe(el);

  const tok = await terminalToken();
  if (t.closed) return t;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams({ session: sessionFor(sb.id), t: tok });
  const ws = new WebSocket(`${proto}//${location.host}/v1/sandboxes/${encodeURIComponent(sb.id)}/ws/terminal?${q}`);
  ws.binaryType = "arraybuffer";
  t.ws = ws;
  const utf8 = new TextEncoder();
  const open = () => t.ready && ws.readyState === WebSocket.OPEN;
  const sendResize = () => {
    if (open()) ws.send(JSON.stringify({ type: "resize", cols: xterm.cols, rows: xterm.rows }));
  };

  xterm.onResize(() => {
    on.size(xterm.cols, xterm.rows);
    sendResize();
  });
  xterm.onData((d) => {
    if (open()) ws.send(utf8.encode(d));
  });
  // Mouse reports in the X10 encoding are bytes, not characters.
  xterm.onBinary((d) => {
    if (open()) ws.send(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff));
  });

  let exited = false;
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
      on.state("connected");
      sendResize();
      xterm.focus();
    } else if (msg.type === "error") {
      xterm.write(`\r\n\x1b[31m[error: ${msg.message || "unknown"}]\x1b[0m\r\n`);
    } else if (msg.type === "exit") {
      const how = msg.signal ? `signal ${msg.signal}` : `code ${msg.code}`;
      xterm.write(`\r\n\x1b[33m[shell exited with ${how}]\x1b[0m\r\n`);
      exited = true;
      on.state(`exited (${how})`);
    }
  };
  ws.onclose = (ev) => {
    t.ready = false;
    if (!t.closed && !exited)
      on.state(`disconnected${ev.code ? ` (${ev.code}${ev.reason ? " " + ev.reason : ""})` : ""}`);
  };
  return t;
}
