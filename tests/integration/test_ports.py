"""Exposed ports and the daemon's preview proxy (issue 5, Ports).

One daemon per module (the daemon's default NAT networking), an image
"webby" made from busybox with a page under /www, a CGI echo, a stand-in
`code-server` (busybox httpd on the port it is given) and a WebSocket
echo (busybox nc + a handshake script). Every connection goes to
127.0.0.1 (the daemon) or, from the daemon, to the sandbox's own address
on the test daemon's bridge.
"""
import base64
import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import time
import urllib.parse

import pytest

from conftest import BIN, wait_for
from test_daemon import serving

PAGE = "hello from the sandbox\n"

CGI = """#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "$REQUEST_METHOD $QUERY_STRING"
head -c "${CONTENT_LENGTH:-0}"
"""

# Stand-in for code-server: serves /vscode on the --bind-addr port.
CODE_SERVER = """#!/bin/sh
port=8080
while [ $# -gt 0 ]; do
  case "$1" in --bind-addr) port=${2##*:}; shift;; esac
  shift
done
exec httpd -f -p "$port" -h /vscode
"""

# A WebSocket endpoint: answers the handshake (a correct
# Sec-WebSocket-Accept), then echoes every byte it receives.
WS_ECHO = """#!/bin/sh
key=
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\\r')
  case "$line" in
    Sec-WebSocket-Key:*) key=$(printf '%s' "${line#*:}" | tr -d ' ');;
    "") break;;
  esac
done
acc=$(printf '%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11' "$key" | sha1sum | cut -d' ' -f1 \\
      | xxd -r -p | base64)
printf 'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n'
printf 'Sec-WebSocket-Accept: %s\\r\\n\\r\\n' "$acc"
exec cat
"""

# Answers with the request head it received, as plain text.
HEAD_ECHO = """#!/bin/sh
head=
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\\r')
  [ -z "$line" ] && break
  head="$head$line
"
done
printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\nConnection: close\\r\\n'
printf 'X-Hop: 1\\r\\n\\r\\n%s' "$head"
"""


def write(root, path, text, mode=0o644):
    full = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)
    os.chmod(full, mode)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("ports")) as d:
        images = os.path.join(d.data, "images")
        shutil.copytree(os.path.join(images, "busybox"), os.path.join(images, "webby"),
                        symlinks=True)
        root = os.path.join(images, "webby", "rootfs")
        write(root, "/www/index.html", PAGE)
        write(root, "/www/cgi-bin/echo", CGI, 0o755)
        write(root, "/vscode/index.html", "code-server stand-in\n")
        write(root, "/usr/bin/code-server", CODE_SERVER, 0o755)
        write(root, "/usr/bin/ws-echo", WS_ECHO, 0o755)
        write(root, "/usr/bin/head-echo", HEAD_ECHO, 0o755)
        d.port = int(d.url.rsplit(":", 1)[1])
        yield d


def get(d, path, host=None, token=None, headers=None, method="GET", body=None):
    """(status, headers dict, body bytes) of one request to the daemon."""
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    h = dict(headers or {})
    if host:
        h["Host"] = host
    if token:
        h["Authorization"] = f"Bearer {token}"
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    c.close()
    return out


def expose(d, ident, port, token="owner", **extra):
    return d.call("io.pocketenv.sandbox.exposePort", {"id": ident}, {"port": port, **extra},
                  token=token)


def tag_of(d, ident):
    """The sandbox's preview tag (unique across users), from a previewUrl."""
    st, out = d.call("io.pocketenv.sandbox.getExposedPorts", {"id": ident})
    assert st == 200, out
    urls = [p["previewUrl"] for p in out["ports"]]
    if not urls:  # none exposed yet: expose one for its URL, then take it back
        st, got = expose(d, ident, 65000)
        assert st == 200, got
        urls = [got["previewUrl"]]
        assert d.call("io.pocketenv.sandbox.unexposePort", {"id": ident},
                      {"port": 65000})[0] == 200
    label = urls[0].split("//", 1)[1].split(".", 1)[0]
    return label.rsplit("-", 1)[1]


