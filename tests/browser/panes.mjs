// Each pane of a sandbox in a real browser (Debian's chromium, headless,
// playwright-core), as a user works with it, checked through the API as
// another client sees the sandbox. Run by tests/integration/test_browser.py,
// which passes PE_BROWSER as JSON:
//   {url, api, token, chromium, sandbox: {id, name}, shots, out}
// url: the page at http://localhost:PORT/, the daemon's own origin that
// private previews send a browser to for signing in; api: the same daemon
// at 127.0.0.1, for this script's own calls (node may resolve localhost
// to ::1, where the daemon does not listen);
// sandbox: a RUNNING sandbox of the busybox image; shots: the folder
// for a screenshot of each pane at 1x and 2x device pixel ratio
// (<pane>-1x.png, <pane>-2x.png); out: where a failure's screenshot goes.
// Every wait has a deadline; nothing
// sleeps for a fixed time.
import { readFileSync } from "node:fs";
import { cfg, WAIT, setStep, log, launch, signedIn, api, exec, until, waitLine, waitConnected, finish } from "./lib.mjs";

const sb = cfg.sandbox;
const PANES = ["terminal", "ports", "variables", "secrets", "files", "services", "backups", "snapshots", "network"];
const PAGE_TITLE = "pane test page";
const INDEX = `<!doctype html><title>${PAGE_TITLE}</title><h1>Served from the sandbox</h1>\n`;
const NOTE = "héllo wörld.txt";
const NOTE_TEXT = "grüße, 你好\n";
const LONG = `${"ünïcödé-".repeat(12)}long name.txt`; // over ustar's 100 bytes
const rand = () => Math.random().toString(16).slice(2);

const stdout = async (cmd) => (await exec(sb.id, cmd)).stdout;

async function pane(page, name) {
  await page.goto(`${cfg.url}#/sandbox/${sb.id}/${name}`);
  await page.waitForSelector(`#pane-${name}:not([hidden])`, WAIT);
}

async function shot(page, name, dpr) {
  await page.screenshot({ path: `${cfg.shots}/${name}-${dpr}x.png` });
}

const row = (page, list, attr, value) => page.locator(`#${list} tr[data-${attr}="${value}"]`);

async function message(page, re) {
  await page.waitForFunction((src) => new RegExp(src).test(document.querySelector("#message").textContent), re.source, WAIT);
}

async function variables(page) {
  setStep("variables: add one");
  await pane(page, "variables");
  await page.fill("#variable-name", "GREETING");
  await page.fill("#variable-value", "hello");
  await page.click("#variable-form button[type=submit]");
  const r = row(page, "variables", "name", "GREETING");
  await r.locator("td.value", { hasText: /^hello$/ }).waitFor(WAIT);
  setStep("variables: edit it");
  await r.getByRole("button", { name: "Edit" }).click();
  await page.fill("#variable-value", "hello world");
  await page.click("#variable-form button[type=submit]");
  await r.locator("td.value", { hasText: /^hello world$/ }).waitFor(WAIT);
  await until("the sandbox to see GREETING", async () => (await stdout('printf %s "$GREETING"')) === "hello world");
  await shot(page, "variables", 1);
  log("variables: added, edited, seen by the sandbox");
}

