"""`pocketenv serve`: the XRPC API as a client sees it.

One daemon per module, on a free loopback port and its own data
directory, with the busybox image built into it. Teardown deletes what is
left through the API, stops the daemon with SIGTERM (it must exit 0) and
checks that no sandbox process or cgroup of ours is left behind.
"""
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import (BIN, LAYERS_DIR, cgroups_left, check_xrpc_answer, layers_of, our_cgroups,
                      run_files, sandbox_processes, wait_for)

SANDBOX_METHODS = ["getSandbox", "startSandbox", "stopSandbox", "deleteSandbox", "exec",
                   "getNetworkPolicy", "putNetworkPolicy", "getNetworkDenials",
                   "getIdlePolicy", "putIdlePolicy", "restoreSnapshot"]
GET_METHODS = ("getSandbox", "getNetworkPolicy", "getNetworkDenials", "getIdlePolicy")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, data, port, token_file):
        self.data = data
        self.url = f"http://127.0.0.1:{port}"
        self.token_file = token_file
        self.proc = None
        self.token = None

    def call(self, nsid, params=None, body=None, token="owner", raw=None, post=None,
             headers=None, timeout=30):
        """(status, parsed JSON or None). token: "owner", None, or a JWT."""
        if token == "owner":
            token = self.token
        q = "?" + urllib.parse.urlencode(params) if params else ""
        if post is None:
            post = body is not None or raw is not None
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                             else None)
        if post and data is None:
            data = b""
        req = urllib.request.Request(f"{self.url}/xrpc/{nsid}{q}", data=data,
                                     method="POST" if post else "GET")
        if data:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        value = json.loads(text) if text else None
        check_xrpc_answer(nsid, status, value)
        return status, value

    def sandbox(self, method, ident, body=None, token="owner"):
        nsid = f"io.pocketenv.sandbox.{method}"
        post = method not in GET_METHODS
        if method == "putNetworkPolicy" and body is None:
            body = {"policy": {"mode": "none"}}
        if method == "putIdlePolicy" and body is None:
            body = {"action": "pause", "timeout": 3600}
        if method == "exec" and body is None:
            body = {"command": "true"}
        if method == "restoreSnapshot" and body is None:
            body = {"snapshot": "nosuch"}
        if method == "startSandbox" and body is None:
            body = {}  # the lexicon declares an input: a body is required
        return self.call(nsid, {"id": ident}, body, token=token, post=post)

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def healthy(self):
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def token_for(self, did, ttl=600):
        p = subprocess.run([BIN, "--data", self.data, "token", "create", "--did", did,
                            "--ttl", str(ttl)], capture_output=True, text=True, check=True)
        return p.stdout.strip()

    def jwt(self, claims, key=None):
        """A token signed with the daemon's own HS256 key (or key)."""
        if key is None:
            with open(os.path.join(self.data, "keys", "jwt-hs256.key"), "rb") as f:
                key = f.read()
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64(json.dumps(claims).encode())
        sig = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
        return (head + b"." + body + b"." + sig).decode()

    def wait_status(self, ident, want, timeout=20, token="owner"):
        def check():
            st, o = self.sandbox("getSandbox", ident, token=token)
            return o["sandbox"] if st == 200 and o["sandbox"]["status"] in want else None
        return wait_for(check, timeout, f"sandbox {ident} to be {want}")


def broken_image(data, name="broken"):
    """An image the catalog lists (its image.json) without a root
    filesystem: a create from it is accepted and its sandbox then FAILED,
    quickly and without running anything."""
    path = os.path.join(data, "images", name)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "image.json"), "w") as f:
        json.dump({"name": name, "created": 0, "source": "test: no rootfs", "size": 0}, f)
    return name