def host_of(d, ident, port, name=None):
    name = f"{name or ident}-" if name is not False else ""
    return f"{port}-{name}{tag_of(d, ident)}.localhost:{d.port}"


def run(d, ident, command):
    st, out = d.sandbox("exec", ident, {"command": command})
    assert st == 200 and out["exitCode"] == 0, out
    return out


@pytest.fixture(scope="module")
def web(daemon):
    """A running sandbox "web" serving /www on 8080 and a WebSocket echo on 9000."""
    st, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "webby", "name": "web"})
    assert st == 200, sb
    assert daemon.wait_status("web", ["RUNNING", "FAILED"])["status"] == "RUNNING"
    run(daemon, "web", "httpd -p 8080 -h /www")
    run(daemon, "web", "nc -ll -p 9000 -e /usr/bin/ws-echo >/dev/null 2>&1 </dev/null &")
    run(daemon, "web", "nc -ll -p 9100 -e /usr/bin/head-echo >/dev/null 2>&1 </dev/null &")
    sb["tag"] = tag_of(daemon, "web")
    sb["host"] = f"8080-web-{sb['tag']}.localhost:{daemon.port}"
    return sb


def test_expose_and_fetch_through_both_forms(daemon, web):
    st, out = expose(daemon, "web", 8080, description="site")
    assert st == 200, out
    assert out["previewUrl"] == f"http://{web['host']}/"
    # Host form, with the owner's token; the name part is optional.
    for host in (web["host"], f"8080-{web['tag']}.localhost:{daemon.port}"):
        st, h, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(
            get(daemon, "/index.html", host=host, token=daemon.token)), 10, "preview")
        assert body.decode() == PAGE
        assert h["referrer-policy"] == "no-referrer"
    # Path form, by id and by tag; never by name (names are per owner only).
    for ident in (web["id"], web["tag"]):
        st, h, body = get(daemon, f"/p/{ident}/8080/index.html", token=daemon.token)
        assert st == 200 and body.decode() == PAGE
        # Same origin as the daemon's web page: the page gets an opaque one.
        assert h["content-security-policy"].startswith("sandbox ")
    assert get(daemon, "/p/web/8080/index.html", token=daemon.token)[0] == 404
    # The bare path form redirects to the slash form.
    wid = web["id"]
    st, h, _ = get(daemon, f"/p/{wid}/8080", token=daemon.token)
    assert st == 308 and h["location"] == f"/p/{wid}/8080/"
    # The app's own redirects stay under the prefix (httpd: /cgi-bin -> /cgi-bin/).
    st, h, _ = get(daemon, f"/p/{wid}/8080/cgi-bin", token=daemon.token)
    assert st in (301, 302) and h["location"].startswith(f"/p/{wid}/8080/cgi-bin/"), (st, h)
    st, h, _ = get(daemon, "/cgi-bin", host=web["host"], token=daemon.token)
    assert h["location"].startswith("/cgi-bin/"), h
    st, ports = daemon.call("io.pocketenv.sandbox.getExposedPorts", {"id": "web"})
    assert st == 200
    assert [(p["port"], p["description"], p["previewUrl"]) for p in ports["ports"]] == [
        (8080, "site", out["previewUrl"])]


def exposed_8080(daemon):
    """Port 8080 of "web" exposed, whichever test ran first."""
    assert expose(daemon, "web", 8080)[0] in (200, 409)