async function secrets(page) {
  const values = [`s3cr3t-${rand()}`, `s3cr3t-${rand()}`];
  const bodies = [];
  page.on("response", async (resp) => {
    try {
      bodies.push(await resp.text());
    } catch {
      // a body chromium no longer has (a redirect, a download)
    }
  });
  setStep("secrets: add one");
  await pane(page, "secrets");
  await page.fill("#secret-name", "API_KEY");
  await page.fill("#secret-value", values[0]);
  await page.click("#secret-form button[type=submit]");
  const r = row(page, "secrets", "name", "API_KEY");
  await r.waitFor(WAIT);
  if ((await page.inputValue("#secret-value")) !== "") throw new Error("the secret's value stays in the form");
  await until("the sandbox to see API_KEY", async () => (await stdout('printf %s "$API_KEY"')) === values[0]);
  setStep("secrets: replace its value");
  await r.getByRole("button", { name: "Replace" }).click();
  await page.fill("#secret-value", values[1]);
  await page.click("#secret-form button[type=submit]");
  await until("the sandbox to see the new API_KEY", async () => (await stdout('printf %s "$API_KEY"')) === values[1]);
  await page.goto(`${cfg.url}#/`);
  await pane(page, "secrets");
  await r.waitFor(WAIT);
  setStep("secrets: never shown back");
  const html = await page.content();
  const inputs = await page.evaluate(() => Array.from(document.querySelectorAll("input"), (i) => i.value).join("\n"));
  for (const v of values) {
    if (html.includes(v) || inputs.includes(v)) throw new Error("a secret's value is on the page");
    if (bodies.some((b) => b.includes(v))) throw new Error("a secret's value came back in an answer");
  }
  await shot(page, "secrets", 1);
  log("secrets: added, replaced, in the sandbox, never shown back");
}

async function files(page) {
  setStep("files: list a folder");
  await pane(page, "files");
  await page.locator("#files tr").first().waitFor(WAIT); // "..": /root was listed
  setStep("files: upload two into a new folder");
  await page.fill("#files-path", "/root/www");
  await page.setInputFiles("#upload-input", [
    { name: "index.html", mimeType: "text/html", buffer: Buffer.from(INDEX) },
    { name: NOTE, mimeType: "text/plain", buffer: Buffer.from(NOTE_TEXT) },
    { name: LONG, mimeType: "text/plain", buffer: Buffer.from("long\n") },
  ]);
  await page.click("#upload-form button[type=submit]");
  await message(page, /^Uploaded /);
  await row(page, "files", "name", NOTE).waitFor(WAIT);
  await row(page, "files", "name", "index.html").waitFor(WAIT);
  if ((await stdout(`cat '/root/www/${NOTE}'`)) !== NOTE_TEXT) throw new Error("the uploaded file differs in the sandbox");
  if ((await stdout(`cat '/root/www/${LONG}'`)) !== "long\n") throw new Error("the file with a long name differs in the sandbox");

  setStep("files: download one");
  const [dl] = await Promise.all([
    page.waitForEvent("download", WAIT),
    row(page, "files", "name", NOTE).getByRole("button", { name: "Download" }).click(),
  ]);
  if (dl.suggestedFilename() !== NOTE) throw new Error(`downloaded as ${dl.suggestedFilename()}`);
  const got = readFileSync(await dl.path(), "utf8");
  if (got !== NOTE_TEXT) throw new Error(`downloaded ${JSON.stringify(got)}`);

  setStep("files: download the folder");
  const [dir] = await Promise.all([page.waitForEvent("download", WAIT), page.click("#files-download-folder")]);
  const tgz = readFileSync(await dir.path());
  if (dir.suggestedFilename() !== "www.tar.gz" || tgz[0] !== 0x1f || tgz[1] !== 0x8b)
    throw new Error(`folder downloaded as ${dir.suggestedFilename()}, ${tgz.length} bytes`);
  await shot(page, "files", 1);
  log("files: listed, uploaded (UTF-8 name), downloaded a file and a folder");
}

async function services(page) {
  setStep("services: add two");
  await pane(page, "services");
  for (const [name, command] of [
    ["web", "httpd -f -p 8080 -h /root/www"],
    ["talker", "echo hello from talker; sleep 3600"],
  ]) {
    await page.fill("#service-name", name);
    await page.fill("#service-command", command);
    await page.click("#service-form button[type=submit]");
    await row(page, "services", "name", name).waitFor(WAIT);
  }
  setStep("services: they run");
  for (const name of ["web", "talker"])
    await page.waitForSelector(`#services tr[data-name="${name}"][data-status="RUNNING"]`, WAIT);
  setStep("services: logs");
  await row(page, "services", "name", "talker").getByRole("button", { name: "Logs" }).click();
  await page.waitForFunction(() => document.querySelector("#service-logs").textContent.includes("hello from talker"), null, WAIT);
  await shot(page, "services", 1);
  log("services: added, running, logs shown");
}

