// Signs a user in on a PDS's own authorization page, as a person would in
// a browser, and prints where the PDS sent the browser back: the OAuth
// redirect the client under test must finish.
//
//   PE_SIGNIN='{"url", "password", "redirect", "chromium", "follow", "proxy", "waitText"}' \
//     node tests/atproto/signin.mjs
//
// url: the authorize URL the client built; redirect: its redirect_uri
// prefix (http://127.0.0.1:PORT/...), intercepted here so nothing needs to
// listen there, unless follow is true: then the browser goes there (the
// daemon's own callback) and the page it shows is reported too;
// chromium: Debian's (headless, through playwright-core); proxy (optional):
// see below.
// Prints {"callback": URL, "page": TEXT} or exits 1 with what the page showed.
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.env.PE_SIGNIN);
const WAIT = { timeout: 60000 };

// --no-sandbox: the tests run as root, where chromium's sandbox refuses
// to start; the only pages are the loopback PDS's.
const browser = await chromium.launch({ executablePath: cfg.chromium, args: ["--no-sandbox"] });
let page;
try {
  page = await browser.newPage();
  // proxy: {"from": "https://ORIGIN", "to": "http://127.0.0.1:PORT"}: the
  // browser's requests to a daemon's public https URL reach the daemon on
  // loopback, as through the TLS proxy in front of it.
  if (cfg.proxy) {
    await page.route(`${cfg.proxy.from}/**`, async (route) => {
      const url = cfg.proxy.to + route.request().url().slice(cfg.proxy.from.length);
      const response = await route.fetch({ url });
      await route.fulfill({ response });
    });
  }
  let resolveCallback;
  const callback = new Promise((r) => (resolveCallback = r));
  if (cfg.follow) {
    page.on("framenavigated", (f) => {
      if (f === page.mainFrame() && f.url().startsWith(cfg.redirect)) resolveCallback(f.url());
    });
  } else {
    await page.route(`${cfg.redirect}**`, async (route) => {
      resolveCallback(route.request().url());
      await route.fulfill({ status: 200, contentType: "text/plain", body: "signed in" });
    });
  }
  await page.goto(cfg.url, WAIT);
  await page.fill('input[name="password"]', cfg.password, WAIT);
  await page.click('button[type="submit"]', WAIT);
  // The consent screen, when the server shows one for a new client.
  const consent = page.getByRole("button", { name: /^(accept|authorize|allow)$/i });
  const url = await Promise.race([
    callback,
    consent.click(WAIT).then(() => callback),
  ]);
  let text = "";
  if (cfg.follow) {
    await page.waitForLoadState("load", WAIT);
    // waitText: the page's own script has work to finish (the token handed
    // to upstream's CLI): wait until it says so.
    if (cfg.waitText)
      await page.waitForFunction((t) => document.body.innerText.includes(t), cfg.waitText, WAIT);
    text = await page.evaluate(() => document.body.innerText);
  }
  process.stdout.write(JSON.stringify({ callback: url, page: text }) + "\n");
} catch (e) {
  const text = page ? await page.evaluate(() => document.body.innerText).catch(() => "") : "";
  console.error(`sign-in failed: ${e.message}\npage: ${text.slice(0, 2000)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