def test_private_by_default_authz_matrix(daemon, web):
    exposed_8080(daemon)
    st, ports = daemon.call("io.pocketenv.sandbox.getExposedPorts", {"id": "web"})
    share = [p for p in ports["ports"] if p["port"] == 8080][0]["shareUrl"]
    secret = share.split("pe_secret=", 1)[1]
    other = daemon.token_for("did:key:z6MkOtherUserOfPorts")
    host = web["host"]
    html = {"Accept": "text/html,application/xhtml+xml"}
    for form in ({"host": host, "path": "/index.html"},
                 {"host": None, "path": f"/p/{web['id']}/8080/index.html"}):
        g = lambda **kw: get(daemon, form["path"] + kw.pop("q", ""), host=form["host"], **kw)
        assert g()[0] == 401                                   # nobody
        assert g(token="not.a.jwt")[0] == 401                  # junk token
        assert g(token=other)[0] == 404                        # another user: as missing
        assert g(q="?pe_secret=" + "0" * 32)[0] == 403         # wrong secret
        st, h, body = g(q="?pe_secret=" + secret)              # the share URL, a program
        assert st == 200 and body.decode() == PAGE
        cookie = h["set-cookie"].split(";", 1)[0]
        assert cookie == "pe_secret=" + secret and "HttpOnly" in h["set-cookie"]
        assert g(headers={"Cookie": cookie})[0] == 200         # the browser's next request
        # A browser opening the share URL: the secret leaves the address bar
        # (a cookie now) before any page of the sandbox runs.
        st, h, body = g(q="?x=1&pe_secret=" + secret, headers=html)
        assert st == 303 and h["location"] == form["path"] + "?x=1", h
        assert h["set-cookie"].startswith("pe_secret=") and body == b""
        assert h["referrer-policy"] == "no-referrer"
        # The owner's API token is never taken from a URL.
        st, h, body = g(q="?pe_token=" + daemon.token)
        assert st == 400 and b"never taken from a URL" in body, body
        assert daemon.token.encode() not in body
    # Another user cannot list, expose or unexpose the owner's ports.
    assert daemon.call("io.pocketenv.sandbox.getExposedPorts", {"id": "web"},
                       token=other)[0] == 404
    assert expose(daemon, "web", 8081, token=other)[0] == 404
    assert daemon.call("io.pocketenv.sandbox.unexposePort", {"id": "web"}, {"port": 8080},
                       token=other)[0] == 404
    assert expose(daemon, "web", 8082, token=None)[0] == 401


def test_another_user_cannot_take_over_a_preview_by_name(daemon, web):
    """Issue 11, point 2, as it was reproduced: user B names a sandbox like
    A's and exposes a public port on it. Before, A's own requests (A's
    token, A's share URL, both URL forms) reached B's sandbox. Now every
    one of them reaches A's, and B's preview has a host of its own."""
    bob = daemon.token_for("did:key:z6MkPreviewTakeoverBob")
    st, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "webby", "name": "web"}, token=bob)
    assert st == 200, sb
    try:
        assert daemon.wait_status(sb["id"], ["RUNNING", "FAILED"], token=bob)["status"] == "RUNNING"
        st, out = daemon.sandbox("exec", sb["id"], {"command": "mkdir -p /b && echo B-PAGE > "
                                 "/b/index.html && httpd -p 8080 -h /b"}, token=bob)
        assert st == 200 and out["exitCode"] == 0, out
        st, bp = expose(daemon, sb["id"], 8080, token=bob, public=True)
        assert st == 200, bp
        st, ports = daemon.call("io.pocketenv.sandbox.getExposedPorts", {"id": "web"})
        mine = [p for p in ports["ports"] if p["port"] == 8080][0]
        assert bp["previewUrl"] != mine["previewUrl"]
        b_host = bp["previewUrl"].split("//", 1)[1].rstrip("/")
        assert wait_for(lambda: get(daemon, "/index.html", host=b_host)[2] == b"B-PAGE\n", 10,
                        "bob's public preview")
        secret = mine["shareUrl"].split("pe_secret=", 1)[1]
        for how in ({"token": daemon.token}, {"headers": {"Cookie": "pe_secret=" + secret}}):
            for host, path in ((web["host"], "/index.html"),
                               (None, f"/p/{web['id']}/8080/index.html"),
                               (None, f"/p/{web['tag']}/8080/index.html")):
                st, h, body = get(daemon, path, host=host, **how)
                assert (st, body.decode()) == (200, PAGE), (how, host, path, st, body)
        st, h, body = get(daemon, "/index.html?pe_secret=" + secret, host=web["host"])
        assert (st, body.decode()) == (200, PAGE)
        # The name alone resolves to nobody, and A's credentials never open B's.
        assert get(daemon, "/", host=f"8080-web.localhost:{daemon.port}",
                   token=daemon.token)[0] == 404
        st, bp2 = expose(daemon, sb["id"], 8081, token=bob)  # private
        assert st == 200, bp2
        b_host2 = bp2["previewUrl"].split("//", 1)[1].rstrip("/")
        assert get(daemon, "/", host=b_host2, token=daemon.token)[0] == 404
        assert get(daemon, "/", host=b_host2, headers={"Cookie": "pe_secret=" + secret})[0] == 403
    finally:
        daemon.sandbox("deleteSandbox", sb["id"], token=bob)