@contextlib.contextmanager
def serving(tmp, cls=Daemon, extra=(), check_leaks=True, env=None):
    """`pocketenv serve` on a free loopback port, data in tmp/data with the
    busybox image built, log in tmp/daemon.log. On the way out: the
    sandboxes of the owner (and of d.others' tokens) are deleted through the
    API, SIGTERM must stop it with status 0, and, with check_leaks, no
    sandbox process, cgroup or runtime sandbox of it may be left."""
    data = str(tmp / "data")
    env = dict(os.environ, **(env or {}))
    images = env.get("POCKETENV_IMAGES") or os.path.join(data, "images")
    if not os.path.exists(os.path.join(images, "busybox")):  # else a restart, or shared images
        subprocess.run([BIN, "--data", data, "image", "build", "busybox"], check=True,
                       capture_output=True, text=True, env=env)
    before_procs = set(sandbox_processes(data))
    before_cgroups = set(our_cgroups())
    d = cls(data, free_port(), str(tmp / "token.json"))
    d.tmp = tmp
    d.log_path = str(tmp / "daemon.log")
    log = open(d.log_path, "w")
    d.proc = subprocess.Popen([BIN, "serve", "--listen", d.url[len("http://"):], "--data", data,
                               "--token-file", d.token_file] + list(extra), stderr=log, env=env)
    try:
        wait_for(lambda: d.healthy() or d.proc.poll() is not None, 10, "daemon /healthz")
        assert d.proc.poll() is None, d.log_text()
        with open(d.token_file) as f:
            d.token = json.load(f)["token"]
        yield d
    finally:
        sandbox_processes(data)  # remembers its sandboxes' keys before they go
        boot_files = run_files(data)
        if d.proc.poll() is None and d.token:
            for tok in [d.token] + list(getattr(d, "others", [])):
                st, o = d.call("io.pocketenv.actor.getActorSandboxes",
                               {"did": "owner.local", "limit": 100}, token=tok)
                for sb in (o or {}).get("sandboxes", []):
                    d.sandbox("deleteSandbox", sb["id"], token=tok)
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(timeout=30)
        log.close()
        assert rc == 0, d.log_text()[-5000:]
    if check_leaks:
        wait_for(lambda: not set(sandbox_processes(data)) - before_procs, 10,
                 "sandbox processes to exit")
        assert cgroups_left(data, before_cgroups) == set()
        # Snapshots outlive their sandboxes by design; the test's user removes
        # them (they are on the host-wide layers filesystem, not in tmp), and
        # then no layer of this data directory may be left.
        for layer in layers_of(data):
            with open(os.path.join(LAYERS_DIR, layer, "owner")) as f:
                owner = f.read().split("\n")
            if owner[1:2] == ["snapshot"]:
                subprocess.run([BIN, "--data", data, "runtime", "snapshot-rm", owner[2]],
                               capture_output=True, text=True, check=True, env=env)
        assert layers_of(data) == []
        ls = subprocess.run([BIN, "--data", data, "runtime", "ls", "--json"],
                            capture_output=True, text=True, check=True, env=env)
        assert json.loads(ls.stdout) == []
        assert [f for f in boot_files if os.path.exists(f)] == []


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("daemon")) as d:
        yield d


def test_token_file_is_private_and_works(daemon):
    st = os.stat(daemon.token_file)
    assert stat.S_IMODE(st.st_mode) == 0o600
    status, prof = daemon.call("io.pocketenv.actor.getProfile")
    assert status == 200, prof
    assert prof["did"].startswith("did:key:z6Mk")
    assert prof["handle"] == "owner.local"
    # Asking for oneself by handle or DID is the same profile.
    assert daemon.call("io.pocketenv.actor.getProfile", {"did": prof["did"]})[1] == prof


def test_lifecycle(daemon):
    status, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                             body={"base": "busybox", "name": "life"})
    assert status == 200, sb
    assert re.fullmatch(r"sbx_[0-9A-Za-z]{22}", sb["id"])
    assert sb["name"] == "life" and sb["status"] in ("INITIALIZING", "RUNNING")
    got = daemon.wait_status(sb["id"], ["RUNNING", "FAILED"])
    assert got["status"] == "RUNNING", got
    assert got["startedAt"]

    status, out = daemon.sandbox("exec", "life", {"command": "echo hi"})
    assert status == 200 and out == {"stdout": "hi\n", "stderr": "", "exitCode": 0}, out
    status, out = daemon.sandbox("exec", sb["id"], {"command": "echo oops >&2; exit 3"})
    assert out == {"stdout": "", "stderr": "oops\n", "exitCode": 3}

    status, out = daemon.sandbox("stopSandbox", "life")
    assert status == 200, out
    assert daemon.sandbox("getSandbox", "life")[1]["sandbox"]["status"] == "STOPPED"
    status, out = daemon.sandbox("exec", "life", {"command": "echo hi"})
    assert status == 400 and out["error"] == "InvalidRequest"

    assert daemon.sandbox("startSandbox", "life", {})[0] == 200
    assert daemon.sandbox("getSandbox", "life")[1]["sandbox"]["status"] == "RUNNING"
    assert daemon.sandbox("exec", "life", {"command": "echo again"})[1]["stdout"] == "again\n"

    status, out = daemon.sandbox("deleteSandbox", "life")
    assert status == 200, out
    status, out = daemon.sandbox("getSandbox", sb["id"])
    assert status == 404 and out["error"] == "SandboxNotFound"


