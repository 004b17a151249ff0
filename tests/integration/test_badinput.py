"""Bad input: one clear line on stderr, non-zero exit, nothing left behind;
and malformed HTTP against a real daemon: a clear XRPC error, before any
route runs."""
import json
import os
import socket

import pytest

from conftest import idmap_claims, wait_for
from test_daemon import serving


def leftovers(pe):
    out = []
    for sub in ("sandboxes", "run"):
        d = os.path.join(pe.data, sub)
        if os.path.isdir(d):
            out += os.listdir(d)
    return out + idmap_claims(pe.data)


@pytest.mark.parametrize("args,message", [
    (["--image", "nonexistent-image"], "unknown image"),
    (["--image", "/no/such/dir"], "does not exist"),
    (["--memory", "lots"], "invalid size"),
    (["--memory", "-5m"], "invalid size"),
    (["--memory", "1k"], "at least"),
    (["--cpus", "0"], "invalid CPU"),
    (["--pids", "-1"], "invalid process limit"),
    (["-v", "/no/such/path:/x"], "volume source"),
    (["-v", "relative:/x"], "absolute"),
    (["-v", "/tmp:/x/../../etc"], ".."),
    (["-e", "NOEQUALS"], "KEY=VALUE"),
    (["--user", "root"], "invalid user"),
    (["--bogus"], "unknown option"),
    (["--net", "bridge"], "unknown network mode"),
])
def test_run_rejects(pe, args, message):
    image = [] if "--image" in args else ["--image", pe.image]
    p = pe.run("run", *image, *args, "--", "true")
    assert p.returncode == 125, p.stderr
    assert message in p.stderr
    assert p.stderr.count("\n") == 1, p.stderr
    assert leftovers(pe) == []


def test_run_without_image_or_command(pe):
    # (with an image and no command, the image's shell runs: test_cli_habits.py)
    p = pe.run("run")
    assert p.returncode == 125 and "missing IMAGE or CMD" in p.stderr


@pytest.mark.parametrize("name", ["a/b", "..", "../x", "", ".hidden", "x" * 64, "a b"])
def test_bad_names(pe, name):
    p = pe.run("runtime", "create", name, "--image", pe.image)
    assert p.returncode == 125 and "invalid sandbox name" in p.stderr
    assert leftovers(pe) == []


def test_unknown_sandbox(pe):
    for cmd in (["start", "ghost"], ["stop", "ghost"], ["rm", "ghost"], ["inspect", "ghost"],
                ["exec", "ghost", "--", "true"], ["pause", "ghost"]):
        p = pe.run("runtime", *cmd)
        assert p.returncode == 125, cmd
        assert "no such sandbox: ghost" in p.stderr


def test_duplicate_and_state_errors(pe):
    pe.create("one")
    p = pe.run("runtime", "create", "one", "--image", pe.image)
    assert p.returncode == 125 and "already exists" in p.stderr
    assert pe.run("runtime", "resume", "one").returncode == 125
    pe.start("one")
    p = pe.run("runtime", "start", "one")
    assert p.returncode == 125 and "already running" in p.stderr
    p = pe.run("runtime", "exec", "one")
    assert p.returncode == 125 and "no command" in p.stderr
    assert pe.exec("one", "true").returncode == 0


def test_symlinked_mountpoint_in_image_stays_inside(pe, tmp_path, image_dir):
    """A volume destination that is a symlink pointing out of the image
    resolves inside the sandbox root, never on the host."""
    import shutil
    img = tmp_path / "img"
    shutil.copytree(image_dir, img, symlinks=True)
    target = tmp_path / "host-target"
    target.mkdir()
    os.symlink(str(target), img / "escape")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    p = pe.run("run", "--image", str(img), "-v", f"{src}:/escape", "--", "ls", "/escape")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "f"
    assert os.listdir(target) == []


# ---- malformed HTTP against a real daemon ---------------------------------
#
# Refused before any route or handler runs, with an XRPC error (the same
# cases, and more, replay against the bare server from tests/data/http/).


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("badhttp")) as d:
        yield d