def signin_link(d, url, token="owner"):
    return d.call("io.pocketenv.port.createPreviewLink", body={"url": url}, token=token)


def test_browser_signs_in_with_a_one_time_link(daemon, web):
    """A browser without a cookie is sent to the web page's sign-in; the
    link it gets back is exchanged for a cookie bound to this preview."""
    exposed_8080(daemon)
    html = {"Accept": "text/html"}
    url = f"http://{web['host']}/index.html?a=1"
    st, h, body = get(daemon, "/index.html?a=1", host=web["host"], headers=html)
    assert st == 302, (st, body)
    want = (f"http://localhost:{daemon.port}/preview.html?to="
            + urllib.parse.quote(url, safe="-._~!$'()*,;:@"))
    assert h["location"] == want
    # Programs get the JSON 401 instead.
    assert get(daemon, "/index.html", host=web["host"])[0] == 401
    # The page asks for a link with the token it holds.
    st, out = signin_link(daemon, url)
    assert st == 200, out
    link = urllib.parse.urlsplit(out["url"])
    assert link.netloc == web["host"] and link.path == "/__pocketenv/auth"
    q = urllib.parse.parse_qs(link.query)
    assert q["to"] == ["/index.html?a=1"] and daemon.token not in out["url"]
    st, h, body = get(daemon, f"{link.path}?{link.query}", host=web["host"], headers=html)
    assert st == 303 and h["location"] == "/index.html?a=1" and body == b""
    assert h["referrer-policy"] == "no-referrer" and h["cache-control"] == "no-store"
    cookie = h["set-cookie"].split(";", 1)[0]
    assert cookie.startswith("pe_preview=") and daemon.token not in cookie
    assert "HttpOnly" in h["set-cookie"] and "SameSite=Lax" in h["set-cookie"]
    st, h, body = get(daemon, "/index.html?a=1", host=web["host"],
                      headers={**html, "Cookie": cookie})
    assert st == 200 and body.decode() == PAGE
    # The link works once.
    st, h, body = get(daemon, f"{link.path}?{link.query}", host=web["host"], headers=html)
    assert st == 403 and b"used already" in body
    # The cookie opens this preview and nothing else: not another port, not
    # the path form of another, not the API.
    assert expose(daemon, "web", 8096)[0] == 200
    other_host = f"8096-web-{web['tag']}.localhost:{daemon.port}"
    assert get(daemon, "/", host=other_host, headers={"Cookie": cookie})[0] == 401
    c = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    c.request("GET", "/xrpc/io.pocketenv.actor.getProfile",
              headers={"Authorization": "Bearer " + cookie.split("=", 1)[1]})
    assert c.getresponse().status == 401
    c.close()
    # Path form: the link comes back to the path form, the cookie is scoped to it.
    purl = f"http://127.0.0.1:{daemon.port}/p/{web['id']}/8080/index.html"
    st, out = signin_link(daemon, purl)
    assert st == 200, out
    link = urllib.parse.urlsplit(out["url"])
    assert link.path == f"/p/{web['id']}/8080/__pocketenv/auth"
    st, h, _ = get(daemon, f"{link.path}?{link.query}", headers=html)
    assert st == 303 and h["location"] == f"/p/{web['id']}/8080/index.html"
    assert f"Path=/p/{web['id']}/8080/" in h["set-cookie"]
    # Another user gets no link; a link for a port that is not exposed, nor
    # for a URL that is not a preview, is refused.
    other = daemon.token_for("did:key:z6MkOtherUserOfPorts")
    assert signin_link(daemon, url, token=other)[0] == 404
    assert signin_link(daemon, f"http://8123-web-{web['tag']}.localhost:1/")[0] == 404
    for bad in ("http://localhost:1/xrpc/x", "ftp://8080-a-b.localhost/", "not a url",
                f"http://8080-evil-{web['tag']}.localhost:1/"):
        st, out = signin_link(daemon, bad)
        assert st in (400, 404), (bad, st, out)
    # A sign-in link that would send the browser off the preview is refused.
    st, out = signin_link(daemon, url)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(out["url"]).query)["pe_code"][0]
    for to in ("//evil.example/", "/\\evil.example", "https://evil.example/", ""):
        st, h, _ = get(daemon, "/__pocketenv/auth?pe_code=" + code + "&to="
                       + urllib.parse.quote(to, safe=""), host=web["host"], headers=html)
        assert st == 400 and "location" not in h, (to, st)