async function ports(page, browser) {
  setStep("ports: expose one");
  await pane(page, "ports");
  await page.fill("#port-number", "8080");
  await page.fill("#port-description", "web page");
  await page.click("#port-form button[type=submit]");
  const r = row(page, "ports", "port", "8080");
  await r.waitFor(WAIT);
  const [p] = (await api("io.pocketenv.sandbox.getExposedPorts", { params: { id: sb.id } })).ports;
  const open = r.getByRole("link", { name: "Open" });
  if ((await open.getAttribute("href")) !== p.previewUrl || (await open.getAttribute("target")) !== "_blank")
    throw new Error(`Open goes to ${await open.getAttribute("href")}, the preview is ${p.previewUrl}`);
  if ((await r.locator(".share-url").inputValue()) !== p.shareUrl) throw new Error("the share link is not the API's");

  // Open: the private preview, in a new tab of this signed-in browser.
  setStep("ports: open the preview");
  const [tab] = await Promise.all([page.context().waitForEvent("page"), open.click()]);
  await tab.waitForFunction((t) => document.title === t, PAGE_TITLE, WAIT);
  if (tab.url().includes(cfg.token)) throw new Error("the token is in the preview's address");
  await tab.close();

  // Share: the link opens it for a browser that never signed in.
  setStep("ports: the share link opens it elsewhere");
  const stranger = await browser.newContext();
  const sp = await stranger.newPage();
  await sp.goto(p.shareUrl);
  await sp.waitForFunction((t) => document.title === t, PAGE_TITLE, WAIT);
  await stranger.close();
  await shot(page, "ports", 1);
  log("ports: exposed, opened (private preview), shared");
}

async function backups(page) {
  setStep("backups: back up a folder");
  await pane(page, "backups");
  await page.fill("#backup-directory", "/root/www");
  await page.fill("#backup-description", "before the accident");
  await page.click("#backup-form button[type=submit]");
  const r = page.locator("#backups tr", { hasText: "before the accident" });
  await r.waitFor(WAIT);
  setStep("backups: restore it");
  await stdout(`rm '/root/www/${NOTE}'`);
  page.once("dialog", (d) => d.accept());
  await r.getByRole("button", { name: "Restore" }).click();
  await message(page, /^Restored /);
  if ((await stdout(`cat '/root/www/${NOTE}'`)) !== NOTE_TEXT) throw new Error("the restore did not bring the file back");
  await shot(page, "backups", 1);
  log("backups: made, restored");
}