def raw_http(d, request, timeout=15):
    """Send request bytes, read until the daemon closes (or timeout): the
    answers, split."""
    port = int(d.url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(request)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (socket.timeout, ConnectionResetError):
        out += b"<no close>"
    s.close()
    return out


def first_answer(out):
    head, _, body = out.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else 0
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, json.loads(body[:length]) if length else None


H = b"Host: 127.0.0.1\r\n"


@pytest.mark.parametrize("name,request_bytes,status,message", [
    ("space in a header name", b"GET /healthz HTTP/1.1\r\n" + H + b"Bad Name: v\r\n", 400,
     "invalid character in a header name"),
    ("NUL in a header value", b"GET /healthz HTTP/1.1\r\n" + H + b"X-A: a\0hidden\r\n", 400,
     "NUL byte"),
    ("CR in a header value", b"GET /healthz HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n", 400,
     "control character"),
    ("folded header", b"GET /healthz HTTP/1.1\r\n" + H + b"X-A: a\r\n  b\r\n", 400, "obs-fold"),
    ("%00 in a preview path", b"GET /p/x/8080/a%00b HTTP/1.1\r\n" + H, 400, "%00"),
    ("%00 in a query value",
     b"GET /xrpc/io.pocketenv.sandbox.getSandbox?id=sbx%00x HTTP/1.1\r\n" + H, 400, "%00"),
    ("%00 in a network policy's sandbox id",
     b"GET /xrpc/io.pocketenv.sandbox.getNetworkPolicy?id=sbx%00x HTTP/1.1\r\n" + H, 400, "%00"),
    ("%00 in the sandbox id of its network denials",
     b"GET /xrpc/io.pocketenv.sandbox.getNetworkDenials?id=sbx%00x HTTP/1.1\r\n" + H, 400, "%00"),
    ("%00 in a query name",
     b"GET /xrpc/io.pocketenv.sandbox.getSandbox?i%00d=1&id=2 HTTP/1.1\r\n" + H, 400, "%00"),
    ("unknown transfer coding",
     b"POST /cp HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n", 501, "gzip"),
    ("two Content-Lengths",
     b"POST /cp HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n", 400,
     "more than one Content-Length"),
    # The E2B API's routes (docs/e2b.md) sit behind the same checks.
    ("%00 in an E2B file path", b"GET /files?path=/a%00b HTTP/1.1\r\n" + H +
     b"E2b-Sandbox-Id: sbx_x\r\n", 400, "%00"),
    ("two Content-Lengths on a Connect stream",
     b"POST /process.Process/Start HTTP/1.1\r\n" + H +
     b"Content-Length: 5\r\nContent-Length: 6\r\n", 400, "more than one Content-Length"),
    ("NUL in an E2B key", b"GET /v2/sandboxes HTTP/1.1\r\n" + H + b"X-API-Key: e2b_\0ab\r\n",
     400, "NUL byte"),
])
def test_malformed_requests_refused_before_routing(daemon, name, request_bytes, status, message):
    out = raw_http(daemon, request_bytes + b"\r\n")
    got, err = first_answer(out)
    assert got == status, (name, out[:300])
    assert err and err["error"] in ("InvalidRequest", "NotImplemented") and message in err["message"]
    assert out.endswith(b"}"), "the daemon must close after refusing a head"
    assert daemon.healthy()


def test_mcp_malformed_json_rpc_answered_and_survived(daemon):
    """/mcp (issue 17): bodies that are not one JSON-RPC message get a
    JSON-RPC error, never a crash; too big is 413 before it is read."""
    def post(body, extra=b""):
        return first_answer(raw_http(daemon, b"POST /mcp HTTP/1.1\r\n" + H +
                                     b"Connection: close\r\nAuthorization: Bearer " +
                                     daemon.token.encode() + b"\r\nContent-Type: "
                                     b"application/json\r\n" + extra + b"Content-Length: " +
                                     str(len(body)).encode() + b"\r\n\r\n" + body))
    deep = b"[" * 100000 + b"]" * 100000
    batch = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "initialize",
                         "params": {"protocolVersion": "2025-06-18"}}
                        for i in range(5000)]).encode()
    for body, code in ((b"{", -32700), (b"\xff\xfe", -32700), (deep, -32700),
                       (batch, -32600), (b"null", -32600), (b'{"jsonrpc":"2.0","id":1}', -32600),
                       (b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', -32000)):
        st, out = post(body)
        assert st == 400 and out["error"]["code"] == code, (body[:40], out)
    st, out = first_answer(raw_http(daemon, b"POST /mcp HTTP/1.1\r\n" + H +
                                    b"Authorization: Bearer " + daemon.token.encode() +
                                    b"\r\nContent-Type: application/json\r\n"
                                    b"Content-Length: 50000000\r\n\r\n{"))
    assert st == 413
    assert daemon.healthy()


def test_smuggled_request_is_never_answered(daemon):
    """Transfer-Encoding with Content-Length: the GET hidden in what one of
    them calls the body must not be served."""
    hidden = b"GET /xrpc/io.pocketenv.actor.getProfile HTTP/1.1\r\n" + H + \
        b"Authorization: Bearer " + daemon.token.encode() + b"\r\n\r\n"
    out = raw_http(daemon, b"POST /xrpc/io.pocketenv.sandbox.stopSandbox?id=x HTTP/1.1\r\n" + H +
                   b"Transfer-Encoding: chunked\r\nContent-Length: " +
                   str(5 + len(hidden)).encode() + b"\r\n\r\n0\r\n\r\n" + hidden)
    assert first_answer(out)[0] == 400
    assert out.count(b"HTTP/1.1 ") == 1, out
    assert b"did:key" not in out


def test_duplicate_json_keys_and_bad_uris_refused(daemon):
    d = daemon
    st, out = d.call("io.pocketenv.sandbox.createSandbox",
                     raw=b'{"base":"busybox","name":"dup1","name":"dup2"}')
    assert st == 400 and out["error"] == "InvalidRequest", out
    assert "duplicate object key" in out["message"]
    st, out = d.call("io.pocketenv.sandbox.createSandbox",
                     body={"base": "busybox", "readme": "not a uri"})
    assert st == 400 and out["message"] == "Input/readme must be a uri", out
    st, out = d.call("io.pocketenv.actor.getActorSandboxes", {"did": "not an identifier"})
    assert st == 400 and "must be a valid did or a handle" in out["message"], out
    # what clients send passes
    assert d.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local"})[0] == 200
    st, out = d.call("io.pocketenv.actor.getProfile")
    assert d.call("io.pocketenv.actor.getProfile", {"did": out["did"]})[0] == 200
    # nothing was created by the refused bodies
    st, out = d.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local"})
    assert out["sandboxes"] == []


@pytest.mark.parametrize("raw,message", [
    (b'{"policy":{"mode":"none","mode":"open"}}', "duplicate object key"),
    (b'{"policy":[]}', "a policy must be an object"),
    (b'{"policy":{"mode":"allowlist","allowDomains":"example.org"}}', "allowDomains must be"),
    (b'{"policy":{"mode":"allowlist","allowDomains":[1]}}', "allowDomains[0] must be a string"),
    (b'{"policy":{"mode":"allowlist","allowDomains":["a\\u0000b"]}}', "is not allowed"),
    (b'{"policy":{"mode":"allowlist","allowDomains":["' + b"a" * 300 + b'"]}}', "at most 253"),
    (b'{"policy":{"mode":"allowlist","allowCidrs":["10.0.0.0/8/8"]}}', "allowCidrs[0]"),
    (b'{"policy":{"mode":"allowlist","ports":["443"]}}', "ports[0] must be an integer"),
    (b'{"policy":{"mode":"allowlist","ports":[1.5]}}', "ports[0] must be an integer"),
    (b'{"policy":{"mode":"open","denyDomains":[' + b",".join([b'"a.b"'] * 257) + b']}}',
     "at most 256"),
    (b'{"nopolicy":1}', "policy"),
])
def test_bad_network_policies_refused(daemon, raw, message):
    """putNetworkPolicy (issue 20): a bad policy is a 400 saying what is
    wrong, checked before any sandbox is looked up."""
    st, out = daemon.call("io.pocketenv.sandbox.putNetworkPolicy", {"id": "nobox"}, raw=raw)
    assert st == 400 and out["error"] == "InvalidRequest" and message in out["message"], out
    assert daemon.healthy()


@pytest.mark.parametrize("raw,message", [
    (b'{}', "action"),
    (b'{"action":"hibernate"}', "action must be"),
    (b'{"action":["pause"]}', "action"),
    (b'{"action":"pause","timeout":-5}', "timeout"),
    (b'{"action":"pause","timeout":1.5}', "timeout"),
    (b'{"action":"pause","timeout":99999999999}', "timeout"),
    (b'{"action":"pause","timeout":null}', "timeout"),
    (b'[1]', "object"),
])
def test_bad_idle_policies_refused(daemon, raw, message):
    """putIdlePolicy (issue 19): a bad policy is a 400 saying what is
    wrong, checked before any sandbox is looked up."""
    st, out = daemon.call("io.pocketenv.sandbox.putIdlePolicy", {"id": "nobox"}, raw=raw)
    assert st == 400 and out["error"] == "InvalidRequest" and message in out["message"], out
    assert daemon.call("io.pocketenv.sandbox.getIdlePolicy", {"id": "nobox"})[0] == 404
    assert daemon.healthy()


@pytest.mark.parametrize("body,message", [
    (b"--B0undary\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--B0undary--\r\n",
     "without a \\\"file\\\" part"),
    (b"--B0undary\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nno end",
     "malformed multipart"),
])
def test_broken_multipart_uploads_refused(daemon, body, message):
    d = daemon
    out = raw_http(d, b"POST /cp HTTP/1.1\r\n" + H + b"Authorization: Bearer " +
                   d.token.encode() + b"\r\nContent-Type: multipart/form-data; boundary=B0undary\r\n"
                   b"Connection: close\r\nContent-Length: " + str(len(body)).encode() +
                   b"\r\n\r\n" + body)
    st, err = first_answer(out)
    assert st == 400 and err["error"] == "InvalidRequest", out
    assert message.replace("\\\"", "\"") in err["message"]
    wait_for(lambda: os.listdir(os.path.join(d.data, "cp")) == [], 10, "no leftover upload")


# ---- snapshots (issue 19): malformed calls answered, nothing made ----------

SNAP = "io.pocketenv.sandbox."


@pytest.mark.parametrize("method,params,body,status,message", [
    ("createSnapshot", {"id": "sbx_x"}, {}, 400, "name"),
    ("createSnapshot", {"id": "sbx_x"}, {"name": 7}, 400, "name"),
    ("createSnapshot", {}, {"name": "n"}, 400, "id"),
    ("createSnapshot", {"id": "sbx_x"}, {"name": "../up"}, 400, "invalid snapshot name"),
    ("createSnapshot", {"id": "sbx_x"}, {"name": "a/b"}, 400, "invalid snapshot name"),
    ("createSnapshot", {"id": "sbx_x"}, {"name": ".."}, 400, "invalid snapshot name"),
    ("createSnapshot", {"id": "sbx_x"}, {"name": "snp_1"}, 400, "invalid snapshot name"),
    ("createSnapshot", {"id": "sbx_x"}, {"name": "n", "ttl": "1d"}, 400, "ttl"),
    ("createSnapshot", {"id": "sbx_x"}, {"name": "n", "ttl": 0}, 400, "ttl"),
    ("createSnapshot", {"id": "sbx_x"}, {"name": "n", "description": "d" * 1001}, 400,
     "description"),
    ("createSnapshot", {"id": "sbx_nosuch"}, {"name": "n"}, 404, "sandbox not found"),
    ("getSnapshot", {}, None, 400, "id"),
    ("getSnapshot", {"id": "snp_nosuch"}, None, 404, "snapshot not found"),
    ("deleteSnapshot", {}, {}, 400, "id"),
    ("deleteSnapshot", {"id": "../../etc"}, {}, 404, "snapshot not found"),
    ("forkSandbox", {"id": "sbx_x"}, {"count": 0}, 400, "count"),
    ("forkSandbox", {"id": "sbx_x"}, {"count": 101}, 400, "count"),
    ("forkSandbox", {"id": "sbx_x"}, {"count": "10"}, 400, "count"),
    ("forkSandbox", {}, {}, 400, "id"),
    ("forkSandbox", {"id": "sbx_nosuch"}, {"count": 2}, 404, "sandbox not found"),
    ("restoreSnapshot", {"id": "sbx_x"}, {}, 400, "snapshot"),
    ("restoreSnapshot", {"id": "sbx_x"}, {"snapshot": 7}, 400, "snapshot"),
    ("restoreSnapshot", {"id": "sbx_x"}, {"snapshot": ""}, 400, "snapshot"),
    ("restoreSnapshot", {}, {"snapshot": "s"}, 400, "id"),
    ("restoreSnapshot", {"id": "sbx_nosuch"}, {"snapshot": "s"}, 404, "sandbox not found"),
    ("createSandbox", {}, {"base": "snapshot:nosuch"}, 404, "snapshot not found"),
    ("createSandbox", {}, {"base": "snapshot:../etc"}, 400, "base"),
])
def test_malformed_snapshot_calls(daemon, method, params, body, status, message):
    st, out = daemon.call(SNAP + method, params, body, post=body is not None)
    assert st == status and message in out["message"], out
    assert daemon.call(SNAP + "getSnapshots")[1]["snapshots"] == []
    assert daemon.healthy()


@pytest.mark.parametrize("method,body,status,message", [
    ("drainNode", {}, 400, "name"),
    ("drainNode", {"name": ""}, 400, "name"),
    ("drainNode", {"name": "x" * 300}, 400, "name"),
    ("drainNode", {"name": 7}, 400, "name"),
    ("drainNode", {"name": "n", "draining": "yes"}, 400, "draining"),
    ("drainNode", {"name": "nosuch"}, 404, "no such node"),
    ("listNodes", None, 200, None),
])
def test_malformed_node_calls(daemon, method, body, status, message):
    st, out = daemon.call("io.pocketenv.node." + method, None, body, post=body is not None)
    assert st == status, out
    if message:
        assert message in out["message"], out
    else:
        assert out == {"nodes": []}  # SQLite: no node rows, ever
    assert daemon.healthy()