def test_exec_output_is_capped(daemon):
    status, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                             body={"base": "busybox", "name": "chatty"})
    assert status == 200
    daemon.wait_status("chatty", ["RUNNING"])
    status, out = daemon.sandbox("exec", "chatty",
                                 {"command": "yes abcdefghi | head -c 3000000; echo done >&2"})
    assert status == 200, out
    assert out["stdout"].endswith("\n[output truncated]\n")
    assert len(out["stdout"]) == 1024 * 1024 + len("\n[output truncated]\n")
    assert out["truncated"] is True  # and says so (our extension)
    assert out["stderr"] == "done\n" and out["exitCode"] == 0
    # Bytes that are not UTF-8 still make valid JSON.
    status, out = daemon.sandbox("exec", "chatty", {"command": "printf 'a\\377b'"})
    assert status == 200 and out["stdout"] == "a\ufffdb"
    assert "truncated" not in out
    assert daemon.sandbox("deleteSandbox", "chatty")[0] == 200


def test_names(daemon):
    base = broken_image(daemon.data)
    status, a = daemon.call("io.pocketenv.sandbox.createSandbox", body={"base": base})
    assert status == 200
    assert re.fullmatch(r"[a-z]+-[a-z]+-[0-9a-z]{4}", a["name"]), a["name"]
    # An image that cannot run is a FAILED sandbox with the reason, not a stuck one.
    got = daemon.wait_status(a["id"], ["FAILED"])
    assert base in got["statusReason"]
    status, b = daemon.call("io.pocketenv.sandbox.createSandbox",
                            body={"base": base, "name": a["name"]})
    assert status == 409 and b["error"] == "AlreadyExists"
    for bad in ["Upper", "has space", "-dash", "x" * 51, "sbx_abc"]:
        status, b = daemon.call("io.pocketenv.sandbox.createSandbox",
                                body={"base": "busybox", "name": bad})
        assert status == 400 and b["error"] == "InvalidRequest", bad
    for bad in ["/", "../images/busybox", "/tmp"]:
        status, b = daemon.call("io.pocketenv.sandbox.createSandbox", body={"base": bad})
        assert status == 400, bad
    assert daemon.sandbox("deleteSandbox", a["id"])[0] == 200


def test_actor_sandboxes_paging(daemon):
    did = "did:key:zPagingUser"
    tok = daemon.token_for(did)
    base = broken_image(daemon.data)
    ids = []
    for i in range(5):
        status, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                                 body={"base": base, "name": f"page{i}"}, token=tok)
        assert status == 200, sb
        ids.append(sb["id"])
    seen = []
    for offset in (0, 2, 4):
        status, page = daemon.call("io.pocketenv.actor.getActorSandboxes",
                                   {"did": did, "limit": 2, "offset": offset}, token=tok)
        assert status == 200 and page["total"] == 5
        assert len(page["sandboxes"]) == (2 if offset < 4 else 1)
        seen += page["sandboxes"]
    # Each exactly once, newest first (creates within one millisecond tie on
    # the timestamp and are then ordered by id, which is stable across pages).
    assert sorted(s["id"] for s in seen) == sorted(ids)
    created = [s["createdAt"] for s in seen]
    assert created == sorted(created, reverse=True)
    for i in ids:
        daemon.wait_status(i, ["FAILED"], token=tok)
    status, page = daemon.call("io.pocketenv.actor.getActorSandboxes",
                               {"did": did, "isRunning": "true"}, token=tok)
    assert page == {"sandboxes": [], "total": 0}
    for i in ids:
        assert daemon.sandbox("deleteSandbox", i, token=tok)[0] == 200
    status, page = daemon.call("io.pocketenv.actor.getActorSandboxes", {"did": did}, token=tok)
    assert page["total"] == 0