// Take snapshots, start a sandbox from one, fork the sandbox, delete one;
// each checked through the API. The copies are deleted at the end.
async function snapshots(page) {
  setStep("snapshots: take one");
  await pane(page, "snapshots");
  await page.waitForSelector("#snapshots-empty:not([hidden])", WAIT);
  await stdout("echo first > /root/snapmark");
  await page.fill("#snapshot-name", "before-change");
  await page.fill("#snapshot-ttl", "2");
  await page.click("#snapshot-form button[type=submit]");
  const r = row(page, "snapshots", "name", "before-change");
  await r.waitFor(WAIT);
  await message(page, /^Took before-change \(frozen \d+ ms\)/);
  const age = await r.locator("td.age").textContent();
  const ttl = await r.locator("td.ttl").textContent();
  if (!/^\d+ s$/.test(age) || !/^[12] h$/.test(ttl)) throw new Error(`age "${age}", expires in "${ttl}"`);
  if (!/^\d+(\.\d)? (B|KiB|MiB)$/.test(await r.locator("td.size").textContent())) throw new Error("no size shown");
  const v = (await api("io.pocketenv.sandbox.getSnapshot", { params: { id: "before-change" } })).snapshot;
  if (v.sandboxId !== sb.id || new Date(v.expiresAt) - new Date(v.createdAt) !== 7200 * 1000) throw new Error(`the snapshot saved is ${JSON.stringify(v)}`);
  await stdout("echo second > /root/snapmark");

  setStep("snapshots: a bad name is refused, nothing made");
  await page.fill("#snapshot-name", "snp_x");
  await page.click("#snapshot-form button[type=submit]");
  await message(page, /invalid snapshot name/);

  setStep("snapshots: take another and delete it");
  await page.fill("#snapshot-name", "throwaway");
  await page.click("#snapshot-form button[type=submit]");
  await row(page, "snapshots", "name", "throwaway").waitFor(WAIT);
  page.once("dialog", (d) => d.accept());
  await row(page, "snapshots", "name", "throwaway").getByRole("button", { name: "Delete" }).click();
  await row(page, "snapshots", "name", "throwaway").waitFor({ state: "detached", ...WAIT });
  const names = (await api("io.pocketenv.sandbox.getSnapshots")).snapshots.map((x) => x.name);
  if (names.includes("throwaway") || names.includes("snp_x") || !names.includes("before-change")) throw new Error(`snapshots left: ${names}`);

  setStep("snapshots: a new sandbox from one has its files");
  await r.getByRole("button", { name: "New sandbox" }).click();
  await message(page, /^Started \S+ from before-change\.$/);
  const copy = /^Started (\S+) from/.exec(await page.textContent("#message"))[1];
  await until(`${copy} to run with the snapshot's files`, async () => (await exec(copy, "cat /root/snapmark")).stdout === "first\n");

  setStep("snapshots: fork the sandbox twice");
  await page.fill("#fork-count", "2");
  await page.click("#fork-form button[type=submit]");
  await message(page, /^Forked into \S+, \S+\.$/);
  const forks = /^Forked into (.*)\.$/.exec(await page.textContent("#message"))[1].split(", ");
  // the fork's own snapshot is listed with the others of this sandbox
  await page.locator("#snapshots tr td.name", { hasText: `${sb.name}-fork-` }).waitFor(WAIT);
  for (const f of forks) {
    const got = await api("io.pocketenv.sandbox.getSandbox", { params: { id: f } });
    if (!got.sandbox && !got.id) throw new Error(`fork ${f} is not there`);
  }
  for (const name of [copy, ...forks]) await api("io.pocketenv.sandbox.deleteSandbox", { params: { id: name }, body: {} });
  await shot(page, "snapshots", 1);
  log(`snapshots: taken, refused a bad name, deleted one, started ${copy}, forked into ${forks}`);
}

async function network(page) {
  setStep("network: set an allowlist");
  await pane(page, "network");
  await page.waitForFunction(() => document.querySelector("#net-state").textContent.includes("No policy set"), null, WAIT);
  await page.selectOption("#net-mode", "allowlist");
  await page.fill("#net-allow", "api.example.com\n*.npmjs.org\n10.1.0.0/16");
  await page.fill("#net-deny", "evil.example.com");
  await page.fill("#net-ports", "443, 80");
  await page.click("#net-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#net-state").textContent.includes("in force: allowlist"), null, WAIT);
  const got = await api("io.pocketenv.sandbox.getNetworkPolicy", { params: { id: sb.id } });
  const want = { mode: "allowlist", allowDomains: ["api.example.com", "*.npmjs.org"], denyDomains: ["evil.example.com"], allowCidrs: ["10.1.0.0/16"], denyCidrs: [], ports: [443, 80] };
  if (JSON.stringify(got.policy) !== JSON.stringify(want)) throw new Error(`the policy saved is ${JSON.stringify(got.policy)}`);
  setStep("network: a denied name asked for shows in the denied attempts");
  await stdout("nslookup evil.example.com >/dev/null 2>&1; true");
  await page.click("#net-denials-reload");
  await row(page, "net-denials", "name", "evil.example.com").first().waitFor(WAIT);
  await shot(page, "network", 1);
  setStep("network: a bad entry is refused, the policy stays");
  await page.fill("#net-allow", "not a name");
  await page.click("#net-form button[type=submit]");
  await message(page, /allowDomains\[0\]/);
  if ((await api("io.pocketenv.sandbox.getNetworkPolicy", { params: { id: sb.id } })).policy.allowDomains[0] !== "api.example.com") throw new Error("a refused save changed the policy");
  setStep("network: remove the policy");
  await page.click("#net-reset");
  await page.waitForFunction(() => document.querySelector("#net-state").textContent.includes("No policy set"), null, WAIT);
  if (!(await api("io.pocketenv.sandbox.getNetworkPolicy", { params: { id: sb.id } })).isDefault) throw new Error("the policy is still there");
  log("network: allowlist saved, bad entry refused, policy removed");
}