def test_public_port_needs_no_credentials(daemon, web):
    st, out = expose(daemon, "web", 8090, public=True)
    assert st == 200 and "shareUrl" not in out
    run(daemon, "web", "httpd -p 8090 -h /www")
    st, h, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(
        get(daemon, "/", host=f"8090-web-{web['tag']}.localhost:{daemon.port}")), 10,
        "public preview")
    assert body.decode() == PAGE
    assert expose(daemon, "web", 8091, public="yes")[0] == 400


def test_request_is_forwarded_with_body_and_query(daemon, web):
    st, h, body = get(daemon, "/cgi-bin/echo?a=1&b=x%20y&pe_code=abc",
                      host=web["host"], method="POST", body=b"payload-123", token=daemon.token)
    assert st == 200, body
    assert body.decode() == "POST a=1&b=x%20y\npayload-123"  # our parameter never reaches it
    assert h["content-type"].startswith("text/plain")
    # An Authorization header that is not our token is the app's: passed on,
    # while a secret cookie opens the preview.
    st, ports = daemon.call("io.pocketenv.sandbox.getExposedPorts", {"id": "web"})
    secret = [p for p in ports["ports"] if p["port"] == 8080][0]["shareUrl"].split("=", 1)[1]
    st, h, body = get(daemon, "/cgi-bin/echo?x", host=web["host"],
                      headers={"Authorization": "Bearer app-token",
                               "Cookie": f"theme=dark; pe_secret={secret}"})
    assert st == 200 and body.decode() == "GET x\n", body


def test_large_answer_is_streamed(daemon, web):
    """8 MiB through the proxy, read slowly at first: backpressure, not a
    buffer of the whole answer; HEAD gets the headers only."""
    run(daemon, "web", "dd if=/dev/zero of=/www/big bs=1M count=8 2>/dev/null")
    c = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    c.request("GET", "/big", headers={"Host": web["host"],
                                      "Authorization": f"Bearer {daemon.token}"})
    r = c.getresponse()
    assert r.status == 200
    first = r.read(1000)
    time.sleep(0.5)  # the proxy must wait for us, not fail or buffer without end
    rest = r.read()
    c.close()
    assert len(first) + len(rest) == 8 << 20 and not (first + rest).strip(b"\0")
    st, h, body = get(daemon, "/big", host=web["host"], token=daemon.token, method="HEAD")
    assert st == 200 and body == b""


def test_cli_expose_ports_unexpose(daemon, web):
    env = dict(os.environ, POCKETENV_API_URL=daemon.url, POCKETENV_TOKEN=daemon.token)
    cli = lambda *a: subprocess.run([BIN, *a], env=env, capture_output=True, text=True,
                                    timeout=30)
    p = cli("expose", "web", "8097", "cli port")
    assert p.returncode == 0, p.stderr
    assert f"http://8097-web-{web['tag']}.localhost:{daemon.port}/" in p.stdout
    p = cli("ports", "web")
    assert p.returncode == 0 and "8097" in p.stdout and "cli port" in p.stdout, p.stdout
    assert cli("unexpose", "web", "8097").returncode == 0
    assert "8097" not in cli("ports", "web").stdout
    p = cli("expose", "web", "http")
    assert p.returncode == 2 and "port must be an integer" in p.stderr
    p = cli("vscode", "web")  # the test image has a stand-in code-server
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"VS Code Server: http://13337-web-{web['tag']}.localhost:{daemon.port}/\n"


