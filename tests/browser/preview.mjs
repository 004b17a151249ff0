// A preview opened in a real browser, as its owner does it: Debian's
// chromium, headless, driven by playwright-core. Run by
// tests/integration/test_preview_attack.py, which passes PE_BROWSER as JSON:
//   {home, token, open, out, chromium, wait_title}
// home: the daemon's web page origin (http://localhost:PORT), where the
// owner signed in (the token is put in its local storage); open: the URL
// typed in the address bar; wait_title: the document title that says the
// sandbox's page has run (null: just load). Prints one JSON line on
// stdout: the final URL, its status, and every request the browser made
// (URL and Referer), so the test can look for credentials in any of them.
// Every wait has a deadline; nothing sleeps for a fixed time.
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.env.PE_BROWSER);
const WAIT = { timeout: 60000 };

async function main() {
  // --no-sandbox: the test runs as root, where chromium's own sandbox
  // refuses to start; the pages are on loopback.
  const browser = await chromium.launch({ executablePath: cfg.chromium, args: ["--no-sandbox"] });
  const requests = [];
  let last = null;
  try {
    const page = await browser.newPage();
    page.on("request", (r) =>
      requests.push({ url: r.url(), referer: r.headers()["referer"] || "" }),
    );
    page.on("response", (r) => {
      if (r.request().isNavigationRequest()) last = r.status();
    });
    if (cfg.token) {
      await page.goto(`${cfg.home}/`);
      await page.evaluate((t) => localStorage.setItem("pocketenv.token", t), cfg.token);
    }
    await page.goto(cfg.open);
    if (cfg.wait_title)
      await page.waitForFunction((t) => document.title === t, cfg.wait_title, WAIT);
    else await page.waitForLoadState("load", WAIT);
    await page.screenshot({ path: `${cfg.out}/preview.png` });
    console.log(JSON.stringify({ url: page.url(), status: last, requests }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(`preview.mjs: ${e.stack || e}`);
  process.exit(1);
});
