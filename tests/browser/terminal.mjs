// The web page in a real browser: Debian's chromium, headless, driven by
// playwright-core, against a running daemon. Run by
// tests/integration/test_browser.py, which starts the daemon and passes
// PE_BROWSER as JSON:
//   {url, token, image, out, chromium, terminal, failed: [{name, reason}]}
// out: folder for screenshots; terminal: false skips the terminal steps;
// failed: sandboxes the test made FAILED beforehand, with their reasons.
// Signs in, follows the list as another client changes it, creates,
// starts, stops and deletes a sandbox, and uses its terminal: in its pane
// (full height, however long the list), alone in a tab of its own, with
// underscores drawn at 1 device pixel per CSS pixel and UTF-8 typed in.
// Every wait has a deadline; nothing sleeps for a fixed time. Exits 0 when
// every step passed, 1 with the failed step on stderr.
import { cfg, WAIT, problems, setStep, log, launch, watchedPage, api, waitLine, waitConnected, lineBox, litPixels, finish } from "./lib.mjs";

const row = (page, name) => page.locator(`#list tr[data-name="${name}"]`);

async function waitStatus(page, name, status) {
  await page.waitForFunction(
    ([n, s]) => document.querySelector(`#list tr[data-name="${n}"]`)?.dataset.status === s,
    [name, status],
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

async function main() {
  const browser = await launch();
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  const page = await watchedPage(ctx);
  await run(browser, ctx, page);
}

async function signIn(page) {
  setStep("open the page");
  const resp = await page.goto(cfg.url);
  if (resp.status() !== 200) throw new Error(`GET / answered ${resp.status()}`);
  await page.waitForSelector("#signin:not([hidden])", WAIT);
  const banner = await page.textContent("#banner");
  if (!/owner: did:key:/.test(banner) || !/public key: /.test(banner))
    throw new Error(`banner lacks owner and public key: ${banner}`);

  setStep("sign in with a wrong token");
  await page.fill("#token", "not-a-token");
  await page.click("#signin-form button[type=submit]");
  await page.waitForFunction(() => /sign in again|failed/i.test(document.querySelector("#message").textContent), null, WAIT);
  if (await page.isVisible("#sandboxes")) throw new Error("a wrong token was let in");

  setStep("sign in");
  await page.fill("#token", cfg.token);
  await page.click("#signin-form button[type=submit]");
  await page.waitForSelector("#sandboxes:not([hidden])", WAIT);
  const who = await page.textContent("#who");
  if (!who.includes("owner.local")) throw new Error(`signed in as "${who}"`);

  setStep("the token survives a reload");
  await page.reload();
  await page.waitForSelector("#sandboxes:not([hidden])", WAIT);

  // The daemon out of reach (say, restarting) is no reason to forget it.
  setStep("an unreachable daemon keeps the token");
  const profileUrl = "**/xrpc/io.pocketenv.actor.getProfile*";
  await page.route(profileUrl, (r) => r.abort());
  await page.reload();
  await page.waitForFunction(() => /Sign-in failed/.test(document.querySelector("#message").textContent), null, WAIT);
  if ((await page.inputValue("#token")) !== cfg.token) throw new Error("the token field is not prefilled");
  await page.unroute(profileUrl);
  await page.click("#signin-form button[type=submit]");
  await page.waitForSelector("#sandboxes:not([hidden])", WAIT);
}

// Another client changes the sandboxes; the page follows without a reload.
async function liveList(page) {
  setStep("FAILED sandboxes show their reason");
  for (const f of cfg.failed || []) {
    await waitStatus(page, f.name, "FAILED");
    const shown = await row(page, f.name).locator(".reason").textContent();
    if (shown !== f.reason) throw new Error(`${f.name}: reason "${shown}", the API says "${f.reason}"`);
  }
  setStep("a sandbox another client creates appears");
  const marker = await page.evaluate(() => (window.__sameDocument = Math.random()));
  const sb = await api("io.pocketenv.sandbox.createSandbox", { body: { name: "elsewhere", base: cfg.image } });
  await row(page, "elsewhere").waitFor(WAIT);
  await waitStatus(page, "elsewhere", "RUNNING");
  setStep("its stop, made elsewhere, shows");
  await api("io.pocketenv.sandbox.stopSandbox", { params: { id: sb.id }, body: {} });
  await waitStatus(page, "elsewhere", "STOPPED");
  setStep("its deletion, made elsewhere, shows");
  await api("io.pocketenv.sandbox.deleteSandbox", { params: { id: sb.id }, body: {} });
  await row(page, "elsewhere").waitFor({ state: "detached", ...WAIT });
  if ((await page.evaluate(() => window.__sameDocument)) !== marker) throw new Error("the page was reloaded");
  log("the list follows another client's create, stop and delete");
}

async function run(browser, ctx, page) {
  await signIn(page);

  setStep("the image field suggests the catalog");
  await page.waitForFunction(
    ([img]) => Array.from(document.querySelectorAll("#images option"), (o) => o.value).includes(img),
    [cfg.image],
    WAIT,
  );

  await liveList(page);

  setStep("create a sandbox");
  await page.fill("#create-name", "webbox");
  await page.fill("#create-base", cfg.image);
  await page.click("#create-form button[type=submit]");
  await row(page, "webbox").waitFor(WAIT);
  setStep("the sandbox runs");
  await waitStatus(page, "webbox", "RUNNING");
  log("created webbox, RUNNING");
  setStep("the list says where it runs");
  const runsOn = await row(page, "webbox").locator("td.backend").textContent();
  if (runsOn !== "local (as cloudflare)") throw new Error(`runs on "${runsOn}"`);
  await page.screenshot({ path: `${cfg.out}/sandboxes.png` });

  if (cfg.terminal) await terminal(browser, ctx, page);

  setStep("stop the sandbox");
  await page.goto(`${cfg.url}#/`);
  await row(page, "webbox").getByRole("button", { name: "Stop" }).click();
  await waitStatus(page, "webbox", "STOPPED");
  setStep("start it again");
  await row(page, "webbox").getByRole("button", { name: "Start" }).click();
  await waitStatus(page, "webbox", "RUNNING");
  log("stopped and started webbox");

  setStep("delete the sandbox");
  page.once("dialog", (d) => d.accept());
  await row(page, "webbox").getByRole("button", { name: "Delete" }).click();
  await row(page, "webbox").waitFor({ state: "detached", ...WAIT });
  if (!(cfg.failed || []).length) await page.waitForSelector("#empty:not([hidden])", WAIT);

  setStep("sign out");
  await page.click("#signout");
  await page.waitForSelector("#signin:not([hidden])", WAIT);
  await page.reload();
  await page.waitForSelector("#signin:not([hidden])", WAIT);
}

async function terminal(browser, ctx, page) {
  setStep("open the terminal");
  await row(page, "webbox").getByText("Terminal", { exact: true }).click();
  await waitConnected(page);
  await page.click("#terminal");

  setStep("type echo hi");
  await page.keyboard.type("echo hi\n");
  await waitLine(page, /^hi$/, "hi");
  log("echo hi -> hi");

  // The terminal has the window below the sandbox's bar, however many
  // sandboxes there are (it was 125×13 under a list of nine).
  setStep("the terminal takes the window's height");
  const before = await shownSize(page);
  const box = await page.locator("#terminal").boundingBox();
  const listed = await page.locator("#list tr").count();
  if (box.y + box.height < 800 - 120 || before.rows < 28)
    throw new Error(`terminal ${before.cols}×${before.rows}, ${JSON.stringify(box)} in an 800-pixel window, ${listed} sandboxes listed`);
  log(`terminal ${before.cols}×${before.rows} with ${listed} sandboxes listed`);
  await sttySize(page, before);

  setStep("underscores are drawn at 1 device pixel per CSS pixel");
  await page.keyboard.type("clear; echo ________________________________\n");
  await waitLine(page, /^_{32}$/, "a line of underscores");
  setStep("underscores are drawn at 1 device pixel per CSS pixel");
  const ub = await lineBox(page, /^_{32}$/);
  const lit = await litPixels(browser, await page.screenshot({ clip: ub }));
  if (lit < 32) throw new Error(`a row of 32 underscores lights ${lit} pixels: they are not drawn`);
  log(`a row of underscores lights ${lit} pixels`);

  setStep("UTF-8 typed in the terminal");
  await page.keyboard.type("echo é ü 你好; printf '%s' 'é ü 你好' | od -An -tx1\n");
  await waitLine(page, /^é ü 你好$/, "é ü 你好 echoed");
  await waitLine(page, /^\s*c3 a9 20 c3 bc 20 e4 bd a0 e5 a5 bd$/, "their UTF-8 bytes");

  setStep("resize the window");
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
  await page.setViewportSize({ width: 1100, height: 800 });
  await page.screenshot({ path: `${cfg.out}/terminal.png` });

  setStep("close the terminal");
  await page.click("#terminal-close");
  await page.waitForSelector("#terminal", { state: "hidden", ...WAIT });

  // The tab's session outlives its viewer: opening the terminal again
  // shows the earlier output (replayed), and the shell still answers.
  setStep("reopen the terminal");
  await page.click("#terminal-open");
  await waitConnected(page);
  await waitLine(page, /^é ü 你好$/, "the replayed output");
  await page.click("#terminal");
  await page.keyboard.type("echo again\n");
  await waitLine(page, /^again$/, "again");
  log("reopened: earlier output replayed, shell answers");

  // Its own tab: an address of its own, the terminal alone, the whole
  // window, a shell of its own; no token in the address.
  setStep("open the terminal in a new tab");
  const [tab] = await Promise.all([ctx.waitForEvent("page"), page.click("#terminal-newtab")]);
  tab.on("pageerror", (e) => problems.push(`new tab: page error: ${e.message}`));
  await tab.waitForLoadState();
  if (!/#\/terminal\/sbx_/.test(tab.url()) || tab.url().includes(cfg.token)) throw new Error(`new tab at ${tab.url()}`);
  await waitConnected(tab);
  const vp = tab.viewportSize();
  const tb = await tab.locator("#terminal").boundingBox();
  if (tb.height < vp.height * 0.85) throw new Error(`the tab's terminal is ${tb.height} of ${vp.height} pixels high`);
  if (await tab.isVisible("#tabs")) throw new Error("the terminal's tab shows the sandbox's panes");
  await tab.click("#terminal");
  await tab.keyboard.type("echo tab$((40+2))\n");
  await waitLine(tab, /^tab42$/, "tab42 in the new tab");
  await tab.screenshot({ path: `${cfg.out}/terminal-tab.png` });
  await tab.close();
  log("terminal in its own tab: whole window, its own shell");

  setStep("stopping the sandbox ends the terminal");
  await page.locator("#sb-actions").getByRole("button", { name: "Stop" }).click();
  await page.waitForSelector("#terminal-off:not([hidden])", WAIT);
  if (await page.isVisible("#terminal")) throw new Error("terminal left open after stop");
  await page.locator("#sb-actions").getByRole("button", { name: "Start" }).click();
  await page.waitForFunction(() => document.querySelector("#sandbox").dataset.status === "RUNNING", null, WAIT);
}

finish(main);