def mcp_post(d, body, token):
    """POST one JSON-RPC message to /mcp: (status, parsed answer)."""
    h = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(d.url + "/mcp", data=json.dumps(body).encode(), headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_authz_matrix(daemon):
    status, mine = daemon.call("io.pocketenv.sandbox.createSandbox",
                               body={"base": "busybox", "name": "private"})
    assert status == 200
    daemon.wait_status("private", ["RUNNING"])
    owner = daemon.call("io.pocketenv.actor.getProfile")[1]["did"]
    now = int(time.time())
    other = daemon.token_for("did:key:zSomeoneElse")
    expired = daemon.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now - 7200,
                          "exp": now - 3600})
    forged = daemon.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now,
                         "exp": now + 600}, key=os.urandom(32))
    terminal = daemon.call("io.pocketenv.actor.getTerminalToken")[1]["token"]
    bad = {None: (401, "AuthenticationRequired"), expired: (401, "ExpiredToken"),
           forged: (401, "InvalidToken"), "not-a-jwt": (401, "InvalidToken"),
           terminal: (401, "InvalidToken")}  # terminal tokens open terminals, nothing else
    answers = []
    st, exposed = daemon.call("io.pocketenv.sandbox.exposePort", {"id": "private"},
                              {"port": 8080})
    assert st == 200, exposed
    preview = {"url": exposed["previewUrl"]}

    def check(status, out, want):
        answers.append(json.dumps(out))
        assert (status, (out or {}).get("error")) == want, out

    for tok, want in bad.items():
        check(*daemon.call("io.pocketenv.actor.getProfile", token=tok), want)
        check(*daemon.call("io.pocketenv.actor.getActorSandboxes", {"did": owner}, token=tok),
              want)
        check(*daemon.call("io.pocketenv.sandbox.createSandbox", body={"base": "busybox"},
                           token=tok), want)
        check(*daemon.call("io.pocketenv.sandbox.getSandboxes", token=tok), want)
        check(*daemon.call("io.pocketenv.actor.getTerminalToken", token=tok), want)
        check(*daemon.call("io.pocketenv.port.createPreviewLink", body=preview, token=tok), want)
        check(*daemon.call("io.pocketenv.node.listNodes", token=tok), want)
        check(*daemon.call("io.pocketenv.node.drainNode", body={"name": "x"}, token=tok), want)
        for m in SANDBOX_METHODS:
            for ident in (mine["id"], "private"):
                check(*daemon.sandbox(m, ident, token=tok), want)
        # The E2B API (docs/e2b.md): its key header, its error shape.
        for st in e2b_statuses(daemon, mine["id"], tok):
            assert st == 401

    # The MCP endpoint (issue 17) takes the same tokens and no other.
    for tok in bad:
        st, out = mcp_post(daemon, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                    "params": {"protocolVersion": "2025-06-18"}}, tok)
        answers.append(json.dumps(out))
        assert st == 401 and out["error"]["code"] == -32001, (tok, out)
    st, out = mcp_post(daemon, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                "params": {"protocolVersion": "2025-06-18"}}, daemon.token)
    assert st == 200

    # Nodes (docs/cluster.md) are the daemon owner's; a node credential
    # means nothing to a daemon without a cluster key (SQLite: one node).
    check(*daemon.call("io.pocketenv.node.listNodes", token=other), (403, "Forbidden"))
    check(*daemon.call("io.pocketenv.node.drainNode", body={"name": "x"}, token=other),
          (403, "Forbidden"))
    bodies = {"exec": {"command": "id"}, "startSandbox": {},
              "putNetworkPolicy": {"policy": {"mode": "none"}},
              "putIdlePolicy": {"action": "pause", "timeout": 3600},
              "restoreSnapshot": {"snapshot": "nosuch"}}
    for m in SANDBOX_METHODS:
        st, out = daemon.call(f"io.pocketenv.sandbox.{m}", {"id": mine["id"]}, bodies.get(m),
                              token=None, post=m not in GET_METHODS,
                              headers={"Authorization": "PocketenvNode v1.a.b.1.2.3.4.5"})
        check(st, out, (401, "InvalidNodeCredential"))
    # ... nor to the E2B API's routes (control plane, create and envd)
    node = {"Authorization": "PocketenvNode v1.a.b.1.2.3.4.5"}
    assert set(e2b_statuses(daemon, mine["id"], None, node)) == {401}
    req = urllib.request.Request(daemon.url + "/sandboxes", data=b'{"templateID": "busybox"}',
                                 method="POST",
                                 headers={**node, "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=30)
        raise AssertionError("a made-up node credential created a sandbox")
    except urllib.error.HTTPError as e:
        assert e.code == 401 and json.loads(e.read())["error"] == "InvalidNodeCredential"
    # Another user: the owner's sandbox does not exist for them.
    check(*daemon.call("io.pocketenv.port.createPreviewLink", body=preview, token=other),
          (404, "PortNotFound"))
    for m in SANDBOX_METHODS:
        for ident in (mine["id"], "private"):
            check(*daemon.sandbox(m, ident, token=other), (404, "SandboxNotFound"))
    assert set(e2b_statuses(daemon, mine["id"], other)) == {404}
    status, out = daemon.call("io.pocketenv.actor.getActorSandboxes", {"did": owner},
                              token=other)
    assert (status, out) == (200, {"sandboxes": [], "total": 0})
    st, h = None, None
    req = urllib.request.Request(daemon.url + "/mcp", data=json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18"}}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {other}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        sid = r.headers["Mcp-Session-Id"]
    for ident in (mine["id"], "private"):
        req = urllib.request.Request(daemon.url + "/mcp", data=json.dumps(
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
             "params": {"name": "exec", "arguments": {"sandbox": ident, "command": "id"}}}).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     "Authorization": f"Bearer {other}", "Mcp-Session-Id": sid})
        with urllib.request.urlopen(req, timeout=30) as r:
            res = json.loads(r.read())["result"]
        answers.append(json.dumps(res))
        assert res["isError"] and "HTTP 404" in res["content"][0]["text"], res
    status, out = daemon.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local"},
                              token=other)
    assert (status, out) == (200, {"sandboxes": [], "total": 0})
    status, out = daemon.call("io.pocketenv.actor.getProfile", {"did": owner}, token=other)
    assert status == 404
    answers.append(json.dumps(out))
    # Their own sandbox of the same name is theirs alone.
    status, theirs = daemon.call("io.pocketenv.sandbox.createSandbox",
                                 body={"base": broken_image(daemon.data), "name": "private"},
                                 token=other)
    assert status == 200 and theirs["id"] != mine["id"]
    assert daemon.sandbox("deleteSandbox", "private", token=other)[0] == 200

    # Zero leaks: no answer names the sandbox or the owner, and it is untouched.
    for a in answers:
        assert mine["id"] not in a and owner not in a, a
    got = daemon.sandbox("getSandbox", "private")[1]["sandbox"]
    assert got["id"] == mine["id"] and got["status"] == "RUNNING"
    assert daemon.sandbox("exec", "private", {"command": "echo still"})[1]["stdout"] == "still\n"
    assert daemon.sandbox("deleteSandbox", "private")[0] == 200


