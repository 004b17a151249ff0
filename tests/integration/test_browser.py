"""The web page in Debian's chromium (headless), driven by playwright-core.

A real daemon (free loopback port, own data directory, the busybox image)
serves the page. tests/browser/terminal.mjs signs in with the owner's
token, follows the list while another client changes it (FAILED sandboxes
with their reasons among eight), creates, starts, stops and deletes a
sandbox, and uses its terminal: full height, in a tab of its own, `echo
hi`, `stty size` after a resize, underscores drawn at 1x, UTF-8 typed.
tests/browser/panes.mjs drives each pane of a sandbox (ports and
previews, variables, secrets, files, services and logs, backups, network
policy) and
saves screenshots of each at 1x and 2x device pixel ratio in
tests/browser/screenshots/. Needs what scripts/setup installs: chromium
and the npm packages (npm ci).
"""
import contextlib
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import ROOT
from test_daemon import serving

CHROMIUM = "/usr/bin/chromium"
SHOTS = os.path.join(ROOT, "tests", "browser", "screenshots")


@pytest.fixture
def daemon(tmp_path):
    with serving(tmp_path) as d:
        yield d


def get(url, accept=None, headers=None):
    req = urllib.request.Request(url)
    if accept:
        req.add_header("Accept", accept)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def browser(cfg, script):
    node = shutil.which("node")
    assert node, "node is missing: run scripts/setup"
    assert os.access(CHROMIUM, os.X_OK), "chromium is missing: run scripts/setup"
    assert os.path.isdir(os.path.join(ROOT, "node_modules", "playwright-core")), \
        "npm packages are missing: run scripts/setup (npm ci)"
    env = dict(os.environ, PE_BROWSER=json.dumps(dict(cfg, chromium=CHROMIUM)))
    p = subprocess.run([node, os.path.join(ROOT, "tests", "browser", script)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    return p


def failed_sandboxes(daemon, n):
    """n sandboxes FAILED (their image has no root filesystem), with the
    reason the API gives for each."""
    from test_daemon import broken_image
    base = broken_image(daemon.data)
    out = []
    for i in range(n):
        st, o = daemon.call("io.pocketenv.sandbox.createSandbox",
                            body={"name": f"broken-{i}", "base": base})
        assert st == 200, o
        sb = daemon.wait_status(o["id"], ["FAILED"], timeout=30)
        out.append({"name": f"broken-{i}", "reason": sb["statusReason"]})
    assert all(f["reason"] for f in out), out
    return out


def test_page_and_terminal_in_chromium(daemon, tmp_path):
    cfg = {"url": daemon.url + "/", "token": daemon.token, "image": "busybox",
           "out": str(tmp_path),
           "terminal": os.environ.get("PE_BROWSER_TERMINAL", "1") == "1",
           # With the one it creates, the page lists nine sandboxes, as
           # when its terminal was squeezed to 13 rows under them.
           "failed": failed_sandboxes(daemon, 8)}
    browser(cfg, "terminal.mjs")
    shots = ["sandboxes.png"] + (["terminal.png", "terminal-tab.png"] if cfg["terminal"] else [])
    for s in shots:
        assert os.path.getsize(tmp_path / s) > 1000, s


def test_each_pane_in_chromium(daemon, tmp_path):
    """Ports and previews (open, share), variables, secrets (never shown
    back), files (upload, download), services and their logs, backups
    (make, restore), snapshots (take, refuse a bad name, delete, start a
    sandbox from one, fork), the terminal: each used in the page and checked
    through the API; a screenshot of each at 1x and 2x."""
    st, o = daemon.call("io.pocketenv.sandbox.createSandbox",
                        body={"name": "panebox", "base": "busybox"})
    assert st == 200, o
    daemon.wait_status(o["id"], ["RUNNING"], timeout=60)
    os.makedirs(SHOTS, exist_ok=True)
    panes = ["sandboxes", "terminal", "ports", "variables", "secrets", "files", "services",
             "backups", "snapshots"]
    for p in panes:
        for dpr in (1, 2):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHOTS, f"{p}-{dpr}x.png"))
    browser({"url": daemon.url.replace("127.0.0.1", "localhost") + "/", "api": daemon.url + "/",
             "token": daemon.token, "shots": SHOTS, "out": str(tmp_path),
             "sandbox": {"id": o["id"], "name": "panebox"}}, "panes.mjs")
    for p in panes:
        one, two = (os.path.getsize(os.path.join(SHOTS, f"{p}-{dpr}x.png")) for dpr in (1, 2))
        assert one > 1000 and two > one, (p, one, two)


