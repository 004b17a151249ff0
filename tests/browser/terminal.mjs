// The web page in a real browser: Debian's chromium, headless, driven by
// playwright-core, against a running daemon. Run by
// tests/integration/test_browser.py, which starts the daemon and passes
// PE_BROWSER as JSON:
//   {url, token, image, out, chromium, terminal}
// out: folder for screenshots; terminal: false skips the terminal steps.
// Every wait has a deadline; nothing sleeps for a fixed time. Exits 0 when
// every step passed, 1 with the failed step on stderr.
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.env.PE_BROWSER);
const WAIT = { timeout: 60000 };
const problems = [];
let step = "launch";

function log(msg) {
  console.log(`[browser] ${msg}`);
}

async function main() {
  // --no-sandbox: the test runs as root, where chromium's own sandbox
  // refuses to start; the page is ours and on loopback.
  const browser = await chromium.launch({
    executablePath: cfg.chromium,
    args: ["--no-sandbox"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    // Failed requests are judged by their responses below, not by
    // chromium's "Failed to load resource" console line.
    page.on("console", (m) => {
      if (m.type() === "error" && !m.text().startsWith("Failed to load resource"))
        problems.push(`console error: ${m.text()}`);
    });
    page.on("response", (r) => {
      if (r.status() >= 500) problems.push(`${r.status()} from ${r.url()}`);
    });
    // The terminal authenticates with a terminal token, never the API
    // token: URLs end up in logs and histories.
    page.on("websocket", (ws) => {
      const t = new URL(ws.url()).searchParams.get("t");
      if (!t || t === cfg.token) problems.push(`terminal WebSocket without a terminal token: t=${t}`);
    });
    await run(page);
  } finally {
    await browser.close();
  }
}

const row = (page, name) => page.locator(`#list tr[data-name="${name}"]`);

async function waitStatus(page, name, status) {
  await page.waitForFunction(
    ([n, s]) => document.querySelector(`#list tr[data-name="${n}"]`)?.dataset.status === s,
    [name, status],
    WAIT,
  );
}

// The terminal's screen as text lines (xterm's DOM renderer: one div per row).
async function screenLines(page) {
  return page.evaluate(() =>
    Array.from(document.querySelectorAll("#terminal .xterm-rows > div"), (d) =>
      d.textContent.replace(/\u00a0/g, " ").trimEnd(),
    ),
  );
}

async function waitLine(page, re, what) {
  step = `terminal shows ${what}`;
  await page.waitForFunction(
    ([src]) => {
      const r = new RegExp(src);
      return Array.from(document.querySelectorAll("#terminal .xterm-rows > div")).some((d) =>
        r.test(d.textContent.replace(/\u00a0/g, " ").trimEnd()),
      );
    },
    [re.source],
    WAIT,
  );
}

async function shownSize(page) {
  const t = await page.textContent("#terminal-size");
  const m = /^(\d+)×(\d+)$/.exec(t);
  if (!m) throw new Error(`terminal size shows "${t}"`);
  return { cols: +m[1], rows: +m[2] };
}

async function sttySize(page, size) {
  // A marker makes each answer unique on the screen: "size-N R C".
  const tag = `size${Math.floor(Math.random() * 1e6)}`;
  await page.keyboard.type(`echo ${tag} $(stty size)\n`);
  await waitLine(page, new RegExp(`^${tag} ${size.rows} ${size.cols}$`), `stty size ${size.rows} ${size.cols}`);
}

async function run(page) {
  step = "open the page";
  const resp = await page.goto(cfg.url);
  if (resp.status() !== 200) throw new Error(`GET / answered ${resp.status()}`);
  await page.waitForSelector("#signin:not([hidden])", WAIT);
  const banner = await page.textContent("#banner");
  if (!/owner: did:key:/.test(banner) || !/public key: /.test(banner))
    throw new Error(`banner lacks owner and public key: ${banner}`);

  step = "sign in with a wrong token";
  await page.fill("#token", "not-a-token");
  await page.click("#signin-form button[type=submit]");
  await page.waitForFunction(() => /sign in again|failed/i.test(document.querySelector("#message").textContent), null, WAIT);
  if (await page.isVisible("#sandboxes")) throw new Error("a wrong token was let in");

  step = "sign in";
  await page.fill("#token", cfg.token);
  await page.click("#signin-form button[type=submit]");
  await page.waitForSelector("#sandboxes:not([hidden])", WAIT);
  const who = await page.textContent("#who");
  if (!who.includes("owner.local")) throw new Error(`signed in as "${who}"`);

  step = "the token survives a reload";
  await page.reload();
  await page.waitForSelector("#sandboxes:not([hidden])", WAIT);

  // The daemon out of reach (say, restarting) is no reason to forget it.
  step = "an unreachable daemon keeps the token";
  const profileUrl = "**/xrpc/io.pocketenv.actor.getProfile*";
  await page.route(profileUrl, (r) => r.abort());
  await page.reload();
  await page.waitForFunction(() => /Sign-in failed/.test(document.querySelector("#message").textContent), null, WAIT);
  if ((await page.inputValue("#token")) !== cfg.token) throw new Error("the token field is not prefilled");
  await page.unroute(profileUrl);
  await page.click("#signin-form button[type=submit]");
  await page.waitForSelector("#sandboxes:not([hidden])", WAIT);

  step = "the image field suggests the catalog";
  await page.waitForFunction(
    ([img]) => Array.from(document.querySelectorAll("#images option"), (o) => o.value).includes(img),
    [cfg.image],
    WAIT,
  );

  step = "create a sandbox";
  await page.fill("#create-name", "webbox");
  await page.fill("#create-base", cfg.image);
  await page.click("#create-form button[type=submit]");
  await row(page, "webbox").waitFor(WAIT);
  step = "the sandbox runs";
  await waitStatus(page, "webbox", "RUNNING");
  log("created webbox, RUNNING");
  step = "the list says where it runs";
  const runsOn = await row(page, "webbox").locator("td.backend").textContent();
  if (runsOn !== "local (as cloudflare)") throw new Error(`runs on "${runsOn}"`);

  if (cfg.terminal) await terminal(page);

  step = "stop the sandbox";
  await row(page, "webbox").getByRole("button", { name: "Stop" }).click();
  await waitStatus(page, "webbox", "STOPPED");
  if (await page.isVisible("#terminal-panel")) throw new Error("terminal left open after stop");
  step = "start it again";
  await row(page, "webbox").getByRole("button", { name: "Start" }).click();
  await waitStatus(page, "webbox", "RUNNING");
  log("stopped and started webbox");
  await page.screenshot({ path: `${cfg.out}/sandboxes.png` });

  step = "delete the sandbox";
  page.once("dialog", (d) => d.accept());
  await row(page, "webbox").getByRole("button", { name: "Delete" }).click();
  await row(page, "webbox").waitFor({ state: "detached", ...WAIT });
  await page.waitForSelector("#empty:not([hidden])", WAIT);

  step = "sign out";
  await page.click("#signout");
  await page.waitForSelector("#signin:not([hidden])", WAIT);
  await page.reload();
  await page.waitForSelector("#signin:not([hidden])", WAIT);

  if (problems.length) throw new Error(problems.join("\n"));
}

async function terminal(page) {
  step = "open the terminal";
  await row(page, "webbox").getByRole("button", { name: "Terminal" }).click();
  await page.waitForFunction(() => document.querySelector("#terminal-state").textContent === "connected", null, WAIT);
  await page.click("#terminal");

  step = "type echo hi";
  await page.keyboard.type("echo hi\n");
  await waitLine(page, /^hi$/, "hi");
  log("echo hi -> hi");

  const before = await shownSize(page);
  await sttySize(page, before);
  log(`stty size ${before.rows} ${before.cols}`);

  step = "resize the window";
  await page.setViewportSize({ width: 700, height: 560 });
  await page.waitForFunction(
    ([c, r]) => {
      const m = /^(\d+)×(\d+)$/.exec(document.querySelector("#terminal-size").textContent);
      return m && (+m[1] !== c || +m[2] !== r);
    },
    [before.cols, before.rows],
    WAIT,
  );
  const after = await shownSize(page);
  if (after.cols >= before.cols || after.rows >= before.rows)
    throw new Error(`terminal did not shrink: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
  await sttySize(page, after);
  log(`after resize: stty size ${after.rows} ${after.cols}`);
  await page.screenshot({ path: `${cfg.out}/terminal.png` });

  step = "close the terminal";
  await page.click("#terminal-close");
  await page.waitForSelector("#terminal-panel", { state: "hidden", ...WAIT });

  // The tab's session outlives its viewer: opening the terminal again
  // shows the earlier output (replayed), and the shell still answers.
  step = "reopen the terminal";
  await row(page, "webbox").getByRole("button", { name: "Terminal" }).click();
  await page.waitForFunction(() => document.querySelector("#terminal-state").textContent === "connected", null, WAIT);
  await waitLine(page, /^hi$/, "the replayed hi");
  await page.click("#terminal");
  await page.keyboard.type("echo again\n");
  await waitLine(page, /^again$/, "again");
  log("reopened: earlier output replayed, shell answers");
  await page.click("#terminal-close");
  await page.waitForSelector("#terminal-panel", { state: "hidden", ...WAIT });
  await page.setViewportSize({ width: 1100, height: 800 });
}

main().then(
  () => {
    log("all steps passed");
    process.exit(0);
  },
  (e) => {
    console.error(`[browser] FAILED at step "${step}": ${e.message}`);
    if (problems.length) console.error(problems.join("\n"));
    process.exit(1);
  },
);