def test_forwarded_head(daemon, web):
    """What the sandbox's server receives: our credentials and hop-by-hop
    headers gone, the app's own kept, X-Forwarded-* set."""
    assert expose(daemon, "web", 9100)[0] == 200
    st, ports = daemon.call("io.pocketenv.sandbox.getExposedPorts", {"id": "web"})
    secret = [p for p in ports["ports"] if p["port"] == 9100][0]["shareUrl"].split("=", 1)[1]
    host = f"9100-web-{web['tag']}.localhost:{daemon.port}"

    def fetch(**kw):
        r = get(daemon, "/a%20b/c?q=1&pe_secret=" + secret, host=host, **kw)
        return r if r[0] == 200 else None
    st, h, body = wait_for(lambda: fetch(headers={
        "Authorization": "Bearer app-token", "Cookie": "theme=dark; pe_token=x",
        "Keep-Alive": "timeout=5", "Connection": "keep-alive, X-Private",
        "X-Private": "drop me", "X-App": "keep me", "X-Forwarded-For": "1.2.3.4"}),
        10, "head echo")
    lines = body.decode().splitlines()
    assert lines[0] == "GET /a%20b/c?q=1 HTTP/1.0", lines
    head = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
    assert head["host"] == host
    assert head["authorization"] == "Bearer app-token"  # not our token: the app's
    assert head["cookie"] == "theme=dark"                # our cookies never leave
    assert head["x-app"] == "keep me"
    assert "x-private" not in head and "keep-alive" not in head
    assert head["connection"] == "close"
    assert head["x-forwarded-for"] == "1.2.3.4, 127.0.0.1"
    assert head["x-forwarded-host"] == host and head["x-forwarded-proto"] == "http"
    assert h["x-hop"] == "1"  # the app's answer headers come back
    # With the owner's token as Bearer: that header is ours and stays here.
    st, h, body = get(daemon, f"/p/{web['id']}/9100/x", token=daemon.token)
    assert st == 200
    head = body.decode().lower()
    assert "authorization" not in head
    assert f"x-forwarded-prefix: /p/{web['id']}/9100".lower() in head


def test_bad_input_and_duplicates(daemon, web):
    st, out = expose(daemon, "web", 8080)
    assert st == 409 and out["error"] == "AlreadyExists", out
    for bad in (80, 1024, 65536, -1, "x"):
        st, out = expose(daemon, "web", bad)
        assert st == 400 and out["error"] == "InvalidRequest", (bad, out)
    assert expose(daemon, "nope", 8080)[0] == 404
    st, out = expose(daemon, "web", 8085, description="d" * 2000)
    assert st == 400
    # Hostile preview URLs: clean errors, the daemon stays up.
    for path, host in (("/p/", None), ("/p/web/", None), ("/p/web/x/", None),
                       ("/p/web/99999/", None), ("/", f"web.localhost:{daemon.port}"),
                       ("/", f"x-web.localhost:{daemon.port}"),
                       ("/", f"8080-.localhost:{daemon.port}"),
                       ("/", f"8080--{web['tag']}.localhost:{daemon.port}"),
                       ("/", f"8080-web.localhost:{daemon.port}"),  # the old form: no tag
                       ("/", f"8080-bank-{web['tag']}.localhost:{daemon.port}")):
        assert get(daemon, path, host=host, token=daemon.token)[0] == 404, (path, host)
    assert daemon.healthy()


def test_unknown_refused_and_stopped(daemon, web):
    # Not exposed: 404. Exposed but nothing listens: 502 that says so.
    assert get(daemon, "/", host=f"8081-web-{web['tag']}.localhost:{daemon.port}",
               token=daemon.token)[0] == 404
    assert get(daemon, "/", host=f"8080-nope.localhost:{daemon.port}",
               token=daemon.token)[0] == 404
    assert expose(daemon, "web", 9999)[0] == 200
    st, h, body = get(daemon, "/", host=f"9999-web-{web['tag']}.localhost:{daemon.port}",
                      token=daemon.token)
    assert st == 502 and b"refused" in body, body
    assert daemon.healthy()