def test_static_files(daemon):
    """Content types, cache validation, the text banner, and no way out of
    the page's folder."""
    # curl and other clients that do not ask for HTML keep the text banner.
    st, h, body = get(daemon.url + "/")
    assert st == 200 and h["Content-Type"].startswith("text/plain")
    assert b"owner: did:key:" in body and b"public key: " in body
    st, h, page = get(daemon.url + "/", accept="text/html,*/*;q=0.8")
    assert st == 200 and h["Content-Type"] == "text/html; charset=utf-8"
    assert b"<title>Pocketenv</title>" in page and b"owner: did:key:" in page
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    assert h["X-Content-Type-Options"] == "nosniff"

    want = {"/index.html": "text/html", "/app.js": "text/javascript",
            "/api.js": "text/javascript", "/ui.js": "text/javascript",
            "/term.js": "text/javascript", "/panes.js": "text/javascript",
            "/tar.js": "text/javascript",
            "/xterm.mjs": "text/javascript", "/addon-fit.mjs": "text/javascript",
            "/xterm.css": "text/css", "/app.css": "text/css"}
    for path, ctype in want.items():
        st, h, body = get(daemon.url + path)
        assert st == 200, path
        assert h["Content-Type"].startswith(ctype + ";"), (path, h["Content-Type"])
        assert h["Cache-Control"] == "no-cache", path
        assert len(body) == int(h["Content-Length"]) and body, path
        # The browser's copy is revalidated: same ETag, 304 and no body.
        st2, h2, body2 = get(daemon.url + path, headers={"If-None-Match": h["ETag"]})
        assert (st2, body2, h2["ETag"]) == (304, b"", h["ETag"]), path
    # The npm package's file, byte for byte.
    with open(os.path.join(ROOT, "node_modules", "@xterm", "xterm", "lib", "xterm.mjs"),
              "rb") as f:
        assert get(daemon.url + "/xterm.mjs")[2] == f.read()

    # Only GET and HEAD: the page's files are read-only.
    req = urllib.request.Request(daemon.url + "/app.js", data=b"x", method="POST")
    try:
        urllib.request.urlopen(req, timeout=10)
        assert False, "POST /app.js was accepted"
    except urllib.error.HTTPError as e:
        assert e.code == 405
    req = urllib.request.Request(daemon.url + "/app.js", method="HEAD")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
        assert r.read() == b""

    for path in ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd",
                 "//etc/passwd", "/web/index.html", "/meson.build", "/vendor.sh",
                 "/.gitignore", "/app.js/..", "/node_modules/", "/xterm.mjs.map"]:
        st, body = raw_get(daemon.url, path)
        assert st == 404, (path, st)
        assert b"root:" not in body


def raw_get(base, path):
    """GET with the path sent exactly as given (urllib would normalise)."""
    import http.client
    host = base[len("http://"):]
    c = http.client.HTTPConnection(host, timeout=10)
    c.putrequest("GET", path, skip_accept_encoding=True)
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def test_pages_need_no_inline_script(daemon):
    """The CSP allows scripts from the daemon's origin only (default-src
    'self', no 'unsafe-inline' for scripts): every script of the pages is a
    file, and no element carries an event-handler attribute, so nothing
    of the page depends on what the policy forbids."""
    import re
    st, h, _ = get(daemon.url + "/", accept="text/html")
    csp = h["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src" not in csp, csp
    for path in ("/", "/preview.html"):
        st, h, page = get(daemon.url + path, accept="text/html")
        assert st == 200, path
        html = page.decode()
        for tag in re.findall(r"<script\b[^>]*>", html, re.I):
            assert re.search(r'\bsrc="/[a-z-]+\.js"', tag), (path, tag)
        bodies = re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S | re.I)
        assert bodies and all(not b.strip() for b in bodies), (path, bodies)
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), path
        assert "javascript:" not in html.lower(), path

