// "Sign in with your handle" on the daemon's web page (web/app.js), as a
// person does it: type the handle, sign in on the PDS's own page in the
// window that opens, and find the page signed in.
//
//   PE_SIGNIN='{"url", "handle", "password", "chromium"}' node tests/atproto/web-signin.mjs
//
// url: the daemon's. Prints {"who": TEXT, "urls": [every URL requested]}
// or exits 1 with what the pages showed.
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.env.PE_SIGNIN);
const WAIT = { timeout: 60000 };

// --no-sandbox: the tests run as root; the only pages are on loopback.
const browser = await chromium.launch({ executablePath: cfg.chromium, args: ["--no-sandbox"] });
const urls = [];
let page;
try {
  const ctx = await browser.newContext();
  ctx.on("request", (r) => urls.push(r.url()));
  page = await ctx.newPage();
  await page.goto(cfg.url, WAIT);
  await page.fill("#handle", cfg.handle, WAIT);
  const [pds] = await Promise.all([ctx.waitForEvent("page", WAIT), page.click("#handle-form button")]);
  await pds.fill('input[name="password"]', cfg.password, WAIT);
  await pds.click('button[type="submit"]', WAIT);
  const consent = pds.getByRole("button", { name: /^(accept|authorize|allow)$/i });
  await Promise.race([
    pds.waitForURL(`${cfg.url}/oauth/callback**`, WAIT),
    consent.click(WAIT).then(() => pds.waitForURL(`${cfg.url}/oauth/callback**`, WAIT)),
  ]);
  await page.waitForFunction(
    (h) => document.getElementById("who").textContent.includes(h), cfg.handle, WAIT);
  const who = await page.evaluate(() => document.getElementById("who").textContent);
  process.stdout.write(JSON.stringify({ who, urls }) + "\n");
} catch (e) {
  const text = page ? await page.evaluate(() => document.body.innerText).catch(() => "") : "";
  console.error(`web sign-in failed: ${e.message}\npage: ${text.slice(0, 2000)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
