"""The attack of issue 11, point 1, in a real browser: a page served from
a sandbox tries to get its owner's API token when the owner opens it.

Before the fix the documented way to open a private preview was
?pe_token=<API token>: the page read it from location.href, every
subresource sent it in Referer, and CORS "*" let the page call the API
with it. Now the owner's browser signs in through the web page's
preview.html and a one-time code; this test opens the preview the way a
user does and checks, from inside the sandbox (what its page saw and what
its server received) and from the browser (every request it made), that
neither the token nor the code reached the sandbox, and that the page
could not call the API. Needs chromium and the npm packages (scripts/setup).
"""
import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT
from test_ports import daemon, expose, get, run, tag_of, write  # noqa: F401 (fixtures)

CHROMIUM = "/usr/bin/chromium"
SCRIPT = os.path.join(ROOT, "tests", "browser", "preview.mjs")

# The sandbox's page: reports what it can see, tries the API, and loads a
# subresource whose Referer the sandbox's server records.
ATTACK = """<!doctype html><title>attack</title>
<p>hello from the sandbox</p>
<img src="/cgi-bin/ref">
<script>
(async () => {
  const seen = {href: location.href, referrer: document.referrer, cookie: document.cookie,
                storage: JSON.stringify(localStorage)};
  const api = `http://localhost:${location.port}/xrpc/io.pocketenv.actor.getProfile`;
  try {
    const r = await fetch(api, {credentials: "include"});
    seen.api = `status ${r.status} ${await r.text()}`;
  } catch (e) {
    seen.api = `blocked ${e.message}`;
  }
  await fetch("/cgi-bin/log", {method: "POST", body: JSON.stringify(seen)});
  document.title = "reported";
})();
</script>
"""

LOG_CGI = """#!/bin/sh
head -c "${CONTENT_LENGTH:-0}" >> /tmp/seen.log
echo >> /tmp/seen.log
printf 'Content-Type: text/plain\\r\\n\\r\\nok'
"""

REF_CGI = """#!/bin/sh
echo "referer=$HTTP_REFERER query=$QUERY_STRING" >> /tmp/seen.log
printf 'Content-Type: text/plain\\r\\n\\r\\n'
"""


def browse(daemon, tmp_path, open_url, token, wait_title):
    node = shutil.which("node")
    assert node and os.access(CHROMIUM, os.X_OK), "node and chromium: run scripts/setup"
    cfg = {"home": f"http://localhost:{daemon.port}", "token": token, "open": open_url,
           "out": str(tmp_path), "chromium": CHROMIUM, "wait_title": wait_title}
    p = subprocess.run([node, SCRIPT], capture_output=True, text=True, timeout=180,
                       env=dict(os.environ, PE_BROWSER=json.dumps(cfg)))
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def victim(daemon):
    root = os.path.join(daemon.data, "images", "webby", "rootfs")
    write(root, "/www/attack.html", ATTACK)
    write(root, "/www/cgi-bin/log", LOG_CGI, 0o755)
    write(root, "/www/cgi-bin/ref", REF_CGI, 0o755)
    st, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "webby", "name": "victim"})
    assert st == 200, sb
    assert daemon.wait_status("victim", ["RUNNING", "FAILED"])["status"] == "RUNNING"
    run(daemon, "victim", "httpd -p 8080 -h /www")
    st, out = expose(daemon, "victim", 8080)
    assert st == 200, out
    return out["previewUrl"]


def seen_in_sandbox(daemon):
    st, out = daemon.sandbox("exec", "victim", {"command": "cat /tmp/seen.log; rm -f /tmp/seen.log"})
    assert st == 200, out
    return out["stdout"]


def test_owner_opens_preview_and_the_page_gets_no_credential(daemon, victim, tmp_path):
    got = browse(daemon, tmp_path, victim + "attack.html?x=1", daemon.token, "reported")
    # The browser ended on the page itself, with nothing of ours in its URL.
    assert got["url"] == victim + "attack.html?x=1", got["url"]
    seen = seen_in_sandbox(daemon)
    lines = [l for l in seen.splitlines() if l.startswith("{")]
    assert len(lines) == 1, seen
    page = json.loads(lines[0])
    assert page["href"] == victim + "attack.html?x=1"
    assert page["referrer"] == "" and page["cookie"] == "" and page["storage"] == "{}"
    # The API answered nothing the page could read (no CORS for a preview
    # origin, and it holds no credential the API takes).
    assert not page["api"].startswith("status 200"), page["api"]
    assert "did:key" not in page["api"]
    # Subresources sent no Referer at all.
    assert "referer= " in seen and "pe_code" not in seen, seen
    # Nowhere: not in what the page saw, not in any URL or Referer the
    # browser sent (the sign-in code only ever went to the daemon).
    assert daemon.token not in seen
    for r in got["requests"]:
        assert daemon.token not in r["url"] and daemon.token not in r["referer"], r
        if "pe_code=" in r["url"]:
            assert "/__pocketenv/auth?" in r["url"], r
        assert "pe_code" not in r["referer"], r


def test_old_way_with_the_token_in_the_url_is_refused(daemon, victim, tmp_path):
    """The attack as it was reproduced: ?pe_token= in the address bar."""
    got = browse(daemon, tmp_path, victim + "attack.html?pe_token=" + daemon.token, None, None)
    assert got["status"] == 400
    assert seen_in_sandbox(daemon) == ""  # the sandbox's page never ran


def test_stranger_browser_gets_the_sign_in_page(daemon, victim, tmp_path):
    """No token in the browser: the small sign-in page, never raw JSON or a
    token field on the preview's own origin."""
    got = browse(daemon, tmp_path, victim + "attack.html", None, None)
    assert got["url"].startswith(f"http://localhost:{daemon.port}/preview.html?to="), got["url"]
    assert got["status"] == 200
    assert seen_in_sandbox(daemon) == ""