def test_websocket_passes_through(daemon, web):
    assert expose(daemon, "web", 9000)[0] == 200
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET /chat HTTP/1.1\r\nHost: 9000-web-{web['tag']}.localhost:{daemon.port}\r\n"
           f"Authorization: Bearer {daemon.token}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
           f"Sec-WebSocket-Version: 13\r\n\r\n").encode()

    def attempt():
        s = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        s.sendall(req)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            s.close()
            return None
        return s, head

    s, head = wait_for(attempt, 10, "WebSocket upgrade through the proxy")
    want = base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    accept = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")
              if l.lower().startswith(b"sec-websocket-accept:")]
    assert accept == [want.encode()], head
    # A masked text frame "hello"; the echo sends the same bytes back.
    mask = os.urandom(4)
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"hello"))
    frame = bytes([0x81, 0x80 | 5]) + mask + payload
    rest = head.split(b"\r\n\r\n", 1)[1]
    s.sendall(frame)
    got = rest
    while len(got) < len(frame):
        chunk = s.recv(4096)
        assert chunk, "connection closed"
        got += chunk
    assert got == frame
    big = os.urandom(300000)  # both directions under backpressure
    s.sendall(big)
    got = b""
    while len(got) < len(big):
        chunk = s.recv(65536)
        assert chunk
        got += chunk
    assert got == big
    s.close()
    assert daemon.healthy()


def test_unexpose(daemon, web):
    assert expose(daemon, "web", 8095)[0] == 200
    run(daemon, "web", "httpd -p 8095 -h /www")
    host = f"8095-web-{web['tag']}.localhost:{daemon.port}"
    wait_for(lambda: get(daemon, "/", host=host, token=daemon.token)[0] == 200, 10, "preview")
    st, out = daemon.call("io.pocketenv.sandbox.unexposePort", {"id": "web"}, {"port": 8095})
    assert st == 200, out
    assert get(daemon, "/", host=host, token=daemon.token)[0] == 404
    st, out = daemon.call("io.pocketenv.sandbox.unexposePort", {"id": "web"}, {"port": 8095})
    assert st == 404
    ports = daemon.call("io.pocketenv.sandbox.getExposedPorts", {"id": "web"})[1]["ports"]
    assert 8095 not in [p["port"] for p in ports]


def test_vscode(daemon, web):
    st, out = daemon.call("io.pocketenv.sandbox.exposeVscode", {"id": "web"}, post=True)
    assert st == 200, out
    assert out["previewUrl"] == f"http://13337-web-{web['tag']}.localhost:{daemon.port}/"
    host = f"13337-web-{web['tag']}.localhost:{daemon.port}"
    st, h, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(
        get(daemon, "/", host=host, token=daemon.token)), 15, "code-server preview")
    assert body == b"code-server stand-in\n"
    # Again: the same URL, code-server is not started twice.
    st, again = daemon.call("io.pocketenv.sandbox.exposeVscode", {"id": "web"}, post=True)
    assert st == 200 and again["previewUrl"] == out["previewUrl"]
    out = run(daemon, "web", "ps | grep -c '[h]ttpd -f -p 13337'")
    assert out["stdout"].strip() == "1"
    # An image without code-server: a 400 that says so.
    st, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "busybox", "name": "plain"})
    assert daemon.wait_status("plain", ["RUNNING", "FAILED"])["status"] == "RUNNING"
    st, out = daemon.call("io.pocketenv.sandbox.exposeVscode", {"id": "plain"}, post=True)
    assert st == 400 and "no code-server" in out["message"], out
    assert daemon.call("io.pocketenv.sandbox.getExposedPorts",
                       {"id": "plain"})[1]["ports"] == []


def test_stopped_sandbox_is_502(daemon, web):
    st, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "webby", "name": "sleepy"})
    assert daemon.wait_status("sleepy", ["RUNNING", "FAILED"])["status"] == "RUNNING"
    assert expose(daemon, "sleepy", 8080)[0] == 200
    assert daemon.sandbox("stopSandbox", "sleepy")[0] == 200
    st, h, body = get(daemon, "/", host=host_of(daemon, "sleepy", 8080), token=daemon.token)
    assert st == 502 and b"not running" in body, body
    assert daemon.healthy()
