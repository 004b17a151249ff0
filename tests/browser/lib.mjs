// What the browser tests share: launching Debian's chromium (headless,
// through playwright-core), collecting what goes wrong on a page, waits
// with deadlines, the terminal's screen as text, calls to the API as
// another client would make them, and the pixels of a screenshot.
import { chromium } from "playwright-core";

export const cfg = JSON.parse(process.env.PE_BROWSER);
export const WAIT = { timeout: 60000 };
export const problems = [];
export let step = "launch";
export const setStep = (s) => (step = s);

export function log(msg) {
  console.log(`[browser] ${msg}`);
}

// --no-sandbox: the test runs as root, where chromium's own sandbox
// refuses to start; the pages are ours and on loopback.
// finish() closes it, after a failure has been looked at.
let theBrowser = null;
export async function launch() {
  theBrowser = await chromium.launch({ executablePath: cfg.chromium, args: ["--no-sandbox"] });
  return theBrowser;
}

// A page that records errors, 5xx answers, and any URL that carries the
// API token (URLs end up in logs and histories).
let lastPage = null;

export async function watchedPage(ctx) {
  const page = await ctx.newPage();
  lastPage = page;
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  // Failed requests are judged by their responses, not by chromium's
  // "Failed to load resource" console line.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource"))
      problems.push(`console error: ${m.text()}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 500) problems.push(`${r.status()} from ${r.url()}`);
  });
  page.on("request", (r) => {
    if (r.url().includes(cfg.token)) problems.push(`the API token is in a URL: ${r.url()}`);
  });
  page.on("websocket", (ws) => {
    const t = new URL(ws.url()).searchParams.get("t");
    if (!t || t === cfg.token) problems.push(`terminal WebSocket without a terminal token: t=${t}`);
  });
  return page;
}

// A browser context already signed in (the token in local storage, as the
// sign-in form leaves it), at device pixel ratio dpr.
export async function signedIn(browser, dpr = 1, viewport = { width: 1100, height: 800 }) {
  const ctx = await browser.newContext({ viewport, deviceScaleFactor: dpr });
  const page = await watchedPage(ctx);
  await page.goto(cfg.url);
  await page.evaluate((t) => localStorage.setItem("pocketenv.token", t), cfg.token);
  await page.reload();
  await page.waitForSelector("#sandboxes:not([hidden])", WAIT);
  return { ctx, page };
}

// The API as another client (the CLI, a script) uses it meanwhile.
export async function api(nsid, { params, body } = {}) {
  const q = params ? "?" + new URLSearchParams(params) : "";
  const r = await fetch(`${cfg.api || cfg.url}xrpc/${nsid}${q}`, {
    method: body !== undefined ? "POST" : "GET",
    headers: { Authorization: `Bearer ${cfg.token}`, "Content-Type": "application/json" },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`${nsid}: ${r.status} ${JSON.stringify(data)}`);
  return data;
}

export async function exec(id, command) {
  return api("io.pocketenv.sandbox.exec", { params: { id }, body: { command } });
}

// Wait until fn() (in node) is true; fn may be async. Deadline: WAIT.
export async function until(what, fn, ms = WAIT.timeout) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      if (await fn()) return;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const ROWS = "#terminal .xterm-rows > div";

export async function waitLine(page, re, what) {
  step = `terminal shows ${what}`;
  await page.waitForFunction(
    ([sel, src]) => {
      const r = new RegExp(src);
      return Array.from(document.querySelectorAll(sel)).some((d) => r.test(d.textContent.replace(/\u00a0/g, " ").trimEnd()));
    },
    [ROWS, re.source],
    WAIT,
  );
}

export async function waitConnected(page) {
  await page.waitForFunction(() => document.querySelector("#terminal-state").textContent === "connected", null, WAIT);
}

// The bounding box of the first terminal row matching re.
export async function lineBox(page, re) {
  return page.evaluate(
    ([sel, src]) => {
      const r = new RegExp(src);
      const d = Array.from(document.querySelectorAll(sel)).find((x) => r.test(x.textContent.replace(/\u00a0/g, " ").trimEnd()));
      const b = d.getBoundingClientRect();
      return { x: b.x, y: b.y, width: b.width, height: b.height };
    },
    [ROWS, re.source],
  );
}

// How many pixels of a PNG are lit (brighter than a dark background),
// decoded by a canvas in a blank page of the same browser.
export async function litPixels(browser, png) {
  const page = await browser.newPage();
  try {
    return await page.evaluate(async (b64) => {
      const img = new Image();
      img.src = `data:image/png;base64,${b64}`;
      await img.decode();
      const c = document.createElement("canvas");
      c.width = img.width;
      c.height = img.height;
      const g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      const px = g.getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < px.length; i += 4) if (px[i] + px[i + 1] + px[i + 2] > 3 * 100) n++;
      return n;
    }, png.toString("base64"));
  } finally {
    await page.close();
  }
}

export function finish(main) {
  main().then(
    async () => {
      await theBrowser?.close();
      if (problems.length) {
        console.error(`[browser] FAILED: ${problems.join("\n")}`);
        process.exit(1);
      }
      log("all steps passed");
      process.exit(0);
    },
    async (e) => {
      console.error(`[browser] FAILED at step "${step}": ${e.message}`);
      if (problems.length) console.error(problems.join("\n"));
      // What the page said (an API error shows there), and how it looked.
      try {
        console.error(`[browser] the page's message: "${await lastPage.textContent("#message", { timeout: 1000 })}"`);
        await lastPage.screenshot({ path: `${cfg.out}/failure.png`, timeout: 5000 });
      } catch {
        // the page is gone already
      }
      await theBrowser?.close().catch(() => {});
      process.exit(1);
    },
  );
}