def e2b_statuses(daemon, sandbox_id, token, extra=None):
    """Statuses of the E2B API's sandbox routes for token (None: no key),
    with the extra headers."""
    out = []
    key = {"X-API-Key": token, **(extra or {})} if token else dict(extra or {})
    envd = {"E2b-Sandbox-Id": sandbox_id, "Content-Type": "application/json",
            **({"X-Access-Token": token} if token else {}), **(extra or {})}
    for method, path, headers, body in (
            ("GET", f"/sandboxes/{sandbox_id}", key, None),
            ("DELETE", f"/sandboxes/{sandbox_id}", key, None),
            ("POST", f"/sandboxes/{sandbox_id}/pause", key, b"{}"),
            ("POST", "/filesystem.Filesystem/ListDir", envd, b'{"path": "/"}'),
            ("POST", "/process.Process/List", envd, b"{}"),
            ("GET", "/files?path=/etc/hostname", envd, None)):
        req = urllib.request.Request(daemon.url + path, data=body, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                out.append(r.status)
        except urllib.error.HTTPError as e:
            out.append(e.code)
    return out


def test_bad_bodies(daemon):
    nsid = "io.pocketenv.sandbox.createSandbox"
    status, out = daemon.call(nsid, raw=b'{"base": "busybox",')
    assert status == 400 and out["error"] == "InvalidRequest"
    status, out = daemon.call(nsid, body={"name": "nobase"})
    assert status == 400 and out["error"] == "InvalidRequest"
    status, out = daemon.call(nsid, raw=json.dumps({"base": "x" * 200000}).encode())
    assert status == 413
    assert daemon.healthy()
    assert daemon.call("io.pocketenv.actor.getProfile")[0] == 200


def jwt_claims(token):
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_terminal_token_is_short_lived_and_mine(daemon):
    status, out = daemon.call("io.pocketenv.actor.getTerminalToken")
    assert status == 200, out
    claims = jwt_claims(out["token"])
    owner = daemon.call("io.pocketenv.actor.getProfile")[1]["did"]
    assert claims["sub"] == owner and claims["scope"] == "terminal"
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert daemon.call("io.pocketenv.actor.getTerminalToken", token=None)[0] == 401


def test_public_key_is_published(daemon):
    status, out = daemon.call("io.pocketenv.server.getPublicKey", token=None)
    assert status == 200 and re.fullmatch(r"[0-9a-f]{64}", out["publicKey"]), out
    with urllib.request.urlopen(daemon.url + "/", timeout=5) as r:
        assert out["publicKey"] in r.read().decode()


def test_template_catalog(daemon):
    status, out = daemon.call("io.pocketenv.sandbox.getSandboxes")
    assert status == 200, out
    names = [t["name"] for t in out["sandboxes"]]
    assert names[:2] == ["busybox", "debian"] and out["total"] == len(names)
    busybox = out["sandboxes"][0]
    assert busybox["id"] == "busybox" and busybox["createdAt"]  # built by the fixture
    status, page = daemon.call("io.pocketenv.sandbox.getSandboxes", {"limit": 1, "offset": 1})
    assert [t["name"] for t in page["sandboxes"]] == ["debian"] and page["total"] == out["total"]
    assert daemon.call("io.pocketenv.sandbox.getSandboxes", token=None)[0] == 401


def test_sandboxes_get_nat_networking(daemon):
    status, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                             body={"base": "busybox", "name": "networked"})
    assert status == 200
    daemon.wait_status("networked", ["RUNNING"])
    status, out = daemon.sandbox("exec", "networked", {"command": "ip -4 addr show eth0; ip route"})
    assert status == 200 and out["exitCode"] == 0, out
    assert re.search(r"inet 10\.89\.\d+\.\d+/", out["stdout"]), out
    assert "default via 10.89." in out["stdout"], out
    assert daemon.sandbox("deleteSandbox", "networked")[0] == 200