async function terminalAndList(page, dpr) {
  setStep(`the list and the terminal at ${dpr}x`);
  await page.goto(`${cfg.url}#/`);
  await page.locator(`#list tr[data-name="${sb.name}"]`).waitFor(WAIT);
  await shot(page, "sandboxes", dpr);
  await pane(page, "terminal");
  await waitConnected(page);
  await page.click("#terminal");
  await page.keyboard.type(`clear; ls /root/www; echo do''ne${dpr}\n`);
  await waitLine(page, new RegExp(`^done${dpr}$`), `done${dpr}`);
  await shot(page, "terminal", dpr);
}

// The same panes at 2 device pixels per CSS pixel, once each has shown
// what it lists.
async function hiDpi(browser) {
  setStep("screenshots at 2x");
  const { ctx, page } = await signedIn(browser, 2);
  await terminalAndList(page, 2);
  const ready = { ports: "#ports tr", variables: "#variables tr", secrets: "#secrets tr", files: "#files tr[data-name]", services: "#services tr", backups: "#backups tr", snapshots: "#snapshots tr", network: "#net-state:not(:empty)" };
  for (const name of PANES.slice(1)) {
    await pane(page, name);
    await page.locator(ready[name]).first().waitFor(WAIT);
    if (name === "files") {
      await page.fill("#files-path", "/root/www");
      await page.click("#files-form button[type=submit]");
      await row(page, "files", "name", NOTE).waitFor(WAIT);
    }
    if (name === "services") {
      await row(page, "services", "name", "talker").getByRole("button", { name: "Logs" }).click();
      await page.waitForFunction(() => document.querySelector("#service-logs").textContent.includes("hello"), null, WAIT);
    }
    await shot(page, name, 2);
  }
  await ctx.close();
}

// Removing what the panes made, each through its own button.
async function cleanUp(page) {
  setStep("ports: unexpose");
  await pane(page, "ports");
  await row(page, "ports", "port", "8080").getByRole("button", { name: "Unexpose" }).click();
  await page.waitForSelector("#ports-empty:not([hidden])", WAIT);
  setStep("services: stop and delete");
  await pane(page, "services");
  await row(page, "services", "name", "talker").getByRole("button", { name: "Stop" }).click();
  await page.waitForSelector('#services tr[data-name="talker"][data-status="STOPPED"]', WAIT);
  for (const name of ["talker", "web"]) {
    page.once("dialog", (d) => d.accept());
    await row(page, "services", "name", name).getByRole("button", { name: "Delete" }).click();
    await row(page, "services", "name", name).waitFor({ state: "detached", ...WAIT });
  }
  for (const [kind, name] of [["variables", "GREETING"], ["secrets", "API_KEY"]]) {
    setStep(`${kind}: delete`);
    await pane(page, kind);
    page.once("dialog", (d) => d.accept());
    await row(page, kind, "name", name).getByRole("button", { name: "Delete" }).click();
    await page.waitForSelector(`#${kind}-empty:not([hidden])`, WAIT);
  }
  await until("GREETING to leave the sandbox's environment", async () => (await stdout('printf %s "${GREETING-unset}"')) === "unset");
  log("unexposed, services stopped and deleted, variable and secret deleted");
}

async function main() {
  const browser = await launch();
  const { page } = await signedIn(browser, 1);
  await terminalAndList(page, 1);
  await variables(page);
  await secrets(page);
  await files(page);
  await services(page);
  await ports(page, browser);
  await backups(page);
  await snapshots(page);
  await network(page);
  await hiDpi(browser);
  await cleanUp(page);
}

finish(main);