def test_claim_is_not_served_locally(daemon):
    # Every local sandbox has an owner from its creation: nothing to claim.
    status, out = daemon.call("io.pocketenv.sandbox.claimSandbox", {"id": "sbx_x"}, body={})
    assert status == 501 and out["error"] == "MethodNotImplemented", out


FAKE_GIT = """#!/bin/sh
# stands in for git: records its arguments, fails for one URL
echo "$*" >> /tmp/git-args
case "$3" in *broken*) echo "fatal: repository 'x' not found" >&2; exit 128;; esac
mkdir -p "$4"
"""


def test_repo_is_cloned_on_start_without_a_shell(daemon):
    # An image with a stand-in git (no network): what matters is the argv.
    images = os.path.join(daemon.data, "images")
    if not os.path.isdir(os.path.join(images, "gitty")):
        shutil.copytree(os.path.join(images, "busybox"), os.path.join(images, "gitty"),
                        symlinks=True)
        with open(os.path.join(images, "gitty", "rootfs", "usr", "bin", "git"), "w") as f:
            f.write(FAKE_GIT)
        os.chmod(os.path.join(images, "gitty", "rootfs", "usr", "bin", "git"), 0o755)
    status, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                             body={"base": "gitty", "name": "cloned", "repo": "github:octo/hello"})
    assert status == 200, sb

    def reason():
        got = daemon.sandbox("getSandbox", "cloned")[1]["sandbox"]
        return got["status"] == "RUNNING" and got.get("statusReason")
    assert wait_for(reason, 20, "clone outcome").startswith("cloned https://github.com/octo/hello")
    out = daemon.sandbox("exec", "cloned", {"command": "cat /tmp/git-args; ls -d hello"})[1]
    assert out["stdout"] == "clone -- https://github.com/octo/hello hello\nhello\n", out

    # startSandbox's repo, failing: git's complaint shows in statusReason.
    assert daemon.sandbox("stopSandbox", "cloned")[0] == 200
    assert daemon.sandbox("startSandbox", "cloned",
                          {"repo": "https://git.example/team/broken.git"})[0] == 200
    assert "not found" in wait_for(lambda: "not cloned" in (reason() or "") and reason(), 20,
                                   "failed clone reported")

    # Anything git or a shell could misread is refused before anything runs.
    for bad in ["$(touch /pwned)", "--upload-pack=touch /tmp/x", "https://a.example/x y",
                "ext::sh -c touch% /tmp/pwned", "file:///etc/passwd", "github:../etc",
                "https://a.example/..", "-oProxyCommand=x@h:p"]:
        status, out = daemon.call("io.pocketenv.sandbox.createSandbox",
                                  body={"base": "gitty", "repo": bad})
        assert status == 400 and out["error"] == "InvalidRequest", (bad, out)
        status, out = daemon.sandbox("startSandbox", "cloned", {"repo": bad})
        assert status == 400, (bad, out)
    out = daemon.sandbox("exec", "cloned", {"command": "cat /tmp/git-args"})[1]["stdout"]
    # the two clones asked for, and nothing from the refused ones
    assert out == ("clone -- https://github.com/octo/hello hello\n"
                   "clone -- https://git.example/team/broken.git broken\n"), out
    assert daemon.sandbox("deleteSandbox", "cloned")[0] == 200


def test_repo_without_git_in_the_image_is_reported(daemon):
    status, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                             body={"base": "busybox", "name": "nogit", "repo": "github:o/r"})
    assert status == 200

    def reason():
        got = daemon.sandbox("getSandbox", "nogit")[1]["sandbox"]
        return got["status"] == "RUNNING" and got.get("statusReason")
    assert "no git" in wait_for(reason, 20, "clone outcome")
    assert daemon.sandbox("deleteSandbox", "nogit")[0] == 200


def test_connections_are_kept_alive(daemon):
    """One connection serves many requests, errors included (a client such
    as wrk or upstream's SDK otherwise pays a TCP handshake each time)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", int(daemon.url.rsplit(":", 1)[1]), timeout=10)
    auth = {"Authorization": f"Bearer {daemon.token}"}
    asks = [("GET", "/healthz", None, 200),
            ("GET", "/xrpc/io.pocketenv.actor.getProfile", None, 200),
            ("GET", "/xrpc/io.pocketenv.sandbox.getSandbox?id=nosuch", None, 404),
            ("POST", "/xrpc/io.pocketenv.sandbox.updateSandboxSettings", b"{}", 501),
            ("POST", "/xrpc/io.pocketenv.sandbox.getSandbox?id=x", b"{}", 400),
            ("GET", "/metrics", None, 200)]
    sock = None
    for method, path, body, want in asks:
        conn.request(method, path, body=body,
                     headers=dict(auth, **({"Content-Type": "application/json"} if body else {})))
        r = conn.getresponse()
        r.read()
        assert r.status == want, (path, r.status)
        assert (r.getheader("Connection") or "").lower() != "close", path
        sock = sock or conn.sock
        assert conn.sock is sock, f"{path}: the connection was not reused"
    conn.close()


def test_concurrent_creates_with_networking_all_run(daemon):
    """Six creates at once, NAT networking (the default): each start takes
    the host's network lock while other sandboxes are being cloned. A clone
    that inherited that lock once hung every create of the daemon."""
    import threading
    ids, lock = [], threading.Lock()

    def one(i):
        st, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                             body={"base": "busybox", "name": f"rush-{i}"})
        assert st == 200, sb
        with lock:
            ids.append(sb["id"])
    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(ids) == 6
    for ident in ids:
        assert daemon.wait_status(ident, ["RUNNING", "FAILED"], timeout=30)["status"] == "RUNNING"
    for ident in ids:
        assert daemon.sandbox("deleteSandbox", ident)[0] == 200


def zombie_children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == pid:
                out.append(int(d))
    return out


def test_exec_leaves_no_zombie_and_answers_the_commands_exit(tmp_path):
    """An exec's command is the daemon's own child (no waiter between
    them): the daemon reaps it before it answers, so no zombie is left even
    for a moment, and the exit code is the command's, death by a signal
    included."""
    with serving(tmp_path) as d:
        status, out = d.call("io.pocketenv.sandbox.createSandbox",
                             body={"base": "busybox", "name": "reaped"})
        assert status == 200, out
        sid = d.wait_status("reaped", ["RUNNING"])["id"]
        for i in range(30):
            st, out = d.sandbox("exec", sid, {"command": f"exit {i % 7}"})
            assert (st, out["exitCode"]) == (200, i % 7), out
            assert zombie_children(d.proc.pid) == []
        st, out = d.sandbox("exec", sid, {"command": "kill -9 $$"})
        assert (st, out["exitCode"]) == (200, 137), out  # death by a signal
        assert zombie_children(d.proc.pid) == []


def test_revoked_tokens_are_refused_everywhere_and_new_ones_work(tmp_path):
    """`pocketenv token revoke` ends every token of one user issued until
    then (a leaked token), on the API, in the CLI and for terminal tokens
    minted from it; other users are untouched; a token created afterwards
    works at once; the revocation is in the store, so a restarted daemon
    keeps it and its fresh owner token works."""
    alice, bob = "did:key:zRevokedAlice", "did:key:zRevokedBob"
    tt = "io.pocketenv.actor.getTerminalToken"
    with serving(tmp_path, extra=("--tick", "0.2")) as d:
        a1, b1 = d.token_for(alice), d.token_for(bob)
        sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": "busybox"}, token=a1)[1]
        try:
            st, term = d.call(tt, token=a1)
            assert st == 200 and d.call(tt, token=b1)[0] == 200
            d.wait_status(sb["id"], ["RUNNING"], token=a1)
            tty = f"{d.url}/tty/{sb['id']}/stream?sessionId=r&t={term['token']}"
            assert status_of(tty) == 200
            r = subprocess.run([BIN, "token", "revoke", "--did", alice, "--data", d.data],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0 and "revoked" in r.stderr, r.stderr
            wait_for(lambda: d.call(tt, token=a1)[0] == 401, 10, "the revocation to be read")
            st, err = d.call(tt, token=a1)
            assert err == {"error": "InvalidToken", "message": "token has been revoked"}
            assert status_of(tty) == 401
            env = dict(os.environ, POCKETENV_API_URL=d.url, POCKETENV_TOKEN=a1)
            r = subprocess.run([BIN, "ls"], capture_output=True, text=True, env=env, timeout=30)
            assert r.returncode == 1 and "revoked" in r.stderr, r.stderr
            # bob's token and a new one of alice's work
            assert d.call(tt, token=b1)[0] == 200
            a2 = d.token_for(alice)
            assert d.call(tt, token=a2)[0] == 200
            # the owner revokes its own; a restart gives it a fresh token
            owner = d.call("io.pocketenv.actor.getProfile")[1]["did"]
            old = d.token
            subprocess.run([BIN, "token", "revoke", "--did", owner, "--data", d.data], check=True,
                           capture_output=True, timeout=30)
            wait_for(lambda: d.call(tt, token=old)[0] == 401, 10, "the owner's revocation")
        finally:  # alice's sandbox goes, with a token minted now
            d.sandbox("deleteSandbox", sb["id"], token=d.token_for(alice))
    with serving(tmp_path) as d2:  # same data; no tick needed: read at start
        assert d2.token != old
        assert d2.call(tt, token=old)[0] == 401
        assert d2.call(tt)[0] == 200
        assert d2.call(tt, token=b1)[0] == 200


def status_of(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
